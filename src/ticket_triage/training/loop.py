"""Fine-tuning a transformer classifier, top to bottom: this module only trains.

    setup -> data -> model & optimizer -> (resume) -> epochs of [train steps, validation,
    keep best, early stop, checkpoint]

What it writes into the run folder:
    model/                   best epoch as a self-contained model folder (see modeling.py)
    checkpoint/              latest resumable state (removed when the run completes, by run.py)
    train_config.yaml        the full TrainConfig

Validation scores through `inference.Classifier` (the model in memory), as every other scorer
does. The test report, calibration and the hybrid are `finish.py`'s; `run.train_model` does both.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import time
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..calibration import nll
from ..data.io import Split, load_splits
from ..errors import ConfigError
from ..inference.classifier import Classifier
from ..modeling import ModelMeta, build_model, load_tokenizer, pick_device, resolve_model_source, save_model_folder
from ..provenance import training_provenance
from ..tokenization import encode_for, group_windows, length_grouped_batches, pad_batch, pool_windows
from .checkpoint import (
    CHECKPOINT_DIR,
    LoopState,
    check_resume_config,
    read_checkpoint,
    replace_dir_atomically,
    restore_checkpoint,
    save_checkpoint,
)
from .config import TrainConfig
from .data import balanced_class_weights, stratified_indices, weighted_cross_entropy
from .distributed import DistContext, barrier, gather_rows, init_distributed, mean_across, shard
from .targets import UNLABELLED, SoftTargets, distillation_loss


@dataclass
class TrainedRun:
    """What the loop hands on to `finish.finish_run`: where the best epoch is and how training went."""

    config: TrainConfig
    out_dir: Path
    data_dir: Path
    splits: dict[str, Split]
    labels: list[str]
    train_rows: int
    state: LoopState
    device: Any  # torch.device
    amp_dtype: Any  # torch dtype of autocast, or None for fp32
    stopped_early: bool
    run_info: dict[str, Any]
    ctx: DistContext

    @property
    def model_dir(self) -> Path:
        return self.out_dir / "model"


@dataclass
class _Hooks:
    """The caller's callbacks: `on_epoch_end(record)` may raise to end the run (the tuner's pruner
    raises optuna.TrialPruned); `on_step(step)` sees every optimizer step."""

    on_epoch_end: Callable[[dict[str, Any]], None] | None
    on_step: Callable[[int], None] | None
    log: Callable[[str], None]
    progress: bool


@dataclass
class _Run:
    """Everything the epochs share: built once in `train_loop`, read by the short steps below."""

    config: TrainConfig
    out_dir: Path
    data_dir: Path
    ctx: DistContext
    device: Any
    amp_dtype: Any
    scaler: Any
    model: Any  # DDP-wrapped under torchrun
    raw_model: Any  # the plain module: what is saved and validated
    tokenizer: Any
    optimizer: Any
    scheduler: Any
    loss_fn: Any
    class_weights: np.ndarray | None
    class_weight_t: Any
    train: Split
    teacher: np.ndarray | None
    train_docs: list[list[list[int]]]
    train_lengths: list[int]
    pad_id: int
    global_batch: int
    labels: list[str]
    splits: dict[str, Split]
    soft_targets: SoftTargets | None
    state: LoopState
    run_info: dict[str, Any] = field(default_factory=dict)  # facts saved beside the config: world size, effective batch
    mean_row_weight: float = 1.0  # of the training rows' `weight` column, when they have one
    provenance: dict[str, Any] | None = None  # versions, data hash, git commit: for each saved model folder


# ---------------------------------------------------------------------------------------------
# Hardware: device and precision
# ---------------------------------------------------------------------------------------------
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
    from ..hardware import has_native_bf16  # one reader of /proc/cpuinfo, shared with inference

    return has_native_bf16()


def autocast_context(device, dtype):
    import torch

    return torch.autocast(device_type=device.type, dtype=dtype) if dtype is not None else nullcontext()


@contextmanager
def deterministic_kernels(device, enabled: bool = True):
    """Deterministic CUDA kernels while the run lasts; yields the attention implementation to use.

    The seed fixes the data order, the new head's weights and dropout, and CPU runs repeat exactly
    with that alone. On a GPU they still drift: some kernels (cuBLAS split-K reductions, the
    backward passes of embeddings and of fused attention) add partial sums in whatever order
    threads finish. This picks deterministic versions of those and plain ("eager") attention,
    whose backward pass is ordinary matmuls. Deterministic mode is process-wide, so the flags
    found on entry are put back on exit. Yields None (nothing changed) off CUDA or when disabled."""
    import torch

    if not (enabled and device.type == "cuda"):
        yield None
        return
    # cuBLAS needs a fixed workspace per handle to reduce in a fixed order; read when it starts.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    # warn_only: an op with no deterministic version warns, naming itself, instead of failing the run.
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield "eager"
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2], saved[3]


def to_device(tensor, device):
    """A host tensor on `device`. To CUDA through pinned memory, without blocking: a copy from
    ordinary (pageable) memory makes the host wait until the GPU has run everything queued."""
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------------
# Optimizer: AdamW without weight decay on biases and LayerNorm weights
# ---------------------------------------------------------------------------------------------
def param_groups(model, weight_decay: float, lr: float, layer_lr_decay: float = 1.0) -> list[dict[str, Any]]:
    """AdamW groups: no decay on biases and norms; with layer_lr_decay < 1, lower layers learn slower.

    Layer-wise decay (Howard & Ruder 2018; Clark et al. 2020): the head keeps `lr`, the top
    encoder layer gets lr * d, the next lr * d^2, ... and the embeddings lr * d^(L+1), so the
    general features at the bottom move least while the task-specific top adapts.
    """
    depth_of = _layer_depths(model) if layer_lr_decay < 1.0 else None
    groups: dict[tuple[int, bool], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        # Biases and normalisation gains are not "weights" in the regularisation sense.
        decays = not (param.ndim < 2 or "LayerNorm" in name or "norm" in name.lower())
        scale_power = depth_of(name) if depth_of else 0
        groups.setdefault((scale_power, decays), []).append(param)
    return [
        {"params": params, "weight_decay": weight_decay if decays else 0.0, "lr": lr * layer_lr_decay**power}
        for (power, decays), params in sorted(groups.items(), key=lambda kv: (kv[0][0], not kv[0][1]))
    ]


def _layer_depths(model):
    """name -> how many times the layer-wise decay applies: 0 for the head, L+1 for the embeddings."""
    import re

    config = getattr(model, "config", None)
    n_layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layers", None)
    if not n_layers:
        from ..errors import ConfigError

        raise ConfigError(
            "layer_lr_decay needs a model whose config gives num_hidden_layers; set it to 1 for this model"
        )
    layer_re = re.compile(r"\.layers?\.(\d+)\.")

    def depth(name: str) -> int:
        found = layer_re.search(name)
        if found:
            return n_layers - int(found.group(1))
        # MPNet's relative position bias is one table shared by every layer, below them all.
        if "embeddings" in name or "relative_attention_bias" in name:
            return n_layers + 1
        return 0  # classifier, pooler and anything above the encoder

    return depth


# ---------------------------------------------------------------------------------------------
# The training run
# ---------------------------------------------------------------------------------------------
def train_loop(
    config: TrainConfig,
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    run_scope: ExitStack,
    resume: bool = False,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
    on_step: Callable[[int], None] | None = None,
    log: Callable[[str], None] = print,
    progress: bool = True,
    soft_targets: SoftTargets | None = None,
) -> TrainedRun:
    """Train, keeping the best epoch's model folder in `out_dir/model`. Process-wide settings made
    for the run are entered on `run_scope`, which the caller closes when the run is over.

    With `soft_targets` (from `triage distill`) the loss also pulls the model towards a teacher's
    probabilities, and the teacher's unlabelled texts join the training rows (targets.py)."""
    out_dir, data_dir = Path(out_dir), Path(data_dir)
    if not resume and (out_dir / CHECKPOINT_DIR).exists():
        raise ConfigError(f"{out_dir} holds an unfinished run: pass --resume to continue it, or choose another --out")
    ctx = init_distributed(config.device)  # one process unless started by torchrun
    hooks = _Hooks(on_epoch_end, on_step, log if ctx.is_main else _silent, progress)  # one voice: rank 0
    if ctx.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    run = _build_run(
        config,
        data_dir=data_dir,
        out_dir=out_dir,
        ctx=ctx,
        run_scope=run_scope,
        resume=resume,
        soft_targets=soft_targets,
        hooks=hooks,
    )
    stopped_early = run.state.bad_epochs >= config.patience  # resumed after its early stop, before its report
    meta = model_meta(config, run.labels)
    val_clf = Classifier.from_model(run.raw_model, run.tokenizer, meta, device=run.device, dtype=run.amp_dtype)
    while not stopped_early and run.state.epoch < config.epochs:
        _train_epoch(run, hooks)
        record = _validate(run, val_clf, hooks)
        if hooks.on_epoch_end:
            hooks.on_epoch_end(record)
        if run.state.bad_epochs >= config.patience:
            hooks.log(f"early stop: no better validation macro-F1 for {config.patience} epoch(s)")
            stopped_early = True
    barrier(ctx)
    return TrainedRun(
        config=config,
        out_dir=out_dir,
        data_dir=data_dir,
        splits=run.splits,
        labels=run.labels,
        train_rows=len(run.train),
        state=run.state,
        device=run.device,
        amp_dtype=run.amp_dtype,
        stopped_early=stopped_early,
        run_info=run.run_info,
        ctx=ctx,
    )


def _build_run(
    config: TrainConfig,
    *,
    data_dir: Path,
    out_dir: Path,
    ctx: DistContext,
    run_scope: ExitStack,
    resume: bool,
    soft_targets,
    hooks: _Hooks,
) -> _Run:
    """Setup, data, model, optimizer and schedule; the checkpoint's state put back on resume."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    seed_everything(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    device = (
        torch.device(f"cuda:{ctx.local_rank}")
        if ctx.backend == "nccl"
        else pick_device("cpu" if ctx.enabled else config.device)
    )
    amp_dtype = pick_precision(config.precision, device)
    attention = run_scope.enter_context(deterministic_kernels(device, config.deterministic))
    # fp16 needs loss scaling to keep small gradients from flushing to zero; bf16 does not.
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None

    splits, labels = load_splits(data_dir)
    train, teacher = training_rows(splits["train"], config, soft_targets)  # teacher: (N, C) log-probs, or None
    source = resolve_model_source(config.model)
    tokenizer = load_tokenizer(source)
    # Each text's windows: one when truncating, up to max_chunks with --long-text chunks.
    train_docs = group_windows(*encode_for(tokenizer, train.texts, config))

    model = build_model(
        source,
        labels,
        pooling=config.pooling,
        dropout=config.dropout,
        freeze_encoder=config.freeze_encoder,
        attn_implementation=attention,
    ).to(device)
    torch.manual_seed(config.seed + ctx.rank)  # the same weights everywhere, a different dropout stream per process
    class_weights = (
        balanced_class_weights(train.labels, len(labels), train.weights) if config.class_weights == "balanced" else None
    )
    class_weight_t = (
        torch.tensor(class_weights, dtype=torch.float32, device=device) if class_weights is not None else None
    )

    saved = read_checkpoint(out_dir) if resume else None  # read once: its global batch shapes the schedule
    if saved is not None:
        check_resume_config(saved["config"], config, out_dir)
    per_device_batch = _per_device_batch(config, ctx, saved["loop"].global_batch if saved else None, hooks.log)
    global_batch = per_device_batch * ctx.world_size  # one optimizer micro-step sees this many rows
    lr = config.lr * _lr_scale(config.lr_scaling, ctx.world_size)
    # On CUDA one fused kernel updates every parameter, instead of a few launches per tensor.
    optimizer = torch.optim.AdamW(
        param_groups(model, config.weight_decay, lr, config.layer_lr_decay), lr=lr, fused=device.type == "cuda"
    )
    total_steps = math.ceil(math.ceil(len(train_docs) / global_batch) / config.grad_accum) * config.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)

    state = LoopState()
    if resume and saved is None:
        hooks.log(f"no checkpoint in {out_dir}: starting from the beginning")
    elif saved is not None:
        state = restore_checkpoint(out_dir, saved, model, optimizer, scheduler, scaler)
        if ctx.rank:  # the checkpoint holds rank 0's RNG; other ranks need streams of their own
            torch.manual_seed(config.seed + ctx.rank + 7919 * state.step)
        hooks.log(f"resuming at epoch {state.epoch + 1}, batch {state.batch} (optimizer step {state.step})")
    state.global_batch = global_batch
    wrapped = model
    if ctx.enabled:
        from torch.nn.parallel import DistributedDataParallel

        wrapped = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    run = _Run(
        config=config,
        out_dir=out_dir,
        data_dir=data_dir,
        ctx=ctx,
        device=device,
        amp_dtype=amp_dtype,
        scaler=scaler,
        model=wrapped,
        raw_model=model,
        tokenizer=tokenizer,
        optimizer=optimizer,
        scheduler=scheduler,
        loss_fn=torch.nn.CrossEntropyLoss(weight=class_weight_t),
        class_weights=class_weights,
        class_weight_t=class_weight_t,
        train=train,
        teacher=teacher,
        train_docs=train_docs,
        train_lengths=[sum(len(ids) for ids in doc) for doc in train_docs],
        pad_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
        global_batch=global_batch,
        labels=labels,
        splits=splits,
        soft_targets=soft_targets,
        state=state,
        mean_row_weight=float(train.weights.mean()) if train.weights is not None else 1.0,
    )
    run.run_info = {
        "world_size": ctx.world_size,
        "backend": ctx.backend,
        "per_device_batch": per_device_batch,
        "effective_batch_size": global_batch * config.grad_accum,
        "lr_scaling": config.lr_scaling,
        "effective_lr": lr,
        "deterministic_kernels": attention is not None,
    }
    if ctx.is_main:
        config.save(out_dir / "train_config.yaml", run=run.run_info)
        run.provenance = training_provenance(data_dir)
    hooks.log(_start_line(run, total_steps, attention))
    return run


def _start_line(run: _Run, total_steps: int, attention) -> str:
    config, ctx, info = run.config, run.ctx, run.run_info
    soft = run.soft_targets
    return (
        f"training {len(run.train_docs)} tickets{_windows_note(config, run.train_docs)}, {len(run.labels)} categories, on {run.device} ({_precision_name(run.amp_dtype)}{', deterministic kernels' if attention else ''}) x {ctx.world_size} process(es); "
        f"effective batch {info['per_device_batch']} per device x {ctx.world_size} x {config.grad_accum} accumulation = {info['effective_batch_size']}; "
        f"lr {info['effective_lr']:g} (scaling rule: {config.lr_scaling}); {total_steps} optimizer steps"
        + (
            f"; distilling (temperature {soft.temperature:g}, alpha {soft.alpha:g}, {len(soft.extra_texts)} unlabelled texts)"
            if soft
            else ""
        )
    )


def _train_epoch(run: _Run, hooks: _Hooks) -> None:
    """One epoch of optimizer steps from where the state says, with checkpoints every `checkpoint_every` steps."""
    import torch
    from tqdm.auto import tqdm

    config, ctx, state = run.config, run.ctx, run.state
    batches = epoch_batches(run.train_lengths, run.global_batch, config, state.epoch, ctx)
    # The loss is summed where it is computed: reading it back every batch would make the host wait
    # for a GPU instead of queueing the next batch's kernels. It is read for the progress bar every
    # `postfix_every` steps, and at checkpoints and epoch ends.
    running_loss = torch.zeros((), device=run.device)
    postfix_every = _steps_between_loss_reads(run.device)
    run.model.train()
    bar = tqdm(
        total=len(batches),
        initial=state.batch,
        desc=f"epoch {state.epoch + 1}/{config.epochs}",
        unit="batch",
        leave=False,
        disable=not (hooks.progress and ctx.is_main),
    )
    tick = time.perf_counter()
    for b in range(state.batch, len(batches)):
        last_of_epoch = b + 1 == len(batches)
        steps_now = (b + 1) % config.grad_accum == 0 or last_of_epoch
        running_loss += _forward_backward(run, batches[b], steps_now)
        state.loss_batches += 1
        state.train_samples += len(batches[b]) * ctx.world_size
        state.batch = b + 1
        if steps_now:
            _optimizer_step(run)
            now = time.perf_counter()
            state.train_seconds += now - tick
            tick = now
            if state.step % postfix_every == 0:
                _settle_loss(state, running_loss)
                bar.set_postfix(
                    loss=f"{state.loss_sum / state.loss_batches:.4f}",
                    samples_s=f"{state.train_samples / max(state.train_seconds, 1e-9):.1f}",
                )
            if config.checkpoint_every and state.step % config.checkpoint_every == 0 and not last_of_epoch:
                _settle_loss(state, running_loss)
                _checkpoint(run)
            if hooks.on_step:
                hooks.on_step(state.step)
        bar.update(1)
    bar.close()
    _settle_loss(state, running_loss)  # also waits for the GPU, so the epoch's queued work counts as training time
    state.train_seconds += time.perf_counter() - tick


def _forward_backward(run: _Run, rows: list[int], steps_now: bool):
    """Loss of one micro-batch (detached, on the device), its gradients accumulated."""
    import torch

    config, device = run.config, run.device
    windows, owners = _batch_windows(run.train_docs, rows)  # B texts -> W >= B windows
    input_ids, attention_mask = pad_batch(windows, run.pad_id)  # (W, T) each
    targets = to_device(torch.as_tensor(run.train.labels[rows]), device)
    # Under DDP, gradients are all-reduced only on the micro-batch that steps the optimizer.
    with run.model.no_sync() if run.ctx.enabled and not steps_now else nullcontext():
        with autocast_context(device, run.amp_dtype):
            logits = run.model(
                input_ids=to_device(input_ids, device), attention_mask=to_device(attention_mask, device)
            ).logits  # (W, C)
        # One row per text (a no-op with one window each): the loss is on the pooled logits.
        logits = pool_windows(
            logits.float(), to_device(torch.as_tensor(owners), device), len(rows), config.chunk_pool
        )  # (B, C)
        if run.teacher is None and run.train.weights is not None:
            # per-row weights (`triage retrain`: corrections count more), normalised by the split's
            # mean weight so the step size matches an unweighted run's
            row_weights = to_device(torch.as_tensor(run.train.weights[rows]), device)
            loss = weighted_cross_entropy(logits, targets, row_weights, run.class_weight_t, run.mean_row_weight)
        elif run.teacher is None:
            loss = run.loss_fn(logits, targets)
        else:
            soft = to_device(torch.as_tensor(run.teacher[rows]), device)  # (B, C) teacher log-probs
            loss = distillation_loss(
                logits, targets, soft, run.soft_targets.temperature, run.soft_targets.alpha, run.class_weight_t
            )
        # Average over the accumulation window, so the step size does not grow with it.
        scaled = loss / config.grad_accum
        (run.scaler.scale(scaled) if run.scaler else scaled).backward()
    return loss.detach()


def _optimizer_step(run: _Run) -> None:
    import torch

    if run.scaler:
        run.scaler.unscale_(run.optimizer)
    torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.config.max_grad_norm)
    if run.scaler:
        run.scaler.step(run.optimizer)
        run.scaler.update()
    else:
        run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.state.step += 1


def _settle_loss(state: LoopState, running_loss) -> None:
    state.loss_sum += float(running_loss)
    running_loss.zero_()


def _checkpoint(run: _Run) -> None:
    if run.ctx.is_main:
        save_checkpoint(
            run.out_dir, run.raw_model, run.optimizer, run.scheduler, run.state, run.config.to_dict(), run.scaler
        )


def _validate(run: _Run, val_clf: Classifier, hooks: _Hooks) -> dict[str, Any]:
    """Validation over the whole split; keeps the best model folder, counts epochs without gain, checkpoints."""
    config, state, val = run.config, run.state, run.splits["val"]
    logits = _sharded_logits(val_clf, val.texts, config.eval_batch_size, run.ctx)
    record = {
        "epoch": state.epoch + 1,
        "train_loss": mean_across(run.ctx, state.loss_sum / max(state.loss_batches, 1)),
        "val_loss": nll(logits, val.labels, weights=run.class_weights),
        **_accuracy_and_macro_f1(val.labels, logits.argmax(1), len(run.labels)),
        "lr": run.scheduler.get_last_lr()[0],
    }
    state.history.append(record)
    improved = record["val_macro_f1"] > state.best_f1
    if improved:
        state.best_f1, state.best_epoch, state.bad_epochs = record["val_macro_f1"], state.epoch + 1, 0
        if run.ctx.is_main:
            _save_best(run)
    else:
        state.bad_epochs += 1
    hooks.log(
        f"epoch {record['epoch']}: train loss {record['train_loss']:.4f}, val loss {record['val_loss']:.4f}, "
        f"val acc {record['val_accuracy']:.4f}, val macro-F1 {record['val_macro_f1']:.4f}{'  (best)' if improved else ''}"
    )
    state.epoch, state.batch, state.loss_sum, state.loss_batches = state.epoch + 1, 0, 0.0, 0
    _checkpoint(run)
    return record


def _accuracy_and_macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict[str, float]:
    # Only the two numbers early stopping needs; the full report is evaluation's, after training.
    from sklearn.metrics import accuracy_score, f1_score

    f1 = f1_score(y_true, y_pred, labels=list(range(n_classes)), average="macro", zero_division=0)
    return {"val_accuracy": float(accuracy_score(y_true, y_pred)), "val_macro_f1": float(f1)}


def _sharded_logits(clf: Classifier, texts: list[str], batch_size: int, ctx: DistContext) -> np.ndarray:
    """Each process scores every world_size-th text; the full (N, C) logits are gathered on all."""
    if not ctx.enabled:
        return clf.predict_logits(texts, batch_size)
    mine = np.arange(ctx.rank, len(texts), ctx.world_size)
    part = clf.predict_logits([texts[i] for i in mine], batch_size)
    return gather_rows(ctx, mine, part, len(texts))


def training_rows(
    train: Split, config: TrainConfig, soft_targets: SoftTargets | None
) -> tuple[Split, np.ndarray | None]:
    """The rows a run trains on, and their teacher log-probabilities when distilling.

    --max-train-rows takes a stratified subset (the teacher's rows with it); a distillation's
    unlabelled texts follow, labelled -1 so that only the teacher's targets teach them."""
    teacher = None if soft_targets is None else np.asarray(soft_targets.train, dtype=np.float32)
    if teacher is not None and len(teacher) != len(train):
        raise ConfigError(
            f"the teacher's targets cover {len(teacher)} training rows but the split has {len(train)}: recompute them for this data"
        )
    if config.max_train_rows:
        keep = stratified_indices(train.labels, config.max_train_rows, config.seed)
        weights = train.weights[keep] if train.weights is not None else None
        train = Split([train.texts[i] for i in keep], train.labels[keep], weights)
        teacher = teacher[keep] if teacher is not None else None
    if soft_targets is not None and soft_targets.extra_texts:
        unlabelled = np.full(len(soft_targets.extra_texts), UNLABELLED, dtype=np.int64)
        weights = (
            np.concatenate([train.weights, np.ones(len(unlabelled), dtype=np.float32)])
            if train.weights is not None
            else None
        )
        train = Split(train.texts + list(soft_targets.extra_texts), np.concatenate([train.labels, unlabelled]), weights)
        teacher = np.concatenate([teacher, np.asarray(soft_targets.extra, dtype=np.float32)])
    return train, teacher


def _steps_between_loss_reads(device) -> int:
    # On a CPU reading the loss costs nothing; on a GPU each read is a wait.
    return 1 if device.type == "cpu" else 25


def _silent(*_args, **_kwargs) -> None:
    pass


def epoch_batches(
    lengths: list[int], global_batch: int, config: TrainConfig, epoch: int, ctx: DistContext
) -> list[list[int]]:
    """This process's batches for one epoch: the same on every run with the same seed and epoch."""
    import torch
    from torch.utils.data import DistributedSampler

    if config.group_by_length:
        order_rng = torch.Generator().manual_seed(config.seed + epoch)
        batches = length_grouped_batches(lengths, global_batch, generator=order_rng)
        # Each process takes its strided share of every global batch (never an empty one).
        return [shard(ctx, batch) or batch[:1] for batch in batches]
    sampler = DistributedSampler(
        range(len(lengths)), num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=config.seed
    )
    sampler.set_epoch(epoch)  # a different shuffle every epoch, the same on every process
    indices = list(sampler)
    per_device = global_batch // ctx.world_size
    return [indices[i : i + per_device] for i in range(0, len(indices), per_device)]


def _batch_windows(docs: list[list[list[int]]], rows) -> tuple[list[list[int]], list[int]]:
    """The windows of texts `rows`, and for each window its position in `rows`."""
    windows = [ids for doc_index in rows for ids in docs[doc_index]]
    owners = [j for j, doc_index in enumerate(rows) for _ in docs[doc_index]]
    return windows, owners


def _windows_note(config: TrainConfig, docs: list[list[list[int]]]) -> str:
    if config.long_text != "chunks":
        return ""
    n = sum(len(doc) for doc in docs)
    return f" read whole as {n} windows of {config.max_length} tokens ({n / max(len(docs), 1):.2f} per ticket, at most {config.max_chunks}; a batch of {config.batch_size} tickets runs up to {config.batch_size * config.max_chunks} windows; {config.chunk_pool} pooling)"


def _lr_scale(rule: str, world_size: int) -> float:
    # Linear (Goyal et al. 2017) or square-root scaling of the peak rate with the number of processes.
    return {"none": 1.0, "linear": float(world_size), "sqrt": math.sqrt(world_size)}[rule]


def _per_device_batch(config: TrainConfig, ctx: DistContext, saved: int | None, log) -> int:
    """On resume under another number of processes, keep the checkpoint's global batch `saved`."""
    if not saved or saved == config.batch_size * ctx.world_size:
        return config.batch_size
    if saved % ctx.world_size:
        raise ConfigError(
            f"the checkpoint was trained with a global batch of {saved}, which {ctx.world_size} processes cannot split evenly; resume with a process count that divides {saved}"
        )
    log(
        f"resuming with {ctx.world_size} process(es): per-device batch {saved // ctx.world_size} keeps the checkpoint's global batch of {saved}"
    )
    return saved // ctx.world_size


def model_meta(config: TrainConfig, labels: list[str]) -> ModelMeta:
    """The triage.json settings of a model trained with `config`: how every scorer reads text."""
    return ModelMeta(
        labels=list(labels),
        max_length=config.max_length,
        truncation=config.truncation,
        pooling=config.pooling,
        base_model=config.model,
        long_text=config.long_text,
        chunk_overlap=config.chunk_overlap,
        max_chunks=config.max_chunks,
        chunk_pool=config.chunk_pool,
    )


def _save_best(run: _Run) -> None:
    from ..modeling import load_folder_taxonomy

    model_dir = run.out_dir / "model"
    tmp = model_dir.with_name(model_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    meta = model_meta(run.config, run.labels)
    meta.provenance = run.provenance
    save_model_folder(run.raw_model, run.tokenizer, tmp, meta, load_folder_taxonomy(run.data_dir))
    run.config.save(tmp / "train_config.yaml")
    replace_dir_atomically(tmp, model_dir)


def _precision_name(dtype) -> str:
    return (
        "fp32"
        if dtype is None
        else str(dtype).replace("torch.", "").replace("bfloat16", "bf16").replace("float16", "fp16")
    )
