"""Several inputs in one prepare: mixed formats, globs, per-input counts, a bad file named."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from ticket_triage.cli import main
from ticket_triage.data import DataConfig, load_split, prepare_dataset, read_manifest
from ticket_triage.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")
CSV = ["Date received", "Product", "Consumer complaint narrative", "Complaint ID"]


def rows(prefix: str, product: str, n: int, start: int) -> list[tuple]:
    # distinct stories (different words, not just numbers) so no two are near-duplicates
    topics = [
        "fee",
        "payment",
        "letter",
        "call",
        "report",
        "balance",
        "interest",
        "account",
        "card",
        "loan",
        "escrow",
        "refund",
    ]
    return [
        (
            "2022-01-01",
            product,
            f"{prefix} {topics[i % 12]} {topics[(i * 5 + 3) % 12]} story {i} told by customer {start + i} "
            f"who waited {i * 3 + 7} weeks for the {topics[(i * 7 + 1) % 12]} problem {i * 13} to end",
            str(start + i),
        )
        for i in range(n)
    ]


def all_rows(out) -> pd.DataFrame:
    return pd.concat([load_split(out, s) for s in SPLITS], ignore_index=True)


def check_counts_add_up(m):
    assert m["counts"]["rows_read"] == m["counts"]["kept"] + sum(m["dropped"].values())
    assert sum(i["rows_read"] for i in m["inputs"]) == m["counts"]["rows_read"]
    assert sum(i["kept"] for i in m["inputs"]) == m["counts"]["kept"]
    for inp in m["inputs"]:
        assert inp["rows_read"] == inp["kept"] + sum(inp["dropped"].values()), inp["name"]
        assert sum(inp["splits"].values()) == inp["kept"]
    for reason, n in m["dropped"].items():
        assert sum(i["dropped"][reason] for i in m["inputs"]) == n, reason


@pytest.fixture
def three_files(tmp_path):
    a = pd.DataFrame(
        rows("collector", "Debt collection", 20, 100) + [("2022-01-01", "Mortgage", None, "999")], columns=CSV
    )
    a.to_csv(tmp_path / "a.csv", index=False)
    b = pd.DataFrame(rows("servicer", "Mortgage", 20, 200), columns=CSV)
    b.loc[len(b)] = ["2022-01-02", "Debt collection", a.iloc[0, 2].upper(), "300"]  # exact duplicate of a's first row
    b.to_parquet(tmp_path / "b.parquet", index=False)
    c = [
        {"product": p, "complaint_what_happened": t, "complaint_id": i, "date_received": d}
        for d, p, t, i in rows("lender", "Student loan", 10, 400)
    ]
    c.append(
        {"product": "Mortgage", "complaint_what_happened": "too short", "complaint_id": "500", "date_received": None}
    )
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps(r) for r in c) + "\n")
    return [tmp_path / "a.csv", tmp_path / "b.parquet", tmp_path / "c.jsonl"]


def test_mixed_formats_combined_with_source_and_counts(tmp_path, three_files):
    r = prepare_dataset(DataConfig(input=three_files, out_dir=tmp_path / "out"))
    m = r.manifest
    assert [i["name"] for i in m["inputs"]] == ["a.csv", "b.parquet", "c.jsonl"]
    assert [i["format"] for i in m["inputs"]] == ["csv", "parquet", "json"]
    assert all(len(i["sha256"]) == 64 for i in m["inputs"])
    assert m["inputs"][2]["columns"]["text"] == "complaint_what_happened"
    assert m["counts"]["rows_read"] == 21 + 21 + 11
    assert m["dropped"]["duplicate"] == 1 and m["inputs"][1]["dropped"]["duplicate"] == 1  # the later copy (in b) goes
    assert m["inputs"][0]["dropped"]["no_narrative"] == 1 and m["inputs"][2]["dropped"]["too_short"] == 1
    assert m["counts"]["kept"] == 50
    check_counts_add_up(m)
    out = all_rows(r.out_dir)
    assert list(out.columns) == ["text", "label", "complaint_id", "product", "date_received", "source"]
    by_source = out.groupby("source")["complaint_id"].apply(set).to_dict()
    assert by_source["a.csv"] == {str(100 + i) for i in range(20)}
    assert by_source["b.parquet"] == {str(200 + i) for i in range(20)}
    assert by_source["c.jsonl"] == {str(400 + i) for i in range(10)}
    assert set(out.loc[out["source"] == "c.jsonl", "label"]) == {"Loans"}


def test_glob_pattern_and_one_that_matches_nothing(tmp_path):
    for k, (p, name) in enumerate([("Debt collection", "x1.csv"), ("Mortgage", "x2.csv")]):
        pd.DataFrame(rows(name, p, 10, 100 * (k + 1)), columns=CSV).to_csv(tmp_path / name, index=False)
    # templated texts: near-duplicates of each other, so that step is off here
    cfg = DataConfig(input=str(tmp_path / "x*.csv"), out_dir=tmp_path / "out", near_duplicates="off")
    assert cfg.inputs == (tmp_path / "x1.csv", tmp_path / "x2.csv")
    m = prepare_dataset(cfg).manifest
    assert m["counts"]["kept"] == 20 and {i["name"] for i in m["inputs"]} == {"x1.csv", "x2.csv"}
    assert DataConfig.from_dict(m["config"]).inputs == cfg.inputs
    with pytest.raises(ConfigError, match="matches no file"):
        DataConfig(input=str(tmp_path / "nothing*.csv"), out_dir=tmp_path / "o")
    with pytest.raises(ConfigError, match="given twice"):
        DataConfig(input=[tmp_path / "x1.csv", tmp_path / "x1.csv"], out_dir=tmp_path / "o")
    single = DataConfig(input=tmp_path / "x1.csv", out_dir=tmp_path / "o")
    assert single.input_path == tmp_path / "x1.csv" and single.to_dict()["input"] == str(tmp_path / "x1.csv")


def test_same_file_name_in_two_folders_gets_unique_sources(tmp_path):
    for k, folder in enumerate(("2023", "2024")):
        (tmp_path / folder).mkdir()
        pd.DataFrame(rows(folder, "Mortgage", 10, 100 * (k + 1)), columns=CSV).to_csv(
            tmp_path / folder / "complaints.csv", index=False
        )
    r = prepare_dataset(
        DataConfig(
            input=[tmp_path / "2023" / "complaints.csv", tmp_path / "2024" / "complaints.csv"],
            out_dir=tmp_path / "out",
            near_duplicates="off",
        )
    )
    names = [i["name"] for i in r.manifest["inputs"]]
    assert names == ["2023/complaints.csv", "2024/complaints.csv"]
    assert set(all_rows(r.out_dir)["source"]) == set(names)


@pytest.mark.parametrize("bad", ["bad.parquet", "cols.csv"])
def test_bad_input_among_several_is_named_and_nothing_written(tmp_path, three_files, bad):
    path = tmp_path / bad
    if bad == "bad.parquet":
        path.write_bytes(b"PAR1" + b"\x00garbage" * 50)
    else:
        path.write_text("Date received,Issue\n2020-01-01,Late fee\n")
    out = tmp_path / "out"
    with pytest.raises(DataError, match=bad.replace(".", r"\.")):
        prepare_dataset(DataConfig(input=[three_files[0], path, three_files[2]], out_dir=out))
    assert not out.exists()


def test_truncated_input_mid_stream_is_named(tmp_path, three_files):
    import gzip

    body = (
        "Date received,Product,Consumer complaint narrative,Complaint ID\n"
        + "".join(
            f'2020-01-01,Mortgage,"my servicer lost payment number {i} and charged me a fee",{i}\n'
            for i in range(40000)
        )
    ).encode()
    data = gzip.compress(body)
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("an earlier file")
    with pytest.raises(DataError, match="cut.csv.gz"):
        prepare_dataset(DataConfig(input=[three_files[0], cut], out_dir=out))
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_cli_repeated_input_and_near_duplicates_off(tmp_path, three_files, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "data",
                "prepare",
                "--input",
                str(three_files[0]),
                "-i",
                str(three_files[1]),
                "--out",
                str(out),
                "--near-duplicates",
                "off",
            ]
        )
    assert exc.value.code == 0
    printed = " ".join(capsys.readouterr().out.split())
    m = read_manifest(out)
    assert [i["name"] for i in m["inputs"]] == ["a.csv", "b.parquet"]
    assert m["config"]["near_duplicates"] is None and m["near_duplicates"] == {"threshold": None}
    assert "near-duplicates: off" in printed and "b.parquet" in printed and "plan: DuckDB memory limit" in printed
    check_counts_add_up(m)
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "data",
                "prepare",
                "--input",
                str(tmp_path / "*.csv"),
                "--out",
                str(tmp_path / "g"),
                "-q",
                "--near-duplicates",
                "0.8",
            ]
        )
    assert exc.value.code == 0
    assert read_manifest(tmp_path / "g")["near_duplicates"]["threshold"] == 0.8
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "data",
                "prepare",
                "--input",
                str(three_files[0]),
                "--out",
                str(tmp_path / "h"),
                "-q",
                "--near-duplicates",
                "1.5",
            ]
        )
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "near_duplicates must be" in err and "Traceback" not in err
