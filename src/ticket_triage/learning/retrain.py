"""`triage retrain`: fine-tune on the base data plus agents' corrections, as a normal run folder.

    RUN/data/                       the merged prepared folder it trained on (train.parquet has
                                    `weight` and `origin` columns; val/test are the base's)
    RUN/corrections_holdout.parquet the newest corrections, held out (text, label, date_received, ticket_id)
    RUN/model/, metrics.json, ...   what `triage train` writes
    RUN/retrain.json                inputs, counts, per-category counts, settings

Warm start (the default) continues from the current model's weights for a few epochs (1 unless
--epochs), with its own training settings; --from-scratch fine-tunes its base encoder again.
A max_train_rows setting caps the base rows only (the same subset the model trained on); every
correction is kept.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError, DataError

HOLDOUT_FILE = "corrections_holdout.parquet"
RETRAIN_FILE = "retrain.json"


@dataclass
class RetrainConfig:
    base: Path  # prepared folder the current model was trained on
    model: Path  # the current model folder (CURRENT/model)
    feedback: str  # a database URL or the CSV of GET /v1/feedback/export
    out: Path
    since: date | None = None
    correction_weight: float = 3.0
    holdout_frac: float = 0.2
    epochs: int | None = None  # None: 1 for a warm start, the model's own for --from-scratch
    from_scratch: bool = False
    train_overrides: dict[str, Any] = field(default_factory=dict)  # TrainConfig settings (lr, device, ...)

    def __post_init__(self) -> None:
        self.base, self.model, self.out = Path(self.base), Path(self.model), Path(self.out)
        if not self.correction_weight > 0:
            raise ConfigError(f"correction_weight must be above 0, got {self.correction_weight}")
        if not 0 <= self.holdout_frac < 1:
            raise ConfigError(f"holdout_frac must be in [0, 1), got {self.holdout_frac}")
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError(f"epochs must be at least 1, got {self.epochs}")


@dataclass
class RetrainResult:
    out_dir: Path
    model_dir: Path
    holdout: Path | None  # None when nothing was held out
    summary: dict[str, Any]
    train: Any  # training.TrainResult


def retrain(cfg: RetrainConfig, *, log: Callable[[str], None] = print, progress: bool = True) -> RetrainResult:
    """Merge, split by time, train; see the module docstring for what it writes."""
    from ..data.io import load_split, read_manifest
    from ..training import TrainConfig, train_model
    from .feedback import read_corrections
    from .merge import merge_rows, time_split

    if (cfg.out / "model").exists() or (cfg.out / RETRAIN_FILE).exists():
        raise ConfigError(f"{cfg.out} already holds a run: choose another --out")
    manifest = read_manifest(cfg.base)
    labels = list(manifest["labels"])
    train_config = _train_config(cfg, labels)
    corrections = read_corrections(cfg.feedback, labels=labels, since=cfg.since)
    if corrections.empty:
        since = f" since {cfg.since}" if cfg.since else ""
        raise DataError(f"no corrections{since} in {_safe_source(cfg.feedback)}: nothing to retrain on")
    corrections = _clean_like_base(corrections, manifest)
    train_corr, held_out = time_split(corrections, cfg.holdout_frac)
    base_train = _base_rows(load_split(cfg.base, "train", columns=["text", "label"]), labels, train_config)
    if train_config.max_train_rows:  # applied to the base rows above: every correction is kept
        train_config = TrainConfig.from_dict({**train_config.to_dict(), "max_train_rows": None})
    evaluation = [load_split(cfg.base, s, columns=["text", "label"]) for s in ("val", "test")]
    exclude = [t for frame in evaluation for t in frame["text"].astype(str)] + held_out["text"].tolist()
    merged = merge_rows(
        base_train,
        train_corr,
        correction_weight=cfg.correction_weight,
        threshold=_threshold(manifest),
        exclude_texts=exclude,
    )
    if merged.train.empty:
        raise DataError("no training rows left after merging the corrections with the base data")
    data_dir = _write_data(cfg, manifest, merged.train)
    holdout_path = _write_holdout(cfg.out, held_out)
    log(
        f"retraining on {merged.counts['train_base_rows']} base rows + {merged.counts['train_corrections']} corrections "
        f"(weight {cfg.correction_weight:g}); {len(held_out)} newest corrections held out; "
        f"{'from the base encoder' if cfg.from_scratch else f'warm start from {cfg.model}'}"
    )
    summary = _summary(cfg, manifest, train_config, corrections, train_corr, held_out, merged)
    _write_json(cfg.out / RETRAIN_FILE, summary)  # before training: what went in is known even if it fails
    result = train_model(train_config, data_dir, cfg.out, log=log, progress=progress)
    summary["result"] = {
        "model_dir": str(result.model_dir),
        "best_epoch": result.best_epoch,
        "test_macro_f1": result.test.get("macro_f1"),
        "test_accuracy": result.test.get("accuracy"),
    }
    _write_json(cfg.out / RETRAIN_FILE, summary)
    return RetrainResult(cfg.out, result.model_dir, holdout_path, summary, result)


def _train_config(cfg: RetrainConfig, labels: list[str]):
    """The current model's own training settings, pointed at its weights (warm) or its encoder."""
    from ..modeling import ModelMeta
    from ..training import TrainConfig

    meta = ModelMeta.load(cfg.model)  # also says clearly when --model is not a model folder
    if sorted(meta.labels) != sorted(labels):
        raise ConfigError(
            f"{cfg.model} predicts {meta.labels} but {cfg.base} is labelled {labels}: give the prepared folder the model was trained on"
        )
    saved = (
        TrainConfig.read_yaml(cfg.model / "train_config.yaml") if (cfg.model / "train_config.yaml").is_file() else {}
    )
    if not saved:  # a folder without its training settings: read text as the model does
        saved = {"max_length": meta.max_length, "truncation": meta.truncation, "long_text": meta.long_text}
    if cfg.from_scratch:
        encoder = saved.get("model") or meta.base_model
        settings = {**saved, "model": encoder}
    else:
        if meta.pooling != "cls":
            raise ConfigError(
                f"{cfg.model} is a frozen-encoder (mean-pool) model, which cannot be warm-started: pass --from-scratch"
            )
        if list(meta.labels) != labels:
            raise ConfigError(
                f"{cfg.model} orders its categories {meta.labels}, {cfg.base} {labels}: a warm start needs the same order; pass --from-scratch"
            )
        settings = {**saved, "model": str(cfg.model), "epochs": 1}
    if cfg.epochs is not None:
        settings["epochs"] = cfg.epochs
    settings.update({k: v for k, v in cfg.train_overrides.items() if v is not None})
    return TrainConfig.from_dict(settings)


def _base_rows(base_train, labels: list[str], train_config):
    """The base rows to train on: with max_train_rows, the stratified subset the current model
    itself trained on (training's own choice, same labels and seed), so the cap never drops a
    correction and a warm start sees the rows it learnt from."""
    import numpy as np

    from ..training.data import stratified_indices

    if not train_config.max_train_rows:
        return base_train
    ids = base_train["label"].map({c: i for i, c in enumerate(labels)}).to_numpy(dtype=np.int64)
    keep = stratified_indices(ids, train_config.max_train_rows, train_config.seed)
    return base_train.iloc[keep].reset_index(drop=True)


def _threshold(manifest: dict[str, Any]) -> float:
    from ..data.config import NEAR_DUPLICATE_THRESHOLD

    config = manifest.get("config") or {}
    value = config.get("near_duplicates", NEAR_DUPLICATE_THRESHOLD)
    # prepare ran with near-duplicates off: still drop copies (Jaccard ~1) so a correction replaces its base row
    return float(value) if value is not None else 0.95


def _clean_like_base(corrections, manifest: dict[str, Any]):
    """The base data's optional cleaning steps (prepare's own SQL), so texts compare alike."""
    from ..data.cleaning import clean_texts

    steps = tuple((manifest.get("config") or {}).get("clean") or ())
    if not steps:
        return corrections
    return corrections.assign(text=clean_texts(corrections["text"].tolist(), steps))


def _write_data(cfg: RetrainConfig, manifest: dict[str, Any], train) -> Path:
    data_dir = cfg.out / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    train.to_parquet(data_dir / "train.parquet", index=False)
    for split in ("val", "test"):
        shutil.copy2(cfg.base / f"{split}.parquet", data_dir / f"{split}.parquet")
    if (cfg.base / "taxonomy.yaml").is_file():
        shutil.copy2(cfg.base / "taxonomy.yaml", data_dir / "taxonomy.yaml")
    merged_manifest = {
        **manifest,
        "retrain": {"base": str(cfg.base), "feedback": _safe_source(cfg.feedback), "train_rows": len(train)},
    }
    _write_json(data_dir / "manifest.json", merged_manifest)
    return data_dir


def _write_holdout(out: Path, held_out) -> Path | None:
    if held_out.empty:
        return None
    frame = held_out.assign(date_received=held_out["corrected_at"].map(lambda t: t.isoformat()))
    path = out / HOLDOUT_FILE
    frame[["text", "label", "date_received", "ticket_id"]].to_parquet(path, index=False)
    return path


def _per_category(frame, labels: list[str]) -> dict[str, int]:
    counts = frame["label"].value_counts() if len(frame) else {}
    return {c: int(counts.get(c, 0)) for c in labels}


def _summary(cfg, manifest, train_config, corrections, train_corr, held_out, merged) -> dict[str, Any]:
    labels = list(manifest["labels"])
    train = merged.train
    span = lambda f: (  # noqa: E731
        [f["corrected_at"].min().isoformat(), f["corrected_at"].max().isoformat()] if len(f) else None
    )
    return {
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "inputs": {
            "base": str(cfg.base),
            "model": str(cfg.model),
            "feedback": _safe_source(cfg.feedback),
            "since": cfg.since.isoformat() if cfg.since else None,
        },
        "start": "from scratch (base encoder)" if cfg.from_scratch else "warm start from the current model",
        "counts": {
            "corrections": len(corrections),
            "corrections_train": len(train_corr),
            "corrections_held_out": len(held_out),
            **merged.counts,
        },
        "time_split": {"train": span(train_corr), "held_out": span(held_out)},
        "per_category": {
            "base_train": _per_category(train[train["origin"] == "base"], labels),
            "corrections_train": _per_category(train[train["origin"] == "correction"], labels),
            "corrections_held_out": _per_category(held_out, labels),
            "train": _per_category(train, labels),
        },
        "config": {
            **{k: (str(v) if isinstance(v, (Path, date)) else v) for k, v in asdict(cfg).items() if k != "feedback"},
            "feedback": _safe_source(cfg.feedback),
            "train": train_config.to_dict(),
        },
        "holdout_file": HOLDOUT_FILE if len(held_out) else None,
    }


def _safe_source(source: str) -> str:
    """A database URL without its password (retrain.json is shared), or the file path."""
    from .feedback import is_database_url

    if not is_database_url(source):
        return str(source)
    from sqlalchemy.engine import make_url

    try:
        return make_url(source).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL: keep only its scheme
        return source.split("://", 1)[0] + "://..."


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str))
