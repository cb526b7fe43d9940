"""Near-duplicate removal: planted copies of real CFPB narratives are found, within and across inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ticket_triage.data import DataConfig, load_split, prepare_dataset
from ticket_triage.data.neardup import lsh_params, shingle_hashes

SPLITS = ("train", "val", "test")
CATEGORY = {"Debt collection": "Debt Collection", "Mortgage": "Mortgage", "Student loan": "Loans"}


@pytest.fixture(scope="module")
def base(bundled_csv) -> pd.DataFrame:
    """60 real narratives of 120-400 words (10 per product kind below), none a near-copy of another."""
    df = pd.read_csv(bundled_csv, dtype=str)
    df = df[df["Product"].isin(list(CATEGORY))]
    words = df["Consumer complaint narrative"].str.split().str.len()
    df = df[(words >= 120) & (words <= 400)]
    # skip form letters: keep narratives whose first 8 words no other one shares
    start = df["Consumer complaint narrative"].str.split().str[:8].str.join(" ").str.lower()
    df = df[~start.duplicated(keep=False)]
    df = df.groupby("Product").head(20).reset_index(drop=True)
    df["Complaint ID"] = [str(1000 + i) for i in range(len(df))]  # some bundled rows have none
    return df


def words_of(text: str) -> list[str]:
    return text.split()


def all_rows(out) -> pd.DataFrame:
    return pd.concat([load_split(out, s).assign(split=s) for s in SPLITS], ignore_index=True)


def plant(base: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """The base rows plus near-copies; returns the frame and which base row each copy copies."""
    t = base["Consumer complaint narrative"].tolist()
    copies = []
    punct = t[0].replace(".", " !").replace(",", " ;").replace(" ", "  ")  # punctuation and spacing reworded
    copies.append(("punct", 0, punct, base.loc[0, "Product"]))
    w = words_of(t[1])
    copies.append(("truncated", 1, " ".join(w[: int(len(w) * 0.88)]), base.loc[1, "Product"]))  # 88% of the text
    added = t[2] + " I have called them many times since then and nobody has ever answered my letters."
    copies.append(("sentence_added", 2, added, base.loc[2, "Product"]))
    other = next(p for p in CATEGORY if p != base.loc[3, "Product"])
    w = words_of(t[3])
    changed = " ".join(w[:-3] + ["again", "and", "again"])  # a few words changed, another label
    copies.append(("conflict", 3, changed, other))
    rows = base.copy()
    extra = pd.DataFrame({c: [None] * len(copies) for c in base.columns})
    extra["Consumer complaint narrative"] = [c[2] for c in copies]
    extra["Product"] = [c[3] for c in copies]
    extra["Complaint ID"] = [f"9{i}" for i in range(len(copies))]
    return pd.concat([rows, extra], ignore_index=True), {c[0]: c[1] for c in copies}


def test_base_narratives_are_distinct_and_all_kept(tmp_path, base):
    path = tmp_path / "base.csv"
    base.to_csv(path, index=False)
    m = prepare_dataset(DataConfig(input=path, out_dir=tmp_path / "out")).manifest
    assert len(base) == 60
    assert m["counts"]["kept"] == 60
    assert m["dropped"]["near_duplicate"] == 0 and m["dropped"]["near_duplicate_conflicting_label"] == 0
    assert m["near_duplicates"]["groups"] == 0


def test_planted_near_duplicates_removed_and_never_straddle(tmp_path, base):
    rows, copied = plant(base)
    path = tmp_path / "planted.csv"
    rows.to_csv(path, index=False)
    r = prepare_dataset(DataConfig(input=path, out_dir=tmp_path / "out"))
    m = r.manifest
    assert m["dropped"]["duplicate"] == 0  # none of them is an exact copy
    assert m["dropped"]["near_duplicate"] == 3  # punct, truncated, sentence_added
    assert m["dropped"]["near_duplicate_conflicting_label"] == 2  # the conflicting copy and its original
    assert m["near_duplicates"]["groups"] == 4 and m["near_duplicates"]["conflicting_groups"] == 1
    assert m["counts"]["kept"] == 60 - 1
    out = all_rows(r.out_dir)
    ids = set(out["complaint_id"])
    # the original (first in input order) is kept, the copy is not; the conflicting pair is gone
    for name, i in copied.items():
        original = base.loc[i, "Complaint ID"]
        assert (original in ids) == (name != "conflict"), name
    assert not ids & {f"9{i}" for i in range(4)}
    # no text in two splits, not even nearly: every planted pair has at most one member left
    norm = out["text"].str.lower().str.replace(r"[^a-z0-9]+", " ", regex=True).str.split().str[:30].str.join(" ")
    assert not norm.duplicated().any()
    assert m["counts"]["rows_read"] == m["counts"]["kept"] + sum(m["dropped"].values())


def test_near_duplicate_across_two_inputs(tmp_path, base):
    a = tmp_path / "a.csv"
    base.to_csv(a, index=False)
    copy = base.iloc[[5]].copy()
    copy["Consumer complaint narrative"] = copy["Consumer complaint narrative"] + " Please help me resolve this as soon as possible."
    copy["Complaint ID"] = "777"
    b = tmp_path / "b.parquet"
    copy.to_parquet(b, index=False)
    r = prepare_dataset(DataConfig(input=[a, b], out_dir=tmp_path / "out"))
    m = r.manifest
    assert m["dropped"]["near_duplicate"] == 1
    per = {i["name"]: i for i in m["inputs"]}
    assert per["b.parquet"]["dropped"]["near_duplicate"] == 1 and per["b.parquet"]["kept"] == 0
    assert per["a.csv"]["kept"] == 60
    out = all_rows(r.out_dir)
    assert "777" not in set(out["complaint_id"]) and base.loc[5, "Complaint ID"] in set(out["complaint_id"])
    assert set(out["source"]) == {"a.csv"}


def test_near_duplicates_off_keeps_them(tmp_path, base):
    rows, _ = plant(base)
    path = tmp_path / "planted.csv"
    rows.to_csv(path, index=False)
    m = prepare_dataset(DataConfig(input=path, out_dir=tmp_path / "out", near_duplicates="off")).manifest
    assert m["counts"]["kept"] == 64
    assert m["dropped"]["near_duplicate"] == 0 and m["near_duplicates"] == {"threshold": None}


def test_same_input_and_seed_same_splits(tmp_path, base):
    rows, _ = plant(base)
    path = tmp_path / "planted.csv"
    rows.to_csv(path, index=False)
    one = prepare_dataset(DataConfig(input=path, out_dir=tmp_path / "one", seed=3)).out_dir
    two = prepare_dataset(DataConfig(input=path, out_dir=tmp_path / "two", seed=3)).out_dir
    for s in SPLITS:
        pd.testing.assert_frame_equal(load_split(one, s), load_split(two, s))


def test_shingles_and_lsh_parameters():
    words = np.array([1, 2, 3, 4, 5, 6, 7], dtype=np.uint64)
    sh, off = shingle_hashes(words, np.array([0, 5, 7]))  # a 5-word text and a 2-word text
    assert off.tolist() == [0, 3, 5]
    assert sh[3:].tolist() == [6, 7]  # too short for a 3-word shingle: its words
    assert len(set(sh[:3].tolist())) == 3
    again, _ = shingle_hashes(np.array([9, 1, 2, 3], dtype=np.uint64), np.array([0, 4]))
    assert again[1] == sh[0]  # the same 3 words give the same shingle wherever they are
    bands, rows = lsh_params(0.7)
    assert bands * rows <= 128 and 0.7 <= (1 / bands) ** (1 / rows) <= 0.8


@pytest.mark.parametrize("threshold, expected", [(0.5, (25, 5)), (0.7, (14, 9)), (0.8, (9, 13)), (0.9, (5, 25))])
def test_lsh_bands_and_rows_are_the_optimum_for_the_threshold(threshold, expected):
    # the values datasketch's MinHashLSH picks for 128 permutations (checked against it once)
    assert lsh_params(threshold) == expected
    bands, rows = expected
    # the S-curve passes near the threshold: pairs well above it are found, pairs well below are not
    found = lambda j: 1 - (1 - j**rows) ** bands  # noqa: E731
    assert found(min(threshold + 0.15, 1.0)) > 0.9 and found(threshold - 0.2) < 0.15
