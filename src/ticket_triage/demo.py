"""The main job (`make run`): bundled data -> prepared splits -> fine-tuned model -> report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from .training.config import TrainConfig

REPO_DATA = Path(__file__).resolve().parents[2] / "data" / "cfpb_sample.csv.gz"

# Two profiles. "quick" fits in 20 minutes on 2 CPU cores; "full" trains as long as accuracy needs.
PROFILES = {
    "quick": dict(epochs=3, max_length=128, batch_size=16, lr=1e-4, class_weights="balanced", patience=2),
    "full": dict(epochs=6, max_length=256, batch_size=16, lr=8e-5, class_weights="balanced", patience=2),
}


def bundled_data_path() -> Path:
    from .errors import DataError

    if not REPO_DATA.is_file():
        raise DataError(f"the bundled sample {REPO_DATA} is missing: pass --input with a CFPB-format file")
    return REPO_DATA


def run_demo(out: Path, *, input_path: Path | None = None, full: bool = False, model: str | None = None, log: Callable[[str], None] = print):
    from .data import DataConfig, prepare_dataset
    from .training import train_model

    out = Path(out)
    start = time.perf_counter()
    data_dir, run_dir = out / "data", out  # runs/demo/model is the model folder
    log(f"[1/2] preparing {input_path or bundled_data_path()} -> {data_dir}")
    prepare_dataset(DataConfig(input=input_path or bundled_data_path(), out_dir=data_dir))
    settings = dict(PROFILES["full" if full else "quick"])
    if model:
        settings["model"] = model
    config = TrainConfig(**settings)
    log(f"[2/2] fine-tuning ({'full' if full else 'quick'} profile) -> {run_dir}")
    result = train_model(config, data_dir, run_dir, resume=(run_dir / "checkpoint").exists(), log=log)
    baseline = result.metrics.get("baseline") or {}
    minutes = (time.perf_counter() - start) / 60
    log("")
    log(f"test macro-F1 {result.test['macro_f1']:.4f} vs TF-IDF baseline {baseline.get('macro_f1', float('nan')):.4f}; took {minutes:.1f} min")
    for name in ("classification_report.md", "confusion_matrix.png", "loss_curves.png", "metrics.json"):
        log(f"  {run_dir / name}")
    log(f"  model folder: {result.model_dir}  (use it with `triage predict --model {result.model_dir} ...`)")
    return result
