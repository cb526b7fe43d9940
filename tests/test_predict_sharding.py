"""Sharding for `triage predict --nproc N`: every input row in exactly one share, in input order."""

from __future__ import annotations

import csv
import gzip
import io
import json
import zipfile

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ticket_triage.inference import sharding
from ticket_triage.inference.sharding import iter_share, plan_shares

# Text that makes row boundaries hard to find: quoted newlines (LF and CRLF), doubled quotes,
# commas, and lines that look like the start of a CSV row.
PIECES = ["a", "debt", " ", ",", '"', '""', "\n", "\r\n", '\n1,"x"\n', "é", "\n\n", "id,text"]
texts = st.lists(st.sampled_from(PIECES), max_size=12).map("".join)
rows = st.lists(texts, min_size=0, max_size=40)
PROPERTY = settings(
    max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def write_csv(path, texts, newline="\n"):
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator=newline)
        writer.writerow(["id", "text"])
        for i, text in enumerate(texts):
            writer.writerow([f"r{i}", text])


def ids_in_shares(path, n, tmp_path, chunk_rows=7):
    plan = plan_shares(path, n, stage_dir=tmp_path)
    assert len(plan.shares) == n
    out = []
    for share in plan.shares:
        for frame, _ in iter_share(plan, share, chunk_rows):
            assert len(frame) <= chunk_rows
            out.append(frame)
    frame = pd.concat(out, ignore_index=True) if out else pd.DataFrame({"id": [], "text": []})
    return plan, frame


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    # Blocks of a few bytes: every split and every block boundary lands somewhere awkward.
    monkeypatch.setattr(sharding, "READ_BLOCK", 16)
    monkeypatch.setattr(sharding, "SCAN_BLOCK", 32)


@PROPERTY
@given(texts=rows, n=st.integers(1, 5), crlf=st.booleans())
def test_csv_shares_cover_every_row_once(tmp_path_factory, texts, n, crlf):
    path = tmp_path_factory.mktemp("csv") / "in.csv"
    write_csv(path, texts, "\r\n" if crlf else "\n")
    plan, frame = ids_in_shares(path, n, path.parent)
    assert plan.unit == "bytes" and not plan.staged_because, "clean CSV is split in place"
    assert frame["id"].tolist() == [f"r{i}" for i in range(len(texts))]
    assert frame["text"].tolist() == texts
    bounds = [plan.header_end] + [s.end for s in plan.shares]
    assert [s.start for s in plan.shares] == bounds[:-1], "contiguous shares"


@PROPERTY
@given(texts=rows, n=st.integers(1, 5))
def test_jsonl_shares_cover_every_row_once(tmp_path_factory, texts, n):
    path = tmp_path_factory.mktemp("jsonl") / "in.jsonl"
    pd.DataFrame({"id": [f"r{i}" for i in range(len(texts))], "text": texts}).to_json(
        path, orient="records", lines=True, force_ascii=False
    )
    plan, frame = ids_in_shares(path, n, path.parent)
    assert plan.unit == "bytes"
    assert frame["id"].tolist() == [f"r{i}" for i in range(len(texts))]
    assert [str(t) for t in frame["text"].tolist()] == texts


@PROPERTY
@given(n_rows=st.integers(0, 60), group=st.integers(1, 13), n=st.integers(1, 5))
def test_parquet_shares_cover_every_row_once(tmp_path_factory, n_rows, group, n):
    path = tmp_path_factory.mktemp("pq") / "in.parquet"
    pd.DataFrame({"id": [f"r{i}" for i in range(n_rows)], "text": ["x"] * n_rows}).to_parquet(
        path, row_group_size=group
    )
    plan, frame = ids_in_shares(path, n, path.parent)
    assert plan.unit == "rows" and [s.size for s in plan.shares] == [
        n_rows * (k + 1) // n - n_rows * k // n for k in range(n)
    ]
    assert frame["id"].tolist() == [f"r{i}" for i in range(n_rows)]


def test_a_naive_split_would_start_inside_a_quoted_field(tmp_path):
    """The byte half-way lies inside a quoted field whose next line looks like a row; the
    first newline after it is inside the quotes, so splitting there would cut the row in two."""
    tricky = "first line\n" + 'r99,"fake"\n' * 30 + "last line"
    texts = ["short", tricky, "after"]
    path = tmp_path / "in.csv"
    write_csv(path, texts)
    raw = path.read_bytes()
    middle = len(raw) // 2
    naive = raw.index(b"\n", middle) + 1
    assert raw[:naive].count(b'"') % 2 == 1, "the test file must put the half-way point inside quotes"
    plan, frame = ids_in_shares(path, 2, tmp_path)
    assert frame["text"].tolist() == texts
    assert plan.shares[0].end != naive and raw[: plan.shares[0].end].count(b'"') % 2 == 0


def test_csv_with_a_stray_quote_is_staged_and_read_as_one_process_reads_it(tmp_path):
    from ticket_triage.inference.files import iter_chunks

    path = tmp_path / "in.csv"
    path.write_text(
        'id,text\nr0,he said "hi\nr1,"quoted, with comma"\nr2,plain\n' + "".join(f"r{i},x\n" for i in range(3, 40))
    )
    plan, frame = ids_in_shares(path, 3, tmp_path)
    assert plan.unit == "rows" and "unquoted field" in plan.staged_because
    expected = pd.concat(list(iter_chunks(path)), ignore_index=True)
    assert frame.equals(expected)


@pytest.mark.parametrize("n", [1, 3])
def test_zip_and_gzip_are_staged_to_parquet(tmp_path, n):
    texts = [f'text {i}\nwith a quoted newline, and "quotes"' for i in range(25)]
    buf = io.StringIO()
    csv.writer(buf).writerows([["id", "text"], *[[f"r{i}", t] for i, t in enumerate(texts)]])
    zipped = tmp_path / "complaints.csv.zip"
    with zipfile.ZipFile(zipped, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("complaints.csv", buf.getvalue())
    gz = tmp_path / "in.csv.gz"
    with gzip.open(gz, "wt", newline="") as fh:
        fh.write(buf.getvalue())
    for path, stage in ((zipped, tmp_path / "z"), (gz, tmp_path / "g")):
        stage.mkdir()
        plan, frame = ids_in_shares(path, n, stage)
        assert plan.source == str(stage / "staged.parquet") and plan.unit == "rows"
        assert frame["id"].tolist() == [f"r{i}" for i in range(25)] and frame["text"].tolist() == texts


def test_bad_inputs_are_one_line_errors(tmp_path):
    from ticket_triage.errors import DataError

    with pytest.raises(DataError, match="does not exist"):
        plan_shares(tmp_path / "missing.csv", 2)
    (tmp_path / "x.txt").write_text("a")
    with pytest.raises(DataError, match="unsupported input file type"):
        plan_shares(tmp_path / "x.txt", 2)
    with zipfile.ZipFile(tmp_path / "pics.zip", "w") as z:
        z.writestr("a.bin", b"\x00\x01\x02" * 100)
    with pytest.raises(DataError):
        plan_shares(tmp_path / "pics.zip", 2, stage_dir=tmp_path)


def test_plan_round_trips_through_json(tmp_path):
    path = tmp_path / "in.csv"
    write_csv(path, ["a", "b\nc", "d"])
    plan = plan_shares(path, 3)
    assert sharding.Plan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
