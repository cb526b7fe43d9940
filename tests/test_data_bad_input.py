"""Bad input through the CLI: one clear line on stderr, exit 1, never a traceback."""

from __future__ import annotations

import gzip
import json

import pandas as pd
import pytest

from ticket_triage.cli import main
from ticket_triage.data import DataConfig, read_manifest
from ticket_triage.errors import ConfigError

HEADER = "Date received,Product,Consumer complaint narrative,Complaint ID"


def good_lines(n=10):
    return [
        f'2020-01-01,Mortgage,"my servicer lost payment number {i} and charged me a fee",{100 + i}' for i in range(n)
    ]


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def run_ok(args):
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 0


def prepare_fails(capsys, path, tmp_path, *extra):
    code, out, err = run_cli(
        ["data", "prepare", "--input", str(path), "--out", str(tmp_path / "out"), "-q", *extra], capsys
    )
    assert code == 1
    assert "Traceback" not in err and "Traceback" not in out
    assert err.startswith("error: ")
    return " ".join(err.split())  # rich may wrap long lines


def test_missing_columns_named(tmp_path, capsys):
    path = tmp_path / "cols.csv"
    path.write_text("Date received,Issue,Complaint ID\n2020-01-01,Late fee,1\n")
    err = prepare_fails(capsys, path, tmp_path)
    assert "'Consumer complaint narrative'" in err and "'Product'" in err
    assert "columns found: 'Date received', 'Issue', 'Complaint ID'" in err


def test_named_column_missing(tmp_path, capsys):
    path = tmp_path / "cols.csv"
    path.write_text(HEADER + "\n" + "\n".join(good_lines()) + "\n")
    err = prepare_fails(capsys, path, tmp_path, "--text-column", "body")
    assert "'body'" in err and "columns found" in err


def test_empty_file(tmp_path, capsys):
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    assert "is empty" in prepare_fails(capsys, path, tmp_path)


def test_header_only_file(tmp_path, capsys):
    path = tmp_path / "header.csv"
    path.write_text(HEADER + "\n")
    assert "no readable rows" in prepare_fails(capsys, path, tmp_path)


def test_not_a_csv_json_or_parquet(tmp_path, capsys):
    path = tmp_path / "image.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 20)
    assert "is not a CSV, JSON or Parquet file" in prepare_fails(capsys, path, tmp_path)


def test_missing_file(tmp_path, capsys):
    assert "does not exist" in prepare_fails(capsys, tmp_path / "nope.csv", tmp_path)


@pytest.mark.parametrize("lines", [3000, 40000])  # cut inside the header read / mid-stream
def test_truncated_gzip(tmp_path, capsys, lines):
    data = gzip.compress((HEADER + "\n" + "\n".join(good_lines(lines)) + "\n").encode())
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(data[: len(data) // 2])
    assert "truncated" in prepare_fails(capsys, path, tmp_path)


def test_truncated_zip(tmp_path, capsys):
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("complaints.csv", HEADER + "\n" + "\n".join(good_lines(3000)) + "\n")
    path = tmp_path / "cut.csv.zip"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    assert "not a valid zip archive" in prepare_fails(capsys, path, tmp_path)


def test_broken_json(tmp_path, capsys):
    path = tmp_path / "broken.json"
    path.write_text(
        '[{"product": "Mortgage", "complaint_what_happened": "my servicer lost my payment again"}, {"product": '
    )
    assert "cannot read broken.json as JSON" in prepare_fails(capsys, path, tmp_path)


def test_corrupt_parquet(tmp_path, capsys):
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"PAR1" + b"\x00garbage" * 50)
    assert "cannot read bad.parquet as Parquet" in prepare_fails(capsys, path, tmp_path)


def test_bad_option_is_one_line(tmp_path, capsys, bundled_csv):
    err = prepare_fails(capsys, bundled_csv, tmp_path, "--sample-frac", "1.5")
    assert "sample_frac must be in (0, 1]" in err
    err = prepare_fails(capsys, bundled_csv, tmp_path, "--clean", "emoji")
    assert "unknown cleaning step 'emoji'" in err


def test_strict_unknown_product_via_cli(tmp_path, capsys):
    path = tmp_path / "u.csv"
    path.write_text(
        HEADER
        + "\n"
        + "\n".join(good_lines())
        + '\n2020-01-01,Crypto lending,"my crypto loan was frozen without notice",9\n'
    )
    err = prepare_fails(capsys, path, tmp_path, "--strict")
    assert "'Crypto lending' (1 rows)" in err and "not in taxonomy 'cfpb-6'" in err


def test_undecodable_bytes_replaced_and_counted(tmp_path, capsys):
    lines = good_lines()
    body = (HEADER + "\n" + "\n".join(lines) + "\n").encode()
    body = body.replace(b"number 3 and", b"number 3 \xff\xfe and")  # two bytes that are not UTF-8
    path = tmp_path / "latin.csv"
    path.write_bytes(body)
    run_ok(["data", "prepare", "--input", str(path), "--out", str(tmp_path / "out"), "-q"])
    m = read_manifest(tmp_path / "out")
    assert m["undecodable_chars_replaced"] == 2
    assert m["counts"]["kept"] == 10
    texts = pd.concat([pd.read_parquet(tmp_path / "out" / f"{s}.parquet") for s in ("train", "val", "test")])["text"]
    assert texts.str.contains("number 3 \ufffd\ufffd and").sum() == 1


def test_broken_quoting_skipped_counted_and_located(tmp_path, capsys):
    lines = good_lines()
    lines.insert(3, "2020-01-01,Mortgage,my servicer, the bank, lost my payment badly,777")  # file line 5
    lines.insert(7, '2020-01-01,Mortgage,"he said "no" to me, twice and more,888')  # file line 9
    path = tmp_path / "quotes.csv"
    path.write_text(HEADER + "\n" + "\n".join(lines) + "\n")
    run_ok(["data", "prepare", "--input", str(path), "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    m = read_manifest(tmp_path / "out")
    assert m["broken_rows"]["count"] == 2
    assert [e["record"] for e in m["broken_rows"]["examples"]] == [5, 9]
    assert m["counts"]["kept"] == 10
    assert "2 broken CSV row(s) skipped at record(s) 5, 9" in " ".join(out.split())


def test_only_broken_rows_fails_cleanly(tmp_path, capsys):
    path = tmp_path / "allbroken.csv"
    path.write_text(HEADER + "\n" + "2020-01-01,Mortgage,a,b,c,d,e\n" * 3)
    err = prepare_fails(capsys, path, tmp_path)
    assert "no readable rows" in err and "3 broken rows skipped" in err


def test_config_validation_messages(tmp_path):
    with pytest.raises(ConfigError, match="sample_frac must be in"):
        DataConfig(input="x.csv", out_dir=tmp_path, sample_frac=0)
    with pytest.raises(ConfigError, match="min_words"):
        DataConfig(input="x.csv", out_dir=tmp_path, min_words=-1)
    with pytest.raises(ConfigError, match="add up to 1"):
        DataConfig(input="x.csv", out_dir=tmp_path, split=(0.5, 0.1, 0.1))
    with pytest.raises(ConfigError, match="unknown DataConfig option"):
        DataConfig.from_dict({"input": "x.csv", "out_dir": "o", "frac": 1})
    with pytest.raises(ConfigError, match="--input"):
        DataConfig(input="", out_dir=tmp_path)
    cfg = DataConfig(input="x.csv", out_dir=tmp_path, clean=["stopwords,lowercase", "amounts"], seed=3)
    assert cfg.clean == ("amounts", "lowercase", "stopwords")
    again = DataConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
