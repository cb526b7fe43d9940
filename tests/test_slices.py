"""Evaluation by slice: per input file (`source`) and per year received."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from ticket_triage.evaluation.report import slice_markdown
from ticket_triage.evaluation.slices import (
    UNKNOWN,
    default_source_name,
    slice_metrics,
    split_slice_columns,
    year_of,
    years_of,
)

LABELS = ["A", "B", "C"]


def test_slice_metrics_on_a_handmade_example():
    y_true = [0, 0, 1, 1, 2, 0, 1, 1]
    y_pred = [0, 1, 1, 1, 2, 0, 0, 1]
    groups = ["x.csv", "x.csv", "x.csv", "x.csv", "x.csv", "y.csv", "y.csv", "y.csv"]
    table = slice_metrics(y_true, y_pred, groups, LABELS)
    assert list(table) == ["x.csv", "y.csv"]
    x, y = table["x.csv"], table["y.csv"]
    assert x["n"] == 5 and y["n"] == 3
    # x: A recall 1/2, B 2/2, C 1/1; F1 A = 2/3 (P 1, R 1/2), B = 0.8 (P 2/3, R 1), C = 1.
    assert x["recall"] == {"A": 0.5, "B": 1.0, "C": 1.0}
    assert x["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 1.0) / 3)
    assert x["accuracy"] == pytest.approx(4 / 5)
    # y has no C row: its recall is None, and macro-F1 averages A and B only (A: P 1/2 R 1, B: P 1 R 1/2).
    assert y["recall"] == {"A": 1.0, "B": 0.5, "C": None}
    assert y["support"] == {"A": 1, "B": 2, "C": 0}
    assert y["macro_f1"] == pytest.approx((2 / 3 + 2 / 3) / 2)
    lines = "\n".join(slice_markdown(table, LABELS, "By input file (source)"))
    assert "| y.csv | 3* | 0.667 | 0.667 | 1.000 | 0.500 | – |" in lines and "fewer than 30 rows" in lines


@pytest.mark.parametrize(
    "value, year",
    [
        ("2021-03-04", "2021"),
        ("03/04/2019", "2019"),
        ("2020-01-05T00:00:00", "2020"),
        ("3/4/21", "2021"),
        (None, UNKNOWN),
        ("", UNKNOWN),
        ("n/a", UNKNOWN),
        (float("nan"), UNKNOWN),
    ],
)
def test_year_of_reads_the_formats_seen(value, year):
    assert year_of(value) == year


def test_unknown_year_sorts_last():
    table = slice_metrics([0, 1, 0], [0, 1, 1], years_of([None, "2022-01-01", "12/31/2015"]), LABELS)
    assert list(table) == ["2015", "2022", UNKNOWN]


def test_old_prepared_split_without_source_or_dates_is_one_source(small_prepared):
    sources, dates = split_slice_columns(small_prepared / "test.parquet", default_source_name(small_prepared))
    assert set(sources) == {small_prepared.resolve().name} and len(sources) == 60
    assert set(years_of(dates)) == {UNKNOWN}


def test_manifest_input_names_the_source(tmp_path):
    (tmp_path / "manifest.json").write_text(
        json.dumps({"input": {"name": "complaints.csv.zip", "path": "/x/complaints.csv.zip"}})
    )
    assert default_source_name(tmp_path) == "complaints.csv.zip"


def test_split_with_source_and_dates(tmp_path):
    path = tmp_path / "test.parquet"
    pd.DataFrame(
        {
            "text": ["a", "b", "c"],
            "label": ["A", "B", "C"],
            "source": ["one.csv", None, "two.json"],
            "date_received": ["2020-01-01", None, "05/06/2023"],
        }
    ).to_parquet(path)
    sources, dates = split_slice_columns(path, "fallback")
    assert sources == ["one.csv", "fallback", "two.json"]
    assert years_of(dates) == ["2020", UNKNOWN, "2023"]
