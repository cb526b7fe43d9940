"""Near-duplicate narratives: MinHash LSH over word 3-shingles, memory-bounded at millions of rows.

Public CFPB samples overlap and consumers paste form letters, so copies differ by punctuation,
truncation or a few words, which the exact (normalised-text hash) de-duplication misses.

Shingling: the text is lower-cased and cut into runs of ASCII letters and digits (so
punctuation and whitespace differences vanish); every 3 consecutive words form one shingle.
A text of one or two words is the set of its words. Jaccard similarity of two texts is
|A & B| / |A | B| over these shingle sets.

Threshold (default 0.7, ``DataConfig.near_duplicates``): an 88% truncation, one added
sentence in 8, or three changed words in a 150-word narrative all stay above 0.8; unrelated
complaints sit below 0.1, and two different narratives of one form letter (same template,
their own story in it) fall between. LSH is a probabilistic filter: with 128 permutations the
bands and rows are datasketch's optimum for the threshold (14 bands of 9 rows at 0.7), which
makes a pair a candidate with probability 0.03 at Jaccard 0.5, 0.44 at 0.7, 0.87 at 0.8 and
0.975 at 0.85 (``1 - (1 - J^r)^b``). Each candidate pair is then checked: its Jaccard is
estimated from the other 119 signature values (their low bytes, kept on disk) and the pair is
kept only at or above the threshold (standard error about 0.04 at 0.8), so the threshold means
what it says and groups do not chain through weaker pairs. Groups are connected components of
the confirmed pairs.

Library: rensa's RMinHash (Rust) computes the signatures from a flat buffer of shingle hashes;
measured on 5,000 bundled CFPB narratives (197 shingles each, same shingle hashes, 2 busy
shared cores): rensa 85 us/doc (digest and the copy into numpy), datasketch ``MinHash.bulk``
354 us/doc and ``MinHash.update_batch`` 986 us/doc. Tokenising and hashing the words runs in
DuckDB (vectorised); on an idle core it costs about 50 us/doc, more than rensa.

Memory: per text only its band keys (one uint64 per band, a file per band) and the low byte
of each signature value (a file per band's positions) go to the work folder. Each band is then
loaded alone (8 bytes a row), sorted with numpy, and its runs of equal keys give candidate
pairs; those not already in one group are checked by reading the other bands' byte files one
at a time (9 bytes a row each, not a memory map of all 128, which became resident: 512 MB at
4M texts), and merged into the components (scipy's connected_components on the band's edges
plus each node's current root). Node arrays are int32. No Python object per row.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pyarrow as pa

NUM_PERM = 128
SHINGLE_WORDS = 3
SEED = 1

# DuckDB SQL: the list of 64-bit word hashes of `column` (lower-cased, ASCII letters/digits).
_WORDS_SQL = r"list_transform(regexp_extract_all(lower({col}), '[a-z0-9]+'), lambda w: hash(w))"

# odd 64-bit constants that mix three word hashes into one shingle hash (order matters)
_C1 = np.uint64(0x9E3779B97F4A7C15)
_C2 = np.uint64(0xC2B2AE3D27D4EB4F)


def word_hashes_sql(column: str) -> str:
    return _WORDS_SQL.format(col=column)


def text_shingles(con, texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Texts -> their 3-shingle hashes (flat) and per-text offsets; `con` is a DuckDB
    connection, which hashes the words (vectorised)."""
    con.register("neardup_texts", pa.table({"text": texts}))
    try:
        words = (
            con.sql(f"SELECT {word_hashes_sql('text')} AS w FROM neardup_texts")
            .to_arrow_table()
            .column(0)
            .combine_chunks()
        )
    finally:
        con.unregister("neardup_texts")
    offsets = words.offsets.to_numpy()
    return shingle_hashes(words.values.to_numpy()[offsets[0] : offsets[-1]], offsets - offsets[0])


@functools.lru_cache(maxsize=None)
def lsh_params(
    threshold: float, num_perm: int = NUM_PERM, fp_weight: float = 0.5, fn_weight: float = 0.5
) -> tuple[int, int]:
    """(bands, rows per band) for `num_perm` permutations that minimise the weighted areas of
    false positives (Jaccard below the threshold, still a candidate) and false negatives
    (above it, missed) under the LSH S-curve 1 - (1 - J^r)^b: the choice datasketch's
    MinHashLSH makes (the same integrals, here without reaching into its private helper)."""
    from scipy.integrate import quad

    def candidate(j: float, b: int, r: int) -> float:
        return 1.0 - (1.0 - j**r) ** b

    best, params = float("inf"), (1, 1)
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            false_pos = quad(candidate, 0.0, threshold, args=(b, r))[0]
            false_neg = quad(lambda j, b=b, r=r: 1.0 - candidate(j, b, r), threshold, 1.0)[0]
            err = fp_weight * false_pos + fn_weight * false_neg
            if err < best:
                best, params = err, (b, r)
    return params


def shingle_hashes(words: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Word hashes (flat, per-text offsets) -> 3-shingle hashes (flat) and their offsets.

    A text with fewer than 3 words keeps its words as its shingles.
    """
    words = np.asarray(words, dtype=np.uint64)
    offsets = np.asarray(offsets, dtype=np.int64)
    lengths = np.diff(offsets)
    n_docs = lengths.size
    doc = np.repeat(np.arange(n_docs), lengths)
    pos = np.arange(words.size) - offsets[:-1][doc]
    short = lengths[doc] < SHINGLE_WORDS
    k = SHINGLE_WORDS
    keep = short | (pos <= lengths[doc] - k)
    mixed = words.copy()
    if words.size >= k:
        with np.errstate(over="ignore"):
            mixed[: words.size - k + 1] = (
                words[: -k + 1] ^ (words[1 : words.size - k + 2] * _C1) ^ (words[k - 1 :] * _C2)
            )
    out = mixed[keep]
    counts = np.where(lengths < k, lengths, lengths - k + 1)
    new_offsets = np.zeros(n_docs + 1, dtype=np.uint64)
    np.cumsum(counts, out=new_offsets[1:])
    return out, new_offsets


class NearDuplicateIndex:
    """Add texts' shingle hashes in order (node 0, 1, ...), then `components()`.

    Per text only small fixed-width records go to files in `work_dir`: one band key per band,
    and the low byte of every signature value, in one file per band's positions (plus one for
    the positions no band uses), so a band's candidate pairs are checked by reading the other
    bands' files one after another, whole and in order, never the whole signature at once.
    """

    def __init__(self, threshold: float, work_dir: Path, num_perm: int = NUM_PERM, pair_chunk: int = 1 << 20):
        self.threshold = threshold
        self.num_perm = num_perm
        self.bands, self.rows = lsh_params(threshold, num_perm)
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.pair_chunk = pair_chunk
        used = self.bands * self.rows
        self._slices = [slice(b * self.rows, (b + 1) * self.rows) for b in range(self.bands)]
        if used < num_perm:
            self._slices.append(slice(used, num_perm))
        self._keys = [open(self.work_dir / f"band{b}.u64", "wb") for b in range(self.bands)]
        self._checks = [open(self.work_dir / f"check{g}.u8", "wb") for g in range(len(self._slices))]
        self.n = 0
        self.candidates = 0
        self.checked = 0
        self.confirmed = 0

    def add(self, shingles: np.ndarray, offsets: np.ndarray) -> None:
        import pandas as pd

        n_docs = offsets.size - 1
        if n_docs == 0:
            return
        offsets = offsets.astype(np.uint64)
        sig = _signatures(shingles, offsets, self.num_perm)
        low = (sig & 0xFF).astype(np.uint8)
        for g, cols in enumerate(self._slices):
            self._checks[g].write(np.ascontiguousarray(low[:, cols]).tobytes())
        empty = np.flatnonzero(np.diff(offsets) == 0)
        for b in range(self.bands):
            key = (
                pd.util.hash_pandas_object(pd.DataFrame(sig[:, self._slices[b]]), index=False)
                .to_numpy()
                .astype(np.uint64)
            )
            # a text without words matches nothing: a key of its own
            key[empty] = (empty + self.n).astype(np.uint64) | np.uint64(1 << 63)
            self._keys[b].write(key.tobytes())
        self.n += n_docs

    def close(self) -> None:
        """No more texts: the work files are complete."""
        for f in [*self._keys, *self._checks]:
            f.close()

    def components(self) -> np.ndarray:
        """root[i]: the smallest node of i's group (i itself when it has no near-duplicate)."""
        self.close()
        n = self.n
        idx = np.int32 if n < 2**31 else np.int64  # node numbers: half the memory of int64
        root = np.arange(n, dtype=idx)
        for b in range(self.bands):
            a, c = self._band_pairs(b, idx)
            self.candidates += a.size
            # a pair already in one group adds nothing: only the others are checked
            new = root[a] != root[c]
            a, c = a[new], c[new]
            self.checked += a.size
            if a.size == 0:
                continue
            # LSH only proposes pairs; keep those whose estimated Jaccard reaches the threshold,
            # so the threshold holds and groups do not chain through weaker pairs
            ok = self.estimates(a, c, b) >= self.threshold
            a, c = a[ok], c[ok]
            self.confirmed += a.size
            root = _merge(root, a, c)
        for g in range(len(self._slices)):
            (self.work_dir / f"check{g}.u8").unlink(missing_ok=True)
        return root.astype(np.int64)

    def _band_pairs(self, band: int, idx) -> tuple[np.ndarray, np.ndarray]:
        """Neighbours in each run of equal band keys (which connect the whole run), input order within a run."""
        path = self.work_dir / f"band{band}.u64"
        key = np.fromfile(path, dtype=np.uint64)
        path.unlink()
        order = np.argsort(key, kind="stable").astype(idx)  # stable: each run lists its nodes in input order
        key = key[order]
        same = np.flatnonzero(key[1:] == key[:-1])
        del key
        return order[same], order[same + 1]

    def estimates(self, a: np.ndarray, c: np.ndarray, band: int) -> np.ndarray:
        """Estimated Jaccard of pairs a-c, from the signatures' low bytes (b-bit minwise hashing).

        The band's own values are equal by construction and left out; a byte matches by chance
        with probability 1/256, which the estimate corrects. The other bands' byte files are
        read one at a time (n x rows bytes each) and their matches summed per pair.
        """
        matches = np.zeros(a.size, dtype=np.uint8)
        others = 0
        for g, cols in enumerate(self._slices):
            if g == band:
                continue
            width = cols.stop - cols.start
            others += width
            low = np.fromfile(self.work_dir / f"check{g}.u8", dtype=np.uint8).reshape(self.n, width)
            for i in range(0, a.size, self.pair_chunk):
                j = i + self.pair_chunk
                matches[i:j] += (low[a[i:j]] == low[c[i:j]]).sum(axis=1, dtype=np.uint8)
            del low
        return (matches / others - 1 / 256) / (1 - 1 / 256)


def _signatures(shingles: np.ndarray, offsets: np.ndarray, num_perm: int) -> np.ndarray:
    """(texts, num_perm) uint32 MinHash signatures, from rensa."""
    import rensa

    n_docs = offsets.size - 1
    sig = np.empty((n_docs, num_perm), dtype=np.uint32)
    step = 4096  # rensa hands the digests back as Python lists: a few thousand rows at a time keeps that small
    for i in range(0, n_docs, step):
        j = min(n_docs, i + step)
        part = offsets[i : j + 1]
        flat = shingles[int(part[0]) : int(part[-1])]
        sig[i:j] = rensa.RMinHash.digest_matrix_from_flat_token_hashes(flat, part - part[0], num_perm, SEED).to_rows()
    return sig


def _merge(root: np.ndarray, a: np.ndarray, c: np.ndarray) -> np.ndarray:
    """New roots after adding edges a-c: connected components of the edges plus each node's
    current root, each component's root its smallest node (the first in input order)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = root.size
    linked = np.flatnonzero(root != np.arange(n, dtype=root.dtype)).astype(root.dtype)
    rows = np.concatenate([a, linked])
    cols = np.concatenate([c, root[linked]])
    del linked
    graph = coo_matrix((np.ones(rows.size, dtype=np.int8), (rows, cols)), shape=(n, n)).tocsr()
    del rows, cols
    _, comp = connected_components(graph, directed=False)
    del graph
    first = np.full(comp.max() + 1, n, dtype=root.dtype)
    np.minimum.at(first, comp, np.arange(n, dtype=root.dtype))
    return first[comp]


def resolve_groups(root: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks (near_duplicate, near_duplicate_conflicting_label) over the nodes.

    In a group with one label its first node is kept and the others are near duplicates; a
    group with several labels is dropped whole.
    """
    n = root.size
    lo = np.full(n, 127, dtype=np.int16)
    hi = np.full(n, -1, dtype=np.int16)
    np.minimum.at(lo, root, labels.astype(np.int16))
    np.maximum.at(hi, root, labels.astype(np.int16))
    conflict = lo[root] != hi[root]
    size = np.bincount(root, minlength=n)
    grouped = size[root] > 1
    dup = grouped & ~conflict & (root != np.arange(n))
    return dup, grouped & conflict


def near_duplicates_of(texts: list[str], reference: list[str], threshold: float) -> np.ndarray:
    """Mask over `texts`: True where a text is a near-duplicate (Jaccard >= threshold) of any
    `reference` text, or an exact copy of one. For in-memory lists (thousands of rows), such as
    unlabelled narratives that must not echo the validation and test splits."""
    import tempfile

    import duckdb

    con = duckdb.connect()
    try:
        shingles, offsets = text_shingles(con, pa.array(list(reference) + list(texts), pa.string()))
    finally:
        con.close()
    with tempfile.TemporaryDirectory(prefix="triage-neardup-") as work:
        index = NearDuplicateIndex(threshold, Path(work))
        index.add(shingles, offsets)
        root = index.components()
    n_ref = len(reference)
    # A group's root is its first node, and the reference texts come first: a text whose root
    # is a reference node shares a group with one.
    return root[n_ref:] < n_ref
