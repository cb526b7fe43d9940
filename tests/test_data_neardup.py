"""Near-duplicate removal: planted copies of real CFPB narratives are found, within and across inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
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
    copy["Consumer complaint narrative"] = (
        copy["Consumer complaint narrative"] + " Please help me resolve this as soon as possible."
    )
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


def planted_shingles(base):
    import duckdb

    from ticket_triage.data.neardup import text_shingles

    rows, _ = plant(base)
    texts = rows["Consumer complaint narrative"].tolist()
    texts += [texts[0] + " Thank you.", texts[0][: len(texts[0]) // 2], texts[10]]  # a chain and an exact copy
    con = duckdb.connect()
    try:
        return text_shingles(con, pa.array(texts))
    finally:
        con.close()


def whole_signature_estimates(sig: np.ndarray, a: np.ndarray, c: np.ndarray, band: slice) -> np.ndarray:
    """The check as it was, on every signature byte in memory at once: the reference."""
    low = (sig & 0xFF).astype(np.uint8)
    others = np.ones(sig.shape[1], dtype=bool)
    others[band] = False
    match = (low[a][:, others] == low[c][:, others]).mean(axis=1)
    return (match - 1 / 256) / (1 - 1 / 256)


def reference_groups(sig: np.ndarray, threshold: float) -> list[int]:
    """The groups by brute force: every pair that shares a band key and passes the
    whole-signature check, joined by union-find; each group's root its smallest node."""
    bands, rows = lsh_params(threshold)
    n = sig.shape[0]
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for b in range(bands):
        band = slice(b * rows, (b + 1) * rows)
        a, c = np.triu_indices(n, 1)
        same = (sig[a, band] == sig[c, band]).all(axis=1)
        a, c = a[same], c[same]
        ok = whole_signature_estimates(sig, a, c, band) >= threshold
        for i, j in zip(a[ok], c[ok]):
            ri, rj = find(int(i)), find(int(j))
            parent[max(ri, rj)] = min(ri, rj)
    return [find(i) for i in range(n)]


def index_of(sh, off, path, **kw):
    from ticket_triage.data.neardup import NearDuplicateIndex

    index = NearDuplicateIndex(0.7, path, **kw)
    half = int(off.size // 2)
    index.add(sh[: off[half]], off[: half + 1])  # added in two parts, as prepare streams them
    index.add(sh[off[half] :], off[half:] - off[half])
    return index


def test_chunked_check_estimates_as_the_whole_signature_does(tmp_path, base):
    """A band's candidate pairs are checked by reading the other bands' signature bytes one
    file at a time, a few pairs at a time: the same estimates as all 119 bytes in memory."""
    from ticket_triage.data.neardup import NUM_PERM, _signatures

    sh, off = planted_shingles(base)
    sig = _signatures(sh, off.astype(np.uint64), NUM_PERM)
    index = index_of(sh, off, tmp_path / "lsh", pair_chunk=7)
    index.close()
    a, c = np.triu_indices(sig.shape[0], 1)
    for b in (0, index.bands - 1):
        band = slice(b * index.rows, (b + 1) * index.rows)
        got = index.estimates(a.astype(np.int32), c.astype(np.int32), b)
        np.testing.assert_allclose(got, whole_signature_estimates(sig, a, c, band), rtol=0, atol=1e-12)
        assert (got >= 0.7).sum() >= 6  # the planted copies


def test_components_are_the_reference_groups(tmp_path, base):
    from ticket_triage.data.neardup import NUM_PERM, _signatures

    sh, off = planted_shingles(base)
    index = index_of(sh, off, tmp_path / "lsh", pair_chunk=3)
    root = index.components()
    assert root.tolist() == reference_groups(_signatures(sh, off.astype(np.uint64), NUM_PERM), 0.7)
    assert (root != np.arange(root.size)).sum() >= 6  # the planted copies are in groups
    assert index.candidates >= index.checked >= index.confirmed > 0
    assert not list((tmp_path / "lsh").iterdir())  # the work files are removed


def test_text_shingles_ignore_punctuation_and_case():
    import duckdb

    from ticket_triage.data.neardup import text_shingles

    con = duckdb.connect()
    sh, off = text_shingles(con, pa.array(["The bank, again!", "the BANK again"]))
    sliced, sliced_off = text_shingles(con, pa.array(["x", "the BANK again", "The bank again."]).slice(1))
    con.close()
    assert off.tolist() == [0, 1, 2] and sh[0] == sh[1]
    assert sliced_off.tolist() == [0, 1, 2] and sliced.tolist() == [sh[0], sh[0]]
