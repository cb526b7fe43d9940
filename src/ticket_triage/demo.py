"""The main job (`make run`): bundled data -> prepared splits -> fine-tuned model -> report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

from .training.config import TrainConfig

REPO_DATA_DIR = Path(__file__).resolve().parents[2] / "data"
# Both bundled labelled files: the older sample and the mostly-2023 one (data/README.md).
BUNDLED_FILES = ("cfpb_sample.csv.gz", "cfpb_more.csv.gz")

# Two profiles. "quick" fits in 20 minutes on 2 CPU cores: the two bundled files give about
# 8,500 training rows, and on a 2-core AMD EPYC without AMX (about 15 samples/s at 128 tokens)
# 2 epochs of a stratified 6,000 of them is what fits with room to spare (bench/RESULTS.md,
# "accuracy-quick"); "full" trains on every row as long as accuracy needs. Both fit the TF-IDF
# hybrid, which the model folder uses only where it beats both models alone on validation.
PROFILES = {
    "quick": dict(
        epochs=2,
        max_length=128,
        batch_size=16,
        lr=1e-4,
        class_weights="balanced",
        patience=2,
        ensemble="tfidf",
        max_train_rows=6000,
    ),
    "full": dict(
        epochs=6, max_length=256, batch_size=16, lr=8e-5, class_weights="balanced", patience=2, ensemble="tfidf"
    ),
}


def bundled_data_paths() -> list[Path]:
    from .errors import DataError

    paths = [REPO_DATA_DIR / name for name in BUNDLED_FILES]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"the bundled data {', '.join(missing)} is missing: pass --input with CFPB-format files")
    return paths


def run_demo(
    out: Path,
    *,
    input_paths: Sequence[Path] | None = None,
    full: bool = False,
    model: str | None = None,
    log: Callable[[str], None] = print,
):
    from .data import DataConfig, prepare_dataset
    from .training import train_model

    out = Path(out)
    start = time.perf_counter()
    data_dir, run_dir = out / "data", out  # runs/demo/model is the model folder
    inputs = list(input_paths or bundled_data_paths())
    log(f"[1/2] preparing {', '.join(str(p) for p in inputs)} -> {data_dir}")
    prepare_dataset(DataConfig(input=inputs, out_dir=data_dir))
    settings = dict(PROFILES["full" if full else "quick"])
    if model:
        settings["model"] = model
    config = TrainConfig(**settings)
    log(f"[2/2] fine-tuning ({'full' if full else 'quick'} profile) -> {run_dir}")
    result = train_model(config, data_dir, run_dir, resume=(run_dir / "checkpoint").exists(), log=log)
    baseline = result.metrics.get("baseline") or {}
    minutes = (time.perf_counter() - start) / 60
    log("")
    log(
        f"test macro-F1 {result.test['macro_f1']:.4f} vs TF-IDF baseline {baseline.get('macro_f1', float('nan')):.4f}; took {minutes:.1f} min"
    )
    for name in ("classification_report.md", "confusion_matrix.png", "loss_curves.png", "metrics.json"):
        log(f"  {run_dir / name}")
    log(f"  model folder: {result.model_dir}  (use it with `triage predict --model {result.model_dir} ...`)")
    return result
