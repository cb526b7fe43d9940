"""Fine-tuning a transformer classifier, top to bottom.

    setup -> data -> model & optimizer -> (resume) -> epochs of [train steps, validation,
    keep best, early stop, checkpoint] -> test report

The run folder it writes:
    model/                   best checkpoint as a self-contained model folder (see modeling.py)
    checkpoint/              latest resumable state (removed when the run completes)
    train_config.yaml        the full TrainConfig
    metrics.json             per-epoch history, test metrics, baseline, timings
    classification_report.md, confusion_matrix.png, loss_curves.png
"""

from __future__ import annotations

import math
import os
import random
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import ConfigError
from ..evaluation.metrics import classification_metrics
from ..evaluation.report import save_loss_curves, write_json, write_report
from ..modeling import ModelMeta, build_model, load_tokenizer, resolve_model_source, save_model_folder
from ..tokenization import encode_texts, length_grouped_batches, pad_batch
from .checkpoint import CHECKPOINT_DIR, load_checkpoint, replace_dir_atomically, save_checkpoint
from .config import TrainConfig
from .data import balanced_class_weights, load_splits, stratified_subset


@dataclass
class TrainResult:
    out_dir: Path
    model_dir: Path
    history: list[dict[str, Any]]
    test: dict[str, Any]
    best_epoch: int
    metrics: dict[str, Any] = field(default_factory=dict)


class StopTraining(Exception):
    """Raised by an `on_epoch_end` callback (e.g. an Optuna pruner) to end a run early."""


# ---------------------------------------------------------------------------------------------
# Hardware: device and precision
# ---------------------------------------------------------------------------------------------
def pick_device(name: str = "auto"):
    import torch

    if name != "auto":
        if name.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} asked for, but no CUDA GPU is visible; use --device cpu or auto")
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_precision(precision: str, device) -> Any:
    """The autocast dtype, or None for fp32. bf16 where the hardware does it natively."""
    import torch

    if precision == "fp32":
        return None
    if precision == "fp16":
        return torch.float16
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and _cpu_has_native_bf16():
        return torch.bfloat16
    return None


def _cpu_has_native_bf16() -> bool:
    # AVX512-BF16 or AMX: bf16 matmuls run natively and about 1.5x faster than fp32 here.
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast_context(device, dtype):
    import torch

    return torch.autocast(device_type=device.type, dtype=dtype) if dtype is not None else nullcontext()


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------------
# Optimizer: AdamW without weight decay on biases and LayerNorm weights
# ---------------------------------------------------------------------------------------------
def param_groups(model, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        # Biases and normalisation gains are not "weights" in the regularisation sense.
        (no_decay if param.ndim < 2 or "LayerNorm" in name or "norm" in name.lower() else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# ---------------------------------------------------------------------------------------------
# Inference over an encoded split (validation, test, evaluate)
# ---------------------------------------------------------------------------------------------
def predict_logits(model, encoded: list[list[int]], pad_id: int, device, dtype=None, batch_size: int = 64, progress: str | None = None) -> np.ndarray:
    """Logits (N, C) for token-id lists, batched by length so padding stays small."""
    import torch
    from tqdm.auto import tqdm

    order = np.argsort([-len(ids) for ids in encoded], kind="stable")
    logits = np.zeros((len(encoded), model.config.num_labels), dtype=np.float32)
    model.eval()
    starts = range(0, len(order), batch_size)
    with torch.inference_mode(), autocast_context(device, dtype):
        for start in tqdm(starts, desc=progress, leave=False, disable=progress is None):
            rows = order[start : start + batch_size]
            input_ids, attention_mask = pad_batch([encoded[i] for i in rows], pad_id)
            out = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device))
            logits[rows] = out.logits.float().cpu().numpy()
    return logits


def cross_entropy(logits: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> float:
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    picked = -log_probs[np.arange(len(labels)), labels]
    if weights is None:
        return float(picked.mean())
    w = weights[labels]
    return float((picked * w).sum() / w.sum())


# ---------------------------------------------------------------------------------------------
# The training run
# ---------------------------------------------------------------------------------------------
def train_model(
    config: TrainConfig,
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    resume: bool = False,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
    on_step: Callable[[int], None] | None = None,
    log: Callable[[str], None] = print,
) -> TrainResult:
    import torch
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model_dir = out_dir / "model"
    if not resume and (out_dir / CHECKPOINT_DIR).exists():
        raise ConfigError(f"{out_dir} holds an unfinished run: pass --resume to continue it, or choose another --out")

    # -- setup ---------------------------------------------------------------------------------
    seed_everything(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    device = pick_device(config.device)
    amp_dtype = pick_precision(config.precision, device)
    # fp16 needs loss scaling to keep small gradients from flushing to zero; bf16 does not.
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None

    # -- data ----------------------------------------------------------------------------------
    splits, labels = load_splits(data_dir)
    train = splits["train"]
    if config.max_train_rows:
        train = stratified_subset(train, config.max_train_rows, config.seed)
    source = resolve_model_source(config.model)
    tokenizer = load_tokenizer(source)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    encode = lambda texts: encode_texts(tokenizer, texts, config.max_length, config.truncation)  # noqa: E731
    train_ids, val_ids = encode(train.texts), encode(splits["val"].texts)
    train_lengths = [len(ids) for ids in train_ids]

    # -- model, loss, optimizer, schedule ------------------------------------------------------
    model = build_model(source, labels, pooling=config.pooling, dropout=config.dropout, freeze_encoder=config.freeze_encoder).to(device)
    class_weights = balanced_class_weights(train.labels, len(labels)) if config.class_weights == "balanced" else None
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor(class_weights, dtype=torch.float32, device=device) if class_weights is not None else None)
    optimizer = torch.optim.AdamW(param_groups(model, config.weight_decay), lr=config.lr)
    batches_per_epoch = math.ceil(len(train_ids) / config.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / config.grad_accum)
    total_steps = steps_per_epoch * config.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)

    # Where the loop is: everything needed to continue after a kill, saved in each checkpoint.
    loop = {"epoch": 0, "batch": 0, "step": 0, "loss_sum": 0.0, "loss_batches": 0, "history": [], "best_f1": -1.0, "best_epoch": 0, "bad_epochs": 0, "train_seconds": 0.0, "train_samples": 0}
    if resume:
        restored = load_checkpoint(out_dir, model, optimizer, scheduler, scaler)
        if restored is None:
            log(f"no checkpoint in {out_dir}: starting from the beginning")
        else:
            loop = restored
            log(f"resuming at epoch {loop['epoch'] + 1}, batch {loop['batch']} (optimizer step {loop['step']})")
    config.save(out_dir / "train_config.yaml")
    effective_batch = config.batch_size * config.grad_accum
    log(f"training {len(train_ids)} tickets, {len(labels)} categories, on {device} ({_precision_name(amp_dtype)}), effective batch {effective_batch}, {total_steps} optimizer steps")

    def checkpoint() -> None:
        save_checkpoint(out_dir, model, optimizer, scheduler, loop, scaler)

    # -- epochs --------------------------------------------------------------------------------
    stopped_early = False
    while loop["epoch"] < config.epochs:
        epoch = loop["epoch"]
        # The batch order is a pure function of (seed, epoch): a resumed run sees the same order.
        order_rng = torch.Generator().manual_seed(config.seed * 1000 + epoch)
        if config.group_by_length:
            batches = length_grouped_batches(train_lengths, config.batch_size, generator=order_rng)
        else:
            perm = torch.randperm(len(train_ids), generator=order_rng).tolist()
            batches = [perm[i : i + config.batch_size] for i in range(0, len(perm), config.batch_size)]

        model.train()
        bar = tqdm(total=len(batches), initial=loop["batch"], desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch", leave=False)
        tick = time.perf_counter()
        for b in range(loop["batch"], len(batches)):
            rows = batches[b]
            input_ids, attention_mask = pad_batch([train_ids[i] for i in rows], pad_id)  # (B, T) each
            targets = torch.as_tensor(train.labels[rows], device=device)
            with autocast_context(device, amp_dtype):
                logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits  # (B, C)
            loss = loss_fn(logits.float(), targets)
            # Average over the accumulation window, so the step size does not grow with it.
            scaled = loss / config.grad_accum
            (scaler.scale(scaled) if scaler else scaled).backward()
            loop["loss_sum"] += float(loss.detach())
            loop["loss_batches"] += 1
            loop["train_samples"] += len(rows)
            loop["batch"] = b + 1

            last_of_epoch = b + 1 == len(batches)
            if loop["batch"] % config.grad_accum == 0 or last_of_epoch:
                if scaler:
                    scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                if scaler:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                loop["step"] += 1
                now = time.perf_counter()
                loop["train_seconds"] += now - tick
                tick = now
                bar.set_postfix(loss=f"{loop['loss_sum'] / loop['loss_batches']:.4f}", samples_s=f"{loop['train_samples'] / max(loop['train_seconds'], 1e-9):.1f}")
                if config.checkpoint_every and loop["step"] % config.checkpoint_every == 0 and not last_of_epoch:
                    checkpoint()
                if on_step:
                    on_step(loop["step"])
            bar.update(1)
        bar.close()
        loop["train_seconds"] += time.perf_counter() - tick

        # -- validation, best model, early stopping ------------------------------------------
        val_logits = predict_logits(model, val_ids, pad_id, device, amp_dtype, config.eval_batch_size)
        val = classification_metrics(splits["val"].labels, val_logits.argmax(1), labels)
        record = {
            "epoch": epoch + 1,
            "train_loss": loop["loss_sum"] / max(loop["loss_batches"], 1),
            "val_loss": cross_entropy(val_logits, splits["val"].labels, class_weights),
            "val_accuracy": val["accuracy"],
            "val_macro_f1": val["macro_f1"],
            "lr": scheduler.get_last_lr()[0],
        }
        loop["history"].append(record)
        improved = record["val_macro_f1"] > loop["best_f1"]
        if improved:
            loop.update(best_f1=record["val_macro_f1"], best_epoch=epoch + 1, bad_epochs=0)
            _save_best(model, tokenizer, model_dir, labels, config, data_dir)
        else:
            loop["bad_epochs"] += 1
        log(
            f"epoch {epoch + 1}: train loss {record['train_loss']:.4f}, val loss {record['val_loss']:.4f}, "
            f"val acc {record['val_accuracy']:.4f}, val macro-F1 {record['val_macro_f1']:.4f}{'  (best)' if improved else ''}"
        )
        loop.update(epoch=epoch + 1, batch=0, loss_sum=0.0, loss_batches=0)
        checkpoint()
        if on_epoch_end:
            on_epoch_end(record)  # may raise StopTraining (a pruner)
        if loop["bad_epochs"] >= config.patience:
            log(f"early stop: no better validation macro-F1 for {config.patience} epoch(s)")
            stopped_early = True
            break

    # -- test report on the best checkpoint ----------------------------------------------------
    result = finish_run(config, out_dir, model_dir, splits, labels, train, loop, device, amp_dtype, stopped_early, log)
    shutil.rmtree(out_dir / CHECKPOINT_DIR, ignore_errors=True)
    return result


def _precision_name(dtype) -> str:
    return "fp32" if dtype is None else str(dtype).replace("torch.", "").replace("bfloat16", "bf16").replace("float16", "fp16")


def _save_best(model, tokenizer, model_dir: Path, labels: list[str], config: TrainConfig, data_dir) -> None:
    from ..modeling import load_folder_taxonomy

    meta = ModelMeta(labels=list(labels), max_length=config.max_length, truncation=config.truncation, pooling=config.pooling, base_model=config.model)
    tmp = model_dir.with_name(model_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    save_model_folder(model, tokenizer, tmp, meta, load_folder_taxonomy(data_dir))
    config.save(tmp / "train_config.yaml")
    replace_dir_atomically(tmp, model_dir)


def finish_run(config, out_dir, model_dir, splits, labels, train, loop, device, amp_dtype, stopped_early, log) -> TrainResult:
    """Score the best checkpoint on the test split, fit calibration and the baseline, write reports."""
    from ..modeling import load_model_folder

    model, tokenizer, meta = load_model_folder(model_dir, device=str(device))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    test_split = splits["test"]
    test_ids = encode_texts(tokenizer, test_split.texts, meta.max_length, meta.truncation)
    test_logits = predict_logits(model, test_ids, pad_id, device, amp_dtype, config.eval_batch_size, progress="test")
    test = classification_metrics(test_split.labels, test_logits.argmax(1), labels)

    baseline = None
    if config.baseline:
        from ..evaluation.baseline import run_baseline

        baseline = run_baseline(train.texts, train.labels, test_split.texts, test_split.labels, labels, config.seed)

    calibration = None
    if config.calibrate:
        calibration = _calibrate(model, tokenizer, meta, model_dir, splits["val"], pad_id, device, amp_dtype, config, log)

    notes = [f"best epoch {loop['best_epoch']} of {len(loop['history'])}" + (" (early stop)" if stopped_early else "")]
    metrics = {
        "history": loop["history"],
        "best_epoch": loop["best_epoch"],
        "test": test,
        "baseline": baseline,
        "calibration": calibration,
        "train_rows": len(train),
        "wall_time_s": round(loop["train_seconds"], 2),
        "train_samples_per_s": round(loop["train_samples"] / max(loop["train_seconds"], 1e-9), 2),
        "device": str(device),
        "precision": _precision_name(amp_dtype),
        "config": config.to_dict(),
    }
    write_json(out_dir / "metrics.json", metrics)
    write_json(model_dir / "metrics.json", metrics)
    write_report(out_dir, test, title="Test split: classification report", baseline_macro_f1=baseline["macro_f1"] if baseline else None, notes=notes)
    save_loss_curves(out_dir, loop["history"])
    _log_mlflow(config, out_dir, metrics, log)
    summary = f"test macro-F1 {test['macro_f1']:.4f}, accuracy {test['accuracy']:.4f}"
    if baseline:
        summary += f" (TF-IDF + SVM baseline macro-F1 {baseline['macro_f1']:.4f})"
    log(summary)
    return TrainResult(out_dir=out_dir, model_dir=model_dir, history=loop["history"], test=test, best_epoch=loop["best_epoch"], metrics=metrics)


def _calibrate(model, tokenizer, meta, model_dir, val_split, pad_id, device, amp_dtype, config, log) -> dict[str, Any] | None:
    """Temperature scaling on the validation split; stored in the model folder for every backend."""
    try:
        from ..calibration import expected_calibration_error, fit_temperature
    except ImportError:  # calibration module not available in this build
        return None
    val_ids = encode_texts(tokenizer, val_split.texts, meta.max_length, meta.truncation)
    logits = predict_logits(model, val_ids, pad_id, device, amp_dtype, config.eval_batch_size)
    temperature = float(fit_temperature(logits, val_split.labels))

    def probs(t: float) -> np.ndarray:
        z = logits / t
        z = np.exp(z - z.max(1, keepdims=True))
        return z / z.sum(1, keepdims=True)

    report = {
        "temperature": temperature,
        "val_ece_before": float(expected_calibration_error(probs(1.0), val_split.labels)),
        "val_ece_after": float(expected_calibration_error(probs(temperature), val_split.labels)),
    }
    meta.temperature = temperature
    meta.save(model_dir)
    log(f"calibration: temperature {temperature:.3f}, validation ECE {report['val_ece_before']:.4f} -> {report['val_ece_after']:.4f}")
    return report


def _log_mlflow(config: TrainConfig, out_dir: Path, metrics: dict[str, Any], log) -> None:
    if not (config.mlflow or os.environ.get("MLFLOW_TRACKING_URI")):
        return
    try:
        import mlflow
    except ImportError:
        raise ConfigError("MLflow logging asked for, but mlflow is not installed: pip install 'ticket-triage[mlflow]'") from None
    with mlflow.start_run(run_name=out_dir.name):
        mlflow.log_params({k: v for k, v in config.to_dict().items() if v is not None})
        for record in metrics["history"]:
            mlflow.log_metrics({k: float(v) for k, v in record.items() if k != "epoch"}, step=record["epoch"])
        mlflow.log_metrics({"test_macro_f1": metrics["test"]["macro_f1"], "test_accuracy": metrics["test"]["accuracy"]})
        for name in ("metrics.json", "classification_report.md", "confusion_matrix.png", "loss_curves.png", "train_config.yaml"):
            if (out_dir / name).exists():
                mlflow.log_artifact(str(out_dir / name))
    log("logged the run to MLflow")
