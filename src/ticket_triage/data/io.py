"""The one reader of prepared data folders (train/val/test.parquet + manifest.json), and raw
labelled files (for evaluation).

A prepared folder's manifest carries `format_version`; every read checks it, so a folder from an
incompatible version stops with what to do instead of being read wrongly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..taxonomy import Taxonomy, load_taxonomy

SPLITS = ("train", "val", "test")
FORMAT_VERSION = 1  # of a prepared folder; written by prepare.py into manifest.json


@dataclass
class Split:
    """One split for training: texts and integer labels in the manifest's label order."""

    texts: list[str]
    labels: np.ndarray  # (N,) int64 ids into the label list
    # (N,) float32 loss weights from an optional `weight` column (`triage retrain` writes one so that
    # agents' corrections count more); None when the split has none or every weight is 1.
    weights: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.texts)


def read_manifest(data_dir: str | Path) -> dict[str, Any]:
    """The manifest.json of a prepared data folder, after checking its format version."""
    path = Path(data_dir) / "manifest.json"
    if not Path(data_dir).is_dir():
        raise DataError(
            f"data folder {data_dir} does not exist: create it with `triage data prepare --input FILE --out {data_dir}`"
        )
    if not path.is_file():
        raise DataError(
            f"{data_dir} has no manifest.json; prepare it with `triage data prepare --input FILE --out {data_dir}`"
        )
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON ({exc}); prepare the folder again") from None
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if version != FORMAT_VERSION:
        raise DataError(
            f"{data_dir} is a prepared folder of format version {version!r}, and this version of ticket-triage reads "
            f"version {FORMAT_VERSION}: prepare it again with `triage data prepare --input FILE --out {data_dir}`"
        )
    if not manifest.get("labels"):
        raise DataError(f"{path} lists no labels; prepare the folder again")
    return manifest


def load_split(data_dir: str | Path, split: str, columns: list[str] | None = None):
    """One split of a prepared folder as a DataFrame: text, label, complaint_id, product, date_received."""
    import pandas as pd

    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    path = Path(data_dir) / f"{split}.parquet"
    if not path.is_file():
        raise DataError(
            f"{data_dir} has no {split}.parquet; prepare it with `triage data prepare --input FILE --out {data_dir}`"
        )
    read_manifest(data_dir)
    return pd.read_parquet(path, columns=columns)


def load_splits(data_dir: str | Path, splits: tuple[str, ...] = SPLITS) -> tuple[dict[str, Split], list[str]]:
    """The prepared splits in `data_dir` as texts and label ids, and the label names (the manifest's order)."""
    labels = list(read_manifest(data_dir)["labels"])
    index = {name: i for i, name in enumerate(labels)}
    out = {}
    for name in splits:
        frame = load_split(data_dir, name, columns=["text", "label", *_weight_column(data_dir, name)])
        if frame.empty:
            raise DataError(f"{Path(data_dir) / name}.parquet has no rows: prepare more data or lower --min-words")
        unknown = sorted(set(frame["label"]) - set(index))
        if unknown:
            raise DataError(f"{name} split has labels the manifest does not list: {unknown}")
        out[name] = Split(
            frame["text"].astype(str).tolist(),
            frame["label"].map(index).to_numpy(dtype=np.int64),
            _row_weights(frame, Path(data_dir) / f"{name}.parquet"),
        )
    return out, labels


WEIGHT_COLUMN = "weight"


def _weight_column(data_dir: str | Path, split: str) -> list[str]:
    """["weight"] when the split's parquet has that column (read from the schema, not the rows)."""
    import pyarrow.parquet as pq

    path = Path(data_dir) / f"{split}.parquet"
    if not path.is_file():
        return []  # load_split names the missing file
    return [WEIGHT_COLUMN] if WEIGHT_COLUMN in pq.read_schema(path).names else []


def _row_weights(frame, path: Path) -> np.ndarray | None:
    if WEIGHT_COLUMN not in frame:
        return None
    weights = frame[WEIGHT_COLUMN].to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(weights)) or (weights < 0).any() or weights.sum() <= 0:
        raise DataError(f"{path}: the weight column must hold finite numbers >= 0, not all 0")
    # all ones is the same as no column: training keeps its plain (unweighted) loss
    return None if np.all(weights == 1) else weights.astype(np.float32)


def read_labelled_file(
    path: str | Path,
    taxonomy: Taxonomy | str | Path | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
    clean: tuple[str, ...] | list[str] = (),
    max_rows: int | None = None,
):
    """A raw CFPB-format file (any format prepare reads) or a prepared parquet as (DataFrame[text, label,
    date_received(, source)], report).

    Products map through the taxonomy; rows without text, dropped products and unknown products
    are left out and counted in the report (``unknown_products``: product -> rows). No
    de-duplication and no minimum length: the file is evaluated as it is. `clean` applies the
    same optional cleaning steps as `prepare_dataset` (pass the manifest's config["clean"]).
    `max_rows` reads only the file's first rows (a quick check on a large file).
    `date_received` is the file's date column as written (null where it has none); `source` is
    there only when the file has a `source` column (a prepared split from several inputs).
    """
    import pandas as pd
    import pyarrow as pa

    from .cleaning import clean_texts
    from .config import DataConfig
    from .reading import open_source

    tax = taxonomy if isinstance(taxonomy, Taxonomy) else load_taxonomy(taxonomy)
    steps = DataConfig(input=Path(path), out_dir=Path("."), clean=tuple(clean)).clean if clean else ()
    source = open_source(path, text_column, label_column)
    texts: list[pa.Array] = []
    products: list[pa.Array] = []
    dates: list[pa.Array] = []
    rows = 0
    for batch in source.batches:
        if max_rows is not None and rows + batch.num_rows > max_rows:
            batch = batch.slice(0, max_rows - rows)
        texts.append(batch.column(0))
        products.append(batch.column(1))
        dates.append(batch.column("date_received"))
        rows += batch.num_rows
        if max_rows is not None and rows >= max_rows:
            break
    text = pa.chunked_array(texts, pa.string()).to_pandas() if texts else pd.Series([], dtype=object)
    product = pa.chunked_array(products, pa.string()).to_pandas() if products else pd.Series([], dtype=object)
    date = pa.chunked_array(dates, pa.string()).to_pandas() if dates else pd.Series([], dtype=object)
    df = pd.DataFrame({"text": text, "product": product.fillna("").astype(str).str.strip(), "date_received": date})
    if source.format == "parquet" and "source" in source.available:
        df["source"] = _parquet_column(path, "source", len(df))
    has_text = df["text"].notna() & (df["text"].astype(str).str.strip() != "")
    report: dict[str, Any] = {
        "path": str(path),
        "format": source.format,
        "columns": source.columns,
        "rows_read": int(source.stats.rows_read),
        "no_text": int((~has_text).sum()),
    }
    df = df[has_text]
    mapping = {p: tax.category_of(p) for p in df["product"].unique()}
    df = df.assign(label=df["product"].map(mapping))
    dropped = df["product"].map(lambda p: tax.is_dropped(p) or p == "")
    unknown = df["label"].isna() & ~dropped
    report["dropped_products"] = {str(k): int(v) for k, v in df.loc[dropped, "product"].value_counts().items()}
    report["unknown_products"] = {str(k): int(v) for k, v in df.loc[unknown, "product"].value_counts().items()}
    report["unknown_rows"] = int(unknown.sum())
    out = df.loc[
        df["label"].notna(), ["text", "label", "date_received"] + (["source"] if "source" in df else [])
    ].reset_index(drop=True)
    out["text"] = out["text"].astype(str).str.strip()
    if steps:
        out["text"] = clean_texts(out["text"].tolist(), steps)
    report["kept"] = len(out)
    report["broken_rows"] = int(source.stats.broken_rows)
    report["undecodable_chars_replaced"] = int(source.stats.replaced_chars)
    report["labels"] = list(tax.categories)
    return out, report


def _parquet_column(path: str | Path, name: str, rows: int):
    """One more column of a parquet file, its first `rows` values: the stream reader keeps only
    text, product, id and date, and reads parquet rows in file order without skipping any."""
    import pyarrow.parquet as pq

    return pq.read_table(path, columns=[name]).column(name).slice(0, rows).to_pandas()
