"""Every input format the CFPB distributes (and other exports) reads to the same rows."""

from __future__ import annotations

import gzip
import json
import zipfile

import pandas as pd
import pytest

from ticket_triage.data import DataConfig, load_split, prepare_dataset
from ticket_triage.data.reading import detect_format, open_source

ROWS = (
    [
        ("2021-03-04", "Debt collection", f"a collector called me {i} times about a debt I do not owe", str(5000 + i))
        for i in range(20)
    ]
    + [
        (
            "2021-03-05",
            "Mortgage",
            f"my mortgage servicer lost payment number {i} and charged a late fee",
            str(6000 + i),
        )
        for i in range(20)
    ]
    + [("2021-03-06", "Mortgage", None, "7000")]
)

CSV_NAMES = ["Date received", "Product", "Consumer complaint narrative", "Complaint ID"]
JSON_NAMES = ["date_received", "product", "complaint_what_happened", "complaint_id"]


def frame(names=CSV_NAMES) -> pd.DataFrame:
    return pd.DataFrame(ROWS, columns=names)


def records():
    return [{k: (None if pd.isna(v) else v) for k, v in r.items()} for r in frame(JSON_NAMES).to_dict(orient="records")]


def write(tmp_path, kind):
    csv_text = frame().to_csv(index=False)
    if kind == "csv":
        p = tmp_path / "complaints.csv"
        p.write_text(csv_text)
    elif kind == "csv.gz":
        p = tmp_path / "complaints.csv.gz"
        p.write_bytes(gzip.compress(csv_text.encode()))
    elif kind == "csv.zip":
        p = tmp_path / "complaints.csv.zip"
        with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("complaints.csv", csv_text)
    elif kind == "json":  # the CFPB's JSON export: one array of objects, its own key names
        p = tmp_path / "complaints.json"
        recs = records()
        for r in recs:
            r["complaint_id"] = int(r["complaint_id"])  # a number in the JSON export
            r["sub_product"] = None
        p.write_text(json.dumps(recs, indent=1))
    elif kind == "jsonl":
        p = tmp_path / "complaints.jsonl"
        p.write_text("\n".join(json.dumps(r) for r in records()) + "\n")
    elif kind == "json.gz":
        p = tmp_path / "complaints.json.gz"
        p.write_bytes(gzip.compress(json.dumps(records()).encode()))
    elif kind == "parquet":
        p = tmp_path / "complaints.parquet"
        df = frame()
        df["Complaint ID"] = df["Complaint ID"].astype(int)
        df.to_parquet(p, index=False)
    return p


@pytest.mark.parametrize("kind", ["csv", "csv.gz", "csv.zip", "json", "jsonl", "json.gz", "parquet"])
def test_each_format_reads_the_same_rows(tmp_path, kind):
    path = write(tmp_path, kind)
    expected_format = {"jsonl": "json"}.get(kind, kind)
    assert detect_format(path)[0] == expected_format
    src = open_source(path)
    rows = [r for b in src.batches for r in b.to_pylist()]
    assert len(rows) == len(ROWS)
    assert rows[0] == {
        "text": ROWS[0][2],
        "product": "Debt collection",
        "complaint_id": "5000",
        "date_received": rows[0]["date_received"],
    }
    assert rows[0]["date_received"].startswith("2021-03-04")
    assert rows[-1]["text"] is None
    r = prepare_dataset(DataConfig(input=path, out_dir=tmp_path / "out"))
    assert r.manifest["counts"]["kept"] == 40
    assert r.manifest["dropped"]["no_narrative"] == 1
    assert r.manifest["input"]["format"] == expected_format
    ids = set(pd.concat([load_split(r.out_dir, s) for s in ("train", "val", "test")])["complaint_id"])
    assert ids == {str(5000 + i) for i in range(20)} | {str(6000 + i) for i in range(20)}


def test_other_exports_with_named_columns(tmp_path):
    df = pd.DataFrame({"body": [t for _, _, t, _ in ROWS], "queue": [p for _, p, _, _ in ROWS]})
    df["queue"] = df["queue"].map(
        {"Debt collection": "Debt Collection", "Mortgage": "Mortgage"}
    )  # category names directly
    path = tmp_path / "tickets.csv"
    df.to_csv(path, index=False)
    r = prepare_dataset(DataConfig(input=path, out_dir=tmp_path / "out", text_column="body", label_column="queue"))
    assert r.manifest["counts"]["kept"] == 40
    assert r.manifest["input"]["columns"]["text"] == "body"
    train = load_split(r.out_dir, "train")
    assert train["complaint_id"].isna().all() and train["date_received"].isna().all()


def test_csv_with_bom_and_multiline_narratives(tmp_path):
    df = frame()
    df.loc[0, "Consumer complaint narrative"] = 'line one of the story\nline two, with "quotes", and more words'
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + df.to_csv(index=False).encode())
    rows = [r for b in open_source(path).batches for r in b.to_pylist()]
    assert rows[0]["text"] == 'line one of the story\nline two, with "quotes", and more words'
    assert len(rows) == len(ROWS)


def test_utf8_repair_across_chunk_boundaries():
    import io

    from ticket_triage.data.reading import ReadStats, Utf8Repair

    good = "café – naïve “quotes” 😀 ".encode() * 50
    for chunk in (1, 2, 3, 5, 7, 64):
        stats = ReadStats()
        out = Utf8Repair(io.BytesIO(good), stats, chunk=chunk).read()
        assert out == good and stats.replaced_chars == 0
        stats = ReadStats()
        bad = good[:10] + b"\xff" + good[10:40] + b"\xc3" + b"(" + good[40:] + b"\xe2\x82"  # stray, broken, truncated
        out = Utf8Repair(io.BytesIO(bad), stats, chunk=chunk).read()
        assert stats.replaced_chars == 3
        assert out.decode("utf-8").count("\ufffd") == 3


def test_json_inside_zip(tmp_path):
    path = tmp_path / "complaints.json.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("complaints.json", json.dumps(records()))
    assert detect_format(path) == ("json.zip", "complaints.json")
    r = prepare_dataset(DataConfig(input=path, out_dir=tmp_path / "out"))
    assert r.manifest["counts"]["kept"] == 40
