"""prepare_dataset on the bundled CFPB sample and on small synthetic CFPB-format files."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from ticket_triage.data import DataConfig, load_split, prepare_dataset, read_labelled_file, read_manifest
from ticket_triage.data.prepare import split_bounds
from ticket_triage.errors import DataError, TaxonomyError
from ticket_triage.taxonomy import load_taxonomy

CFPB_COLUMNS = ["Date received", "Product", "Sub-product", "Company", "Consumer complaint narrative", "Complaint ID"]
PRODUCTS = {  # raw product string -> cfpb-6 category
    "Debt collection": "Debt Collection",
    "Mortgage": "Mortgage",
    "Credit card": "Card Services",
    "Student loan": "Loans",
    "Checking or savings account": "Banking Services",
    "Credit reporting, credit repair services, or other personal consumer reports": "Credit Reporting",
}


def cfpb_frame(rows: list[tuple[str, str | None]], start_id: int = 1000) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "Date received": ["2020-01-02"] * len(rows),
            "Product": [p for p, _ in rows],
            "Sub-product": [""] * len(rows),
            "Company": ["ACME BANK"] * len(rows),
            "Consumer complaint narrative": [t for _, t in rows],
            "Complaint ID": [str(start_id + i) for i in range(len(rows))],
        },
        columns=CFPB_COLUMNS,
    )


def synthetic_rows(per_product: dict[str, int]) -> list[tuple[str, str]]:
    rows = []
    for p, n in per_product.items():
        for i in range(n):
            rows.append((p, f"complaint {i} about my {p.lower()} was handled badly by the company number {i * 7}"))
    return rows


@pytest.fixture(scope="module")
def bundled_prepared(tmp_path_factory, bundled_csv) -> Path:
    out = tmp_path_factory.mktemp("prep")
    prepare_dataset(DataConfig(input=bundled_csv, out_dir=out, seed=7))
    return out


def bundled_prepared_input_name(m):
    return m["input"]["name"]


def test_taxonomy_covers_every_bundled_product(bundled_csv):
    tax = load_taxonomy("cfpb-6")
    products = pd.read_csv(bundled_csv, usecols=["Product"])["Product"].unique()
    missing = [p for p in products if tax.category_of(p) is None]
    assert missing == []
    counts = pd.read_csv(bundled_csv, usecols=["Product"])["Product"].map(tax.category_of).value_counts().to_dict()
    assert counts == {
        "Loans": 2615,
        "Credit Reporting": 1459,
        "Debt Collection": 887,
        "Mortgage": 300,
        "Card Services": 265,
        "Banking Services": 105,
    }


def test_bundled_outputs_follow_the_contract(bundled_prepared):
    m = read_manifest(bundled_prepared)
    assert m["labels"] == list(load_taxonomy("cfpb-6").categories)
    assert m["counts"]["rows_read"] == 5631
    assert m["unknown_products"] == {}
    for name in (
        "train.parquet",
        "val.parquet",
        "test.parquet",
        "manifest.json",
        "taxonomy.yaml",
        "class_distribution.png",
    ):
        assert (bundled_prepared / name).is_file(), name
    assert (bundled_prepared / "class_distribution.png").read_bytes()[:4] == b"\x89PNG"
    total = 0
    for split in ("train", "val", "test"):
        df = load_split(bundled_prepared, split)
        assert list(df.columns) == ["text", "label", "complaint_id", "product", "date_received", "source"]
        assert set(df["source"]) == {bundled_prepared_input_name(m)}
        assert set(df["label"]) <= set(m["labels"])
        assert df["text"].map(lambda t: isinstance(t, str) and len(t.split()) >= 5).all()
        assert df["complaint_id"].dropna().str.fullmatch(r"\d+").all()  # IDs stay strings, not floats
        assert df["label"].value_counts().to_dict() == {k: v for k, v in m["counts"]["per_split"][split].items() if v}
        total += len(df)
    # 13 bundled narratives have fewer than 5 words; nothing else is dropped
    assert m["dropped"]["too_short"] == 13
    assert (
        total
        == m["counts"]["kept"]
        == 5631
        - 13
        - sum(
            m["dropped"][r]
            for r in ("duplicate", "conflicting_label", "near_duplicate", "near_duplicate_conflicting_label")
        )
    )
    assert (
        m["near_duplicates"]["threshold"] == 0.7
        and m["near_duplicates"]["texts_compared"]
        == 5631 - 13 - m["dropped"]["duplicate"] - m["dropped"]["conflicting_label"]
    )
    assert m["inputs"][0]["rows_read"] == 5631 and m["inputs"][0]["dropped"] == m["dropped"]
    assert load_taxonomy(bundled_prepared / "taxonomy.yaml").categories == tuple(m["labels"])
    assert m["input"]["sha256"] and len(m["input"]["sha256"]) == 64
    assert DataConfig.from_dict(m["config"]).seed == 7


def test_stratified_within_one_row_and_no_text_in_two_splits(bundled_prepared):
    m = read_manifest(bundled_prepared)
    frames = {s: load_split(bundled_prepared, s) for s in ("train", "val", "test")}
    per_cat = pd.concat(frames.values())["label"].value_counts()
    for split, frac in zip(("train", "val", "test"), (0.8, 0.1, 0.1)):
        counts = frames[split]["label"].value_counts()
        for cat, n in per_cat.items():
            assert abs(counts.get(cat, 0) - n * frac) <= 1, (split, cat, counts.get(cat, 0), n * frac)
    norm = {s: set(f["text"].str.lower().str.split().str.join(" ")) for s, f in frames.items()}
    assert not norm["train"] & norm["val"] and not norm["train"] & norm["test"] and not norm["val"] & norm["test"]
    assert sum(len(f) for f in frames.values()) == len(set().union(*norm.values()))
    assert m["counts"]["splits"] == {s: len(f) for s, f in frames.items()}


def test_split_bounds_rounding():
    for n in range(0, 60):
        m, b1, b2 = split_bounds(n, 1.0, (0.8, 0.1, 0.1))
        assert m == n
        assert abs(b1 - 0.8 * n) <= 1 and abs(b2 - b1 - 0.1 * n) <= 1 and abs(m - b2 - 0.1 * n) <= 1


def test_same_seed_same_splits_other_seed_different(tmp_path, bundled_csv, bundled_prepared):
    again = prepare_dataset(DataConfig(input=bundled_csv, out_dir=tmp_path / "a", seed=7)).out_dir
    other = prepare_dataset(DataConfig(input=bundled_csv, out_dir=tmp_path / "b", seed=8)).out_dir
    for split in ("train", "val", "test"):
        pd.testing.assert_frame_equal(load_split(bundled_prepared, split), load_split(again, split))
    assert set(load_split(bundled_prepared, "test")["text"]) != set(load_split(other, "test")["text"])

    # the other seed still keeps the same rows overall
    def all_texts(d):
        return set(pd.concat([load_split(d, s) for s in ("train", "val", "test")])["text"])

    assert all_texts(other) == all_texts(bundled_prepared)


def test_dedup_and_conflicting_labels(tmp_path):
    rows = synthetic_rows({"Debt collection": 30, "Mortgage": 30})
    rows += [
        ("Debt collection", rows[0][1]),
        ("Debt collection", "  " + rows[1][1].upper() + "  "),
    ]  # 2 duplicates (case/space)
    conflict = "the bank charged me twice for the same thing and would not fix it"
    rows += [
        ("Mortgage", conflict),
        ("Credit card", conflict),
        ("Credit card", conflict.upper()),
    ]  # 3 conflicting copies
    path = tmp_path / "c.csv"
    cfpb_frame(rows).to_csv(path, index=False)
    r = prepare_dataset(DataConfig(input=path, out_dir=tmp_path / "out"))
    m = r.manifest
    assert m["dropped"]["duplicate"] == 2
    assert m["dropped"]["conflicting_label"] == 3
    assert m["counts"]["kept"] == 60
    texts = pd.concat([load_split(r.out_dir, s) for s in ("train", "val", "test")])["text"]
    assert conflict not in set(texts.str.lower())
    assert texts.str.lower().duplicated().sum() == 0
    # the first copy in the file is the one kept
    first = load_split(r.out_dir, "train")
    assert not first["text"].str.isupper().any()


def test_unknown_products_reported_and_strict_fails(tmp_path):
    rows = synthetic_rows({"Debt collection": 20, "Mortgage": 20})
    rows += [("Crypto lending", f"my crypto loan number {i} was frozen without notice") for i in range(4)]
    rows += [("Other financial service", f"other service number {i} charged a strange fee") for i in range(3)]
    rows += [("Mortgage", None), ("Debt collection", ""), ("Mortgage", "too short")]
    path = tmp_path / "u.csv"
    cfpb_frame(rows).to_csv(path, index=False)
    m = prepare_dataset(DataConfig(input=path, out_dir=tmp_path / "out")).manifest
    assert m["unknown_products"] == {"Crypto lending": 4}
    assert m["dropped"]["unknown_product"] == 4
    assert m["dropped"]["dropped_product"] == 3 and m["dropped_products"] == {"Other financial service": 3}
    assert m["dropped"]["no_narrative"] == 2
    assert m["dropped"]["too_short"] == 1
    assert m["counts"]["kept"] == 40
    labels = set(pd.concat([load_split(tmp_path / "out", s) for s in ("train", "val", "test")])["label"])
    assert labels == {"Debt Collection", "Mortgage"}
    with pytest.raises(TaxonomyError, match="Crypto lending"):
        prepare_dataset(DataConfig(input=path, out_dir=tmp_path / "strict", strict=True))


def test_min_words_and_sample_frac(tmp_path):
    rows = synthetic_rows({"Debt collection": 100, "Mortgage": 40, "Credit card": 10})
    path = tmp_path / "s.csv"
    cfpb_frame(rows).to_csv(path, index=False)
    m = prepare_dataset(DataConfig(input=path, out_dir=tmp_path / "half", sample_frac=0.5)).manifest
    per_cat = {c: sum(v.values()) for c, v in m["counts"]["per_category"].items()}
    assert per_cat["Debt Collection"] == 50 and per_cat["Mortgage"] == 20 and per_cat["Card Services"] == 5
    assert m["dropped"]["not_sampled"] == 75
    m = prepare_dataset(DataConfig(input=path, out_dir=tmp_path / "long", min_words=14)).manifest
    # texts are 13 words + the product's words: "credit card" and "debt collection" pass, "mortgage" does not
    assert m["dropped"]["too_short"] == 40
    assert m["counts"]["per_category"]["Mortgage"] == {"train": 0, "val": 0, "test": 0}


def test_cleaning_steps(tmp_path):
    text = "On XX/XX/XXXX I paid {$480.00} to XXXX, and they did NOT refund it to me at all!"
    rows = [("Debt collection", text)] + synthetic_rows({"Mortgage": 9})
    path = tmp_path / "clean.csv"
    cfpb_frame(rows).to_csv(path, index=False)

    def model_input(*steps):
        out = tmp_path / ("o-" + "-".join(steps))
        prepare_dataset(DataConfig(input=path, out_dir=out, clean=steps, min_words=1))
        df = pd.concat([load_split(out, s) for s in ("train", "val", "test")])
        return df.loc[df["label"] == "Debt Collection", "text"].iloc[0]

    assert model_input() == text
    assert model_input("redactions") == "On I paid {$480.00} to , and they did NOT refund it to me at all!"
    assert model_input("amounts") == "On XX/XX/XXXX I paid <amount> to XXXX, and they did NOT refund it to me at all!"
    assert model_input("lowercase") == text.lower()
    assert model_input("strip-punct") == "On XX XX XXXX I paid 480 00 to XXXX and they did NOT refund it to me at all"
    assert model_input("stopwords") == "XX/XX/XXXX paid {$480.00} XXXX, did refund !"
    assert model_input("redactions", "amounts", "strip-punct", "lowercase", "stopwords") == "paid <amount> did refund"


def test_read_labelled_file_counts_unknown(tmp_path, bundled_csv):
    df, report = read_labelled_file(bundled_csv, "cfpb-6")
    assert list(df.columns) == ["text", "label", "date_received"] and len(df) == 5631
    assert df["label"].value_counts()["Banking Services"] == 105
    rows = synthetic_rows({"Mortgage": 3}) + [("Crypto lending", "my crypto loan was frozen without any notice")]
    path = tmp_path / "e.csv"
    cfpb_frame(rows).to_csv(path, index=False)
    df, report = read_labelled_file(path, load_taxonomy("cfpb-6"))
    assert len(df) == 3 and report["unknown_products"] == {"Crypto lending": 1}


def test_read_labelled_file_on_a_prepared_split(bundled_prepared):
    from ticket_triage.taxonomy import Taxonomy

    labels_only = Taxonomy(name="model-labels", categories=tuple(read_manifest(bundled_prepared)["labels"]))
    df, report = read_labelled_file(bundled_prepared / "test.parquet", labels_only)
    expected = load_split(bundled_prepared, "test")
    assert report["columns"]["product"] == "label" and report["unknown_products"] == {}
    assert df["label"].tolist() == expected["label"].tolist()
    assert df["text"].tolist() == expected["text"].str.strip().tolist()


def test_load_split_and_manifest_errors(tmp_path):
    with pytest.raises(DataError, match="manifest.json"):
        read_manifest(tmp_path)
    with pytest.raises(DataError, match="train.parquet"):
        load_split(tmp_path, "train")
    with pytest.raises(DataError, match="unknown split"):
        load_split(tmp_path, "dev")


def test_manifest_is_json_and_complete(bundled_prepared):
    m = json.loads((bundled_prepared / "manifest.json").read_text())
    for key in (
        "input",
        "taxonomy",
        "config",
        "labels",
        "counts",
        "dropped",
        "unknown_products",
        "broken_rows",
        "undecodable_chars_replaced",
    ):
        assert key in m
    assert set(m["dropped"]) >= {
        "no_narrative",
        "too_short",
        "unknown_product",
        "dropped_product",
        "duplicate",
        "conflicting_label",
    }


def test_heap_limit_holds_only_while_prepare_streams(tmp_path, bundled_csv, monkeypatch):
    """The 1 MiB mmap threshold keeps prepare's RSS flat but slows model work 1.5x: it must be
    put back when prepare ends (and never be set by merely reading a CSV for scoring)."""
    from ticket_triage.data import reading

    calls = []

    class FakeLibc:
        def mallopt(self, param, value):
            calls.append((param, value))
            return 1

    monkeypatch.setattr(reading, "_libc", lambda: FakeLibc())
    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"):
        monkeypatch.delenv(name, raising=False)
    read_labelled_file(bundled_csv, "cfpb-6", max_rows=50)
    assert calls == []
    prepare_dataset(DataConfig(input=bundled_csv, out_dir=tmp_path / "p", near_duplicates="off"))
    assert calls == [(-3, 1 << 20), (-3, 32 << 20), (-1, 64 << 20)]
    calls.clear()
    with reading.bounded_heap(), reading.bounded_heap():  # nested: only the outermost sets and restores
        assert calls == [(-3, 1 << 20)]
    assert calls == [(-3, 1 << 20), (-3, 32 << 20), (-1, 64 << 20)] and reading._heap_scopes == 0


@pytest.mark.parametrize(
    "env, expected",
    [
        # the user's fixed thresholds are what the exit puts back
        (
            {"MALLOC_MMAP_THRESHOLD_": str(4 << 20), "MALLOC_TRIM_THRESHOLD_": str(8 << 20)},
            [(-3, 1 << 20), (-3, 4 << 20), (-1, 8 << 20)],
        ),
        (
            {"GLIBC_TUNABLES": f"glibc.malloc.check=0:glibc.malloc.mmap_threshold={16 << 20}"},
            [(-3, 1 << 20), (-3, 16 << 20), (-1, 128 << 10)],
        ),
        # already at or below 1 MiB (or only the trim threshold set, which leaves glibc's 128 KiB): left alone
        ({"MALLOC_MMAP_THRESHOLD_": str(256 << 10)}, []),
        ({"MALLOC_TRIM_THRESHOLD_": str(1 << 30)}, []),
    ],
)
def test_heap_limit_restores_the_users_own_thresholds(monkeypatch, env, expected):
    from ticket_triage.data import reading

    calls = []

    class FakeLibc:
        def mallopt(self, param, value):
            calls.append((param, value))
            return 1

    monkeypatch.setattr(reading, "_libc", lambda: FakeLibc())
    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(RuntimeError):
        with reading.bounded_heap():
            raise RuntimeError("prepare failed")  # restored on the way out of a failure too
    assert calls == expected and reading._heap_scopes == 0


def test_staged_file_streams_in_bounded_memory(tmp_path):
    """Reading the staged file back (near-duplicates, writing the splits) must not keep what it
    has read: pyarrow's pre-buffering held every row group's text to the end of the file, so
    RSS grew with the number of narratives."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ticket_triage.data.prepare import staged_batches

    rng = np.random.default_rng(0)
    group = 4096
    texts = pa.array([bytes(rng.integers(97, 123, 256, dtype=np.uint8)).decode() for _ in range(group * 24)])  # 24 MB
    path = tmp_path / "staged.parquet"
    pq.write_table(
        pa.table({"rid": np.arange(len(texts)), "text": texts}), path, row_group_size=group, compression="zstd"
    )
    before = pa.total_allocated_bytes()
    peak, rows = 0, 0
    for rb in staged_batches(path, ["rid", "text"], batch_size=group):
        rows += rb.num_rows
        peak = max(peak, pa.total_allocated_bytes() - before)
        del rb
    assert rows == len(texts)
    assert peak < 6 * group * 256  # a few row groups' worth, not the whole file's 24


def test_duckdb_refusing_a_setting_is_one_clear_error(tmp_path, bundled_csv, monkeypatch):
    """A setting DuckDB refuses when the connection is set up is a DataError naming the input,
    and the temporary folder goes."""
    import duckdb

    from ticket_triage.data import prepare

    def refuse(plan):
        raise duckdb.InvalidInputException("Invalid Input Error: could not parse memory limit")

    monkeypatch.setattr(prepare, "_connect", refuse)
    (tmp_path / "tmp").mkdir()
    with pytest.raises(DataError, match="cfpb_sample.csv.gz failed in DuckDB: Invalid Input Error"):
        prepare_dataset(DataConfig(input=bundled_csv, out_dir=tmp_path / "out", temp_dir=tmp_path / "tmp"))
    assert not list((tmp_path / "tmp").iterdir()) and not (tmp_path / "out").exists()
