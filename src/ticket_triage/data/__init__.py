"""Data stage: read the CFPB export (or another ticket export), map labels through a taxonomy,
clean, de-duplicate and split into train/val/test parquet with a manifest.

Public API::

    prepare_dataset(DataConfig(input=..., out_dir=...)) -> PrepareResult(.out_dir, .manifest)
    load_split(data_dir, "train") -> DataFrame[text, label, complaint_id, product, date_received]
    load_splits(data_dir) -> ({"train": Split(texts, label ids), ...}, labels)
    read_manifest(data_dir) -> dict (key "labels": category names in taxonomy order; format_version checked)
    read_labelled_file(path, taxonomy) -> (DataFrame[text, label, date_received(, source)], report)
    fetch_cfpb(url=..., out=...) -> Path
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import CLEAN_STEPS, DataConfig

if TYPE_CHECKING:  # pragma: no cover
    from .fetch import CFPB_URL, fetch_cfpb
    from .io import SPLITS, Split, load_split, load_splits, read_labelled_file, read_manifest
    from .prepare import PrepareResult, prepare_dataset

_LAZY = {
    "prepare_dataset": "prepare",
    "PrepareResult": "prepare",
    "SPLITS": "io",
    "load_split": "io",
    "load_splits": "io",
    "Split": "io",
    "read_manifest": "io",
    "read_labelled_file": "io",
    "fetch_cfpb": "fetch",
    "CFPB_URL": "fetch",
    "clean_texts": "cleaning",
    "render_report": "report",
    "plot_class_distribution": "report",
}

__all__ = ["CLEAN_STEPS", "DataConfig", *_LAZY]


def __getattr__(name: str) -> Any:
    # Lazy, so `import ticket_triage.data` (and `triage --help`) stays cheap.
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
