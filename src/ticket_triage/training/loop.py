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
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..calibration import nll
from ..errors import ConfigError
from ..evaluation.metrics import classification_metrics
from ..evaluation.report import save_loss_curves, write_json, write_report
from ..modeling import ModelMeta, build_model, pick_device, load_tokenizer, resolve_model_source, save_model_folder
from ..tokenization import encode_for, group_windows, length_grouped_batches, pad_batch, pool_window_logits, pool_windows
from .checkpoint import CHECKPOINT_DIR, read_checkpoint, replace_dir_atomically, restore_checkpoint, save_checkpoint
from .config import TrainConfig
from .data import Split, balanced_class_weights, load_splits, stratified_indices
from .targets import UNLABELLED, SoftTargets, distillation_loss
from .distributed import DistContext, barrier, gather_rows, init_distributed, mean_across, shard, shutdown


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
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(), torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
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

        raise ConfigError("layer_lr_decay needs a model whose config gives num_hidden_layers; set it to 1 for this model")
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
# Inference over an encoded split (validation, test, evaluate)
# ---------------------------------------------------------------------------------------------
def predict_logits(model, encoded: list[list[int]], pad_id: int, device, dtype=None, batch_size: int = 64, progress: str | None = None, owners: list[int] | None = None, pool: str = "mean") -> np.ndarray:
    """Logits (N, C) for token-id lists, batched by length so padding stays small.

    With `owners` (the text of each window, from `encode_for`) the lists are windows: their
    logits are pooled (`pool`: mean | max | attention) into one row per text."""
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
    if owners is None:
        return logits
    return pool_window_logits(logits, owners, owners[-1] + 1 if owners else 0, pool)


def score_texts(model, tokenizer, settings, texts: list[str], device, dtype=None, batch_size: int = 64, progress: str | None = None) -> np.ndarray:
    """Logits (N, C) for texts, read as `settings` (a ModelMeta or TrainConfig) says: truncated or in pooled windows."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    windows, owners = encode_for(tokenizer, texts, settings)
    return predict_logits(model, windows, pad_id, device, dtype, batch_size, progress, owners=owners, pool=settings.chunk_pool)


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
    progress: bool = True,
    soft_targets: SoftTargets | None = None,
) -> TrainResult:
    """Fine-tune, keep the best epoch's model folder, and report on the test split (module docstring).

    With `soft_targets` (from `triage distill`) the loss also pulls the model towards a teacher's
    probabilities, and the teacher's unlabelled texts join the training rows (targets.py)."""
    with ExitStack() as run_scope:  # process-wide settings made for this run are undone when it ends
        return _train(config, Path(out_dir), data_dir, resume, on_epoch_end, on_step, log, progress, run_scope, soft_targets)


def _train(config: TrainConfig, out_dir: Path, data_dir, resume: bool, on_epoch_end, on_step, log, progress: bool, run_scope: ExitStack, soft_targets: SoftTargets | None = None) -> TrainResult:
    import torch
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    model_dir = out_dir / "model"
    if not resume and (out_dir / CHECKPOINT_DIR).exists():
        raise ConfigError(f"{out_dir} holds an unfinished run: pass --resume to continue it, or choose another --out")

    # -- setup: processes, device, precision ---------------------------------------------------
    ctx = init_distributed(config.device)  # one process unless started by torchrun
    if not ctx.is_main:
        log = _silent  # one voice: rank 0 prints, writes files and reports
    else:
        out_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    device = torch.device(f"cuda:{ctx.local_rank}") if ctx.backend == "nccl" else pick_device("cpu" if ctx.enabled else config.device)
    amp_dtype = pick_precision(config.precision, device)
    attention = run_scope.enter_context(deterministic_kernels(device, config.deterministic))
    # fp16 needs loss scaling to keep small gradients from flushing to zero; bf16 does not.
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None

    # -- data ----------------------------------------------------------------------------------
    splits, labels = load_splits(data_dir)
    train, teacher = training_rows(splits["train"], config, soft_targets)  # teacher: (N, C) log-probs, or None
    source = resolve_model_source(config.model)
    tokenizer = load_tokenizer(source)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    # Each text's windows: one when truncating, up to max_chunks with --long-text chunks.
    train_docs = group_windows(*encode_for(tokenizer, train.texts, config))
    val_windows = encode_for(tokenizer, splits["val"].texts, config)
    # Tokens per text: sorting by it groups texts by window count too, so batches pad little.
    train_lengths = [sum(len(ids) for ids in doc) for doc in train_docs]

    # -- model, loss, optimizer, schedule ------------------------------------------------------
    model = build_model(source, labels, pooling=config.pooling, dropout=config.dropout, freeze_encoder=config.freeze_encoder, attn_implementation=attention).to(device)
    torch.manual_seed(config.seed + ctx.rank)  # the same weights everywhere, a different dropout stream per process
    class_weights = balanced_class_weights(train.labels, len(labels)) if config.class_weights == "balanced" else None
    class_weight_t = torch.tensor(class_weights, dtype=torch.float32, device=device) if class_weights is not None else None
    loss_fn = torch.nn.CrossEntropyLoss(weight=class_weight_t)

    loop = {"epoch": 0, "batch": 0, "step": 0, "loss_sum": 0.0, "loss_batches": 0, "history": [], "best_f1": -1.0, "best_epoch": 0, "bad_epochs": 0, "train_seconds": 0.0, "train_samples": 0}
    saved = read_checkpoint(out_dir) if resume else None  # read once: its global batch shapes the schedule
    per_device_batch = _per_device_batch(config, ctx, saved["loop"].get("global_batch") if saved else None, log)
    global_batch = per_device_batch * ctx.world_size  # one optimizer micro-step sees this many rows
    lr = config.lr * _lr_scale(config.lr_scaling, ctx.world_size)
    # On CUDA one fused kernel updates every parameter, instead of a few launches per tensor.
    optimizer = torch.optim.AdamW(param_groups(model, config.weight_decay, lr, config.layer_lr_decay), lr=lr, fused=device.type == "cuda")
    batches_per_epoch = math.ceil(len(train_docs) / global_batch)
    steps_per_epoch = math.ceil(batches_per_epoch / config.grad_accum)
    total_steps = steps_per_epoch * config.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)

    # Where the loop is: everything needed to continue after a kill, saved in each checkpoint.
    if resume:
        if saved is None:
            log(f"no checkpoint in {out_dir}: starting from the beginning")
        else:
            loop = restore_checkpoint(out_dir, saved, model, optimizer, scheduler, scaler)
            if ctx.rank:  # the checkpoint holds rank 0's RNG; other ranks need streams of their own
                torch.manual_seed(config.seed + ctx.rank + 7919 * loop["step"])
            log(f"resuming at epoch {loop['epoch'] + 1}, batch {loop['batch']} (optimizer step {loop['step']})")
    loop["global_batch"] = global_batch
    raw_model = model  # the plain module: what is saved, evaluated and exported
    if ctx.enabled:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    effective_batch = global_batch * config.grad_accum
    run_info = {"world_size": ctx.world_size, "backend": ctx.backend, "per_device_batch": per_device_batch, "effective_batch_size": effective_batch, "lr_scaling": config.lr_scaling, "effective_lr": lr, "deterministic_kernels": attention is not None}
    if ctx.is_main:
        config.save(out_dir / "train_config.yaml", run=run_info)
    log(
        f"training {len(train_docs)} tickets{_windows_note(config, train_docs)}, {len(labels)} categories, on {device} ({_precision_name(amp_dtype)}{', deterministic kernels' if attention else ''}) x {ctx.world_size} process(es); "
        f"effective batch {per_device_batch} per device x {ctx.world_size} x {config.grad_accum} accumulation = {effective_batch}; "
        f"lr {lr:g} (scaling rule: {config.lr_scaling}); {total_steps} optimizer steps"
        + (f"; distilling (temperature {soft_targets.temperature:g}, alpha {soft_targets.alpha:g}, {len(soft_targets.extra_texts)} unlabelled texts)" if soft_targets else "")
    )

    # The loss is summed where it is computed: reading it back every batch would make the host wait
    # for a GPU instead of queueing the next batch's kernels. It is read for the progress bar every
    # `postfix_every` steps, and at checkpoints and epoch ends.
    running_loss = torch.zeros((), device=device)
    postfix_every = _steps_between_loss_reads(device)

    def settle_loss() -> None:
        loop["loss_sum"] += float(running_loss)
        running_loss.zero_()

    def checkpoint() -> None:
        settle_loss()
        if ctx.is_main:
            save_checkpoint(out_dir, raw_model, optimizer, scheduler, loop, scaler)

    # -- epochs --------------------------------------------------------------------------------
    stopped_early = loop["bad_epochs"] >= config.patience  # resumed after its early stop, before its report
    while not stopped_early and loop["epoch"] < config.epochs:
        epoch = loop["epoch"]
        batches = epoch_batches(train_lengths, global_batch, config, epoch, ctx)

        model.train()
        bar = tqdm(total=len(batches), initial=loop["batch"], desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch", leave=False, disable=not (progress and ctx.is_main))
        tick = time.perf_counter()
        for b in range(loop["batch"], len(batches)):
            rows = batches[b]
            last_of_epoch = b + 1 == len(batches)
            steps_now = (b + 1) % config.grad_accum == 0 or last_of_epoch
            windows, owners = _batch_windows(train_docs, rows)  # B texts -> W >= B windows
            input_ids, attention_mask = pad_batch(windows, pad_id)  # (W, T) each
            targets = to_device(torch.as_tensor(train.labels[rows]), device)
            # Under DDP, gradients are all-reduced only on the micro-batch that steps the optimizer.
            with (model.no_sync() if ctx.enabled and not steps_now else nullcontext()):
                with autocast_context(device, amp_dtype):
                    logits = model(input_ids=to_device(input_ids, device), attention_mask=to_device(attention_mask, device)).logits  # (W, C)
                # One row per text (a no-op with one window each): the loss is on the pooled logits.
                logits = pool_windows(logits.float(), to_device(torch.as_tensor(owners), device), len(rows), config.chunk_pool)  # (B, C)
                if teacher is None:
                    loss = loss_fn(logits, targets)
                else:
                    soft = to_device(torch.as_tensor(teacher[rows]), device)  # (B, C) teacher log-probs
                    loss = distillation_loss(logits, targets, soft, soft_targets.temperature, soft_targets.alpha, class_weight_t)
                # Average over the accumulation window, so the step size does not grow with it.
                scaled = loss / config.grad_accum
                (scaler.scale(scaled) if scaler else scaled).backward()
            running_loss += loss.detach()
            loop["loss_batches"] += 1
            loop["train_samples"] += len(rows) * ctx.world_size
            loop["batch"] = b + 1

            if steps_now:
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
                if loop["step"] % postfix_every == 0:
                    settle_loss()
                    bar.set_postfix(loss=f"{loop['loss_sum'] / loop['loss_batches']:.4f}", samples_s=f"{loop['train_samples'] / max(loop['train_seconds'], 1e-9):.1f}")
                if config.checkpoint_every and loop["step"] % config.checkpoint_every == 0 and not last_of_epoch:
                    checkpoint()
                if on_step:
                    on_step(loop["step"])
            bar.update(1)
        bar.close()
        settle_loss()  # also waits for the GPU, so the epoch's queued work counts as training time
        loop["train_seconds"] += time.perf_counter() - tick

        # -- validation over the whole split, best model, early stopping ---------------------
        val_logits = predict_logits_sharded(raw_model, val_windows, config.chunk_pool, pad_id, device, amp_dtype, config.eval_batch_size, ctx)
        val = classification_metrics(splits["val"].labels, val_logits.argmax(1), labels)
        record = {
            "epoch": epoch + 1,
            "train_loss": mean_across(ctx, loop["loss_sum"] / max(loop["loss_batches"], 1)),
            "val_loss": nll(val_logits, splits["val"].labels, weights=class_weights),
            "val_accuracy": val["accuracy"],
            "val_macro_f1": val["macro_f1"],
            "lr": scheduler.get_last_lr()[0],
        }
        loop["history"].append(record)
        improved = record["val_macro_f1"] > loop["best_f1"]
        if improved:
            loop.update(best_f1=record["val_macro_f1"], best_epoch=epoch + 1, bad_epochs=0)
            if ctx.is_main:
                _save_best(raw_model, tokenizer, model_dir, labels, config, data_dir)
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

    # -- test report on the best checkpoint (rank 0, over the whole test split) ----------------
    barrier(ctx)
    if not ctx.is_main:
        shutdown(ctx)
        return TrainResult(out_dir=out_dir, model_dir=model_dir, history=loop["history"], test={}, best_epoch=loop["best_epoch"])
    result = finish_run(config, out_dir, model_dir, data_dir, splits, labels, train, loop, device, amp_dtype, stopped_early, log, run_info, progress)
    shutil.rmtree(out_dir / CHECKPOINT_DIR, ignore_errors=True)
    shutdown(ctx)
    return result


def training_rows(train: Split, config: TrainConfig, soft_targets: SoftTargets | None) -> tuple[Split, np.ndarray | None]:
    """The rows a run trains on, and their teacher log-probabilities when distilling.

    --max-train-rows takes a stratified subset (the teacher's rows with it); a distillation's
    unlabelled texts follow, labelled -1 so that only the teacher's targets teach them."""
    teacher = None if soft_targets is None else np.asarray(soft_targets.train, dtype=np.float32)
    if teacher is not None and len(teacher) != len(train):
        raise ConfigError(f"the teacher's targets cover {len(teacher)} training rows but the split has {len(train)}: recompute them for this data")
    if config.max_train_rows:
        keep = stratified_indices(train.labels, config.max_train_rows, config.seed)
        train = Split([train.texts[i] for i in keep], train.labels[keep])
        teacher = teacher[keep] if teacher is not None else None
    if soft_targets is not None and soft_targets.extra_texts:
        unlabelled = np.full(len(soft_targets.extra_texts), UNLABELLED, dtype=np.int64)
        train = Split(train.texts + list(soft_targets.extra_texts), np.concatenate([train.labels, unlabelled]))
        teacher = np.concatenate([teacher, np.asarray(soft_targets.extra, dtype=np.float32)])
    return train, teacher


def _steps_between_loss_reads(device) -> int:
    # On a CPU reading the loss costs nothing; on a GPU each read is a wait.
    return 1 if device.type == "cpu" else 25


def _silent(*_args, **_kwargs) -> None:
    pass


def epoch_batches(lengths: list[int], global_batch: int, config: TrainConfig, epoch: int, ctx: DistContext) -> list[list[int]]:
    """This process's batches for one epoch: the same on every run with the same seed and epoch."""
    import torch
    from torch.utils.data import DistributedSampler

    if config.group_by_length:
        order_rng = torch.Generator().manual_seed(config.seed + epoch)
        batches = length_grouped_batches(lengths, global_batch, generator=order_rng)
        # Each process takes its strided share of every global batch (never an empty one).
        return [shard(ctx, batch) or batch[:1] for batch in batches]
    sampler = DistributedSampler(range(len(lengths)), num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=config.seed)
    sampler.set_epoch(epoch)  # a different shuffle every epoch, the same on every process
    indices = list(sampler)
    per_device = global_batch // ctx.world_size
    return [indices[i : i + per_device] for i in range(0, len(indices), per_device)]


def predict_logits_sharded(model, encoded: tuple[list[list[int]], list[int]], pool: str, pad_id, device, dtype, batch_size, ctx: DistContext) -> np.ndarray:
    """Each process scores every world_size-th text (all its windows); the full (N, C) logits are
    gathered on all. `encoded`: (windows, owners) from `encode_for`."""
    windows, owners = encoded
    if not ctx.enabled:
        return predict_logits(model, windows, pad_id, device, dtype, batch_size, owners=owners, pool=pool)
    docs = group_windows(windows, owners)
    mine = np.arange(ctx.rank, len(docs), ctx.world_size)
    my_windows, my_owners = _batch_windows(docs, mine)
    part = predict_logits(model, my_windows, pad_id, device, dtype, batch_size, owners=my_owners, pool=pool)
    return gather_rows(ctx, mine, part, len(docs))


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
        raise ConfigError(f"the checkpoint was trained with a global batch of {saved}, which {ctx.world_size} processes cannot split evenly; resume with a process count that divides {saved}")
    log(f"resuming with {ctx.world_size} process(es): per-device batch {saved // ctx.world_size} keeps the checkpoint's global batch of {saved}")
    return saved // ctx.world_size


def _precision_name(dtype) -> str:
    return "fp32" if dtype is None else str(dtype).replace("torch.", "").replace("bfloat16", "bf16").replace("float16", "fp16")


def _save_best(model, tokenizer, model_dir: Path, labels: list[str], config: TrainConfig, data_dir) -> None:
    from ..modeling import load_folder_taxonomy

    meta = ModelMeta(
        labels=list(labels), max_length=config.max_length, truncation=config.truncation, pooling=config.pooling, base_model=config.model,
        long_text=config.long_text, chunk_overlap=config.chunk_overlap, max_chunks=config.max_chunks, chunk_pool=config.chunk_pool,
    )
    tmp = model_dir.with_name(model_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    save_model_folder(model, tokenizer, tmp, meta, load_folder_taxonomy(data_dir))
    config.save(tmp / "train_config.yaml")
    replace_dir_atomically(tmp, model_dir)


def finish_run(config, out_dir, model_dir, data_dir, splits, labels, train, loop, device, amp_dtype, stopped_early, log, run_info=None, progress=True) -> TrainResult:
    """Score the best checkpoint on the test split, fit calibration and the baseline, write reports."""
    from ..modeling import load_model_folder

    model, tokenizer, meta = load_model_folder(model_dir, device=str(device))
    test_split = splits["test"]
    test_logits = score_texts(model, tokenizer, meta, test_split.texts, device, amp_dtype, config.eval_batch_size, progress="test" if progress else None)

    # TF-IDF models fit on the whole training split: --max-train-rows caps the transformer's
    # compute, and a baseline (or hybrid half) held to the same cap would flatter the comparison.
    all_train = splits["train"]
    baseline = None
    if config.baseline:
        from ..evaluation.baseline import run_baseline

        baseline = run_baseline(all_train.texts, all_train.labels, test_split.texts, test_split.labels, labels, config.seed)
        baseline["train_rows"] = len(all_train)

    calibration = None
    if config.calibrate:
        calibration = _calibrate(model_dir, data_dir, out_dir, log)

    ensemble = _fit_ensemble(config, model_dir, splits, labels, test_logits, device, log) if config.ensemble == "tfidf" else None
    # The report scores what the model folder predicts: the hybrid where the ensemble is on.
    test_pred = ensemble.pop("test_pred") if ensemble else test_logits.argmax(1)
    test = _test_metrics(test_split.labels, test_pred, labels, data_dir)

    notes = [f"best epoch {loop['best_epoch']} of {len(loop['history'])}" + (" (early stop)" if stopped_early else "")]
    if calibration:
        notes.append(f"calibration: temperature {calibration['temperature']:.3f}, validation ECE {calibration['val_ece_before']:.4f} -> {calibration['val_ece_after']:.4f} (reliability_diagram.png, coverage.png)")
    if ensemble:
        notes.append(f"scored as shipped: {'transformer + TF-IDF hybrid' if ensemble['enabled'] else 'transformer alone (the hybrid did not beat both on validation)'}; all three compared below")
    metrics = {
        "history": loop["history"],
        "best_epoch": loop["best_epoch"],
        "test": test,
        "baseline": baseline,
        "calibration": calibration,
        "ensemble": ensemble,
        "train_rows": len(train),
        "wall_time_s": round(loop["train_seconds"], 2),
        "train_samples_per_s": round(loop["train_samples"] / max(loop["train_seconds"], 1e-9), 2),
        "device": str(device),
        "precision": _precision_name(amp_dtype),
        "config": config.to_dict(),
        "run": run_info or {},
    }
    write_json(out_dir / "metrics.json", metrics)
    write_json(model_dir / "metrics.json", metrics)
    write_report(out_dir, test, title="Test split: classification report", baseline_macro_f1=baseline["macro_f1"] if baseline else None, notes=notes, ensemble=ensemble)
    save_loss_curves(out_dir, loop["history"])
    _log_mlflow(config, out_dir, metrics, log)
    summary = f"test macro-F1 {test['macro_f1']:.4f}, accuracy {test['accuracy']:.4f}"
    if baseline:
        summary += f" (TF-IDF + SVM baseline macro-F1 {baseline['macro_f1']:.4f})"
    if ensemble:
        summary += f"; ensemble {'on' if ensemble['enabled'] else 'off'} (transformer alone {ensemble['scores']['test']['transformer']['macro_f1']:.4f})"
    log(summary)
    return TrainResult(out_dir=out_dir, model_dir=model_dir, history=loop["history"], test=test, best_epoch=loop["best_epoch"], metrics=metrics)


def _test_metrics(y_true, y_pred, labels, data_dir) -> dict[str, Any]:
    """The test split's metrics with the per-source and per-year tables (evaluation/slices.py)."""
    from ..evaluation.slices import add_slices, default_source_name, split_slice_columns

    sources, dates = split_slice_columns(Path(data_dir) / "test.parquet", default_source_name(data_dir))
    return add_slices(classification_metrics(y_true, y_pred, labels), y_true, y_pred, sources, dates)


def _fit_ensemble(config: TrainConfig, model_dir: Path, splits, labels, test_logits: np.ndarray, device, log) -> dict[str, Any]:
    """`--ensemble tfidf`: fit the TF-IDF model (the whole training split), its weight (validation), store both in the
    model folder, and compare transformer, TF-IDF and hybrid on validation and test.

    Runs after calibration: the transformer's probabilities are mixed at its fitted temperature."""
    from .. import ensemble as ens
    from ..inference import Classifier
    from ..inference.classifier import softmax

    val = splits["val"]
    transformer = Classifier.load(model_dir, backend="torch", device=str(device), ensemble=False)
    p_val = {"transformer": transformer.predict_proba(val.texts, config.eval_batch_size)}
    p_test = {"transformer": softmax(test_logits, transformer.temperature)}
    train = splits["train"]
    tfidf, fit_report = ens.fit_tfidf(train.texts, train.labels, val.texts, val.labels, labels, seed=config.seed, class_weight="balanced" if config.class_weights == "balanced" else None)
    fit_report["train_rows"] = len(train)
    p_val["tfidf"], p_test["tfidf"] = tfidf.predict_proba(val.texts), tfidf.predict_proba(splits["test"].texts)
    spec, val_scores, grid = ens.fit_weight(p_val["transformer"], p_val["tfidf"], val.labels, labels, {"C": fit_report["C"], "tfidf_temperature": fit_report["temperature"]})
    weight = spec["weight"]
    p_test["hybrid"] = ens.mix(p_test["transformer"], p_test["tfidf"], weight)
    scores = {"validation": val_scores, "test": ens.compare_models(splits["test"].labels, p_test, labels)}

    tfidf.save(model_dir)
    meta = ModelMeta.load(model_dir)
    meta.ensemble = spec
    meta.save(model_dir)
    f1 = spec["val_macro_f1"]
    log(f"ensemble: TF-IDF weight {weight:.2f}, validation macro-F1 transformer {f1['transformer']:.4f}, TF-IDF {f1['tfidf']:.4f}, hybrid {f1['hybrid']:.4f}: {'on' if spec['enabled'] else 'off (does not beat both)'}")
    shipped = p_test["hybrid"] if spec["enabled"] else p_test["transformer"]
    return {**spec, "scores": scores, "tfidf": fit_report, "weight_grid": grid, "test_pred": shipped.argmax(1)}


def _calibrate(model_dir: Path, data_dir, out_dir: Path, log) -> dict[str, Any]:
    """Temperature scaling on the validation split; stored in the model folder for every backend.

    Also writes calibration.json, reliability_diagram.png and coverage.png (the share of tickets
    auto-routed, and their accuracy, per confidence threshold) into the run folder."""
    from ..calibration import calibrate_model

    report = calibrate_model(model_dir, Path(data_dir) / "val.parquet", out_dir)
    log(f"calibration: temperature {report.temperature:.3f}, validation ECE {report.ece_before:.4f} -> {report.ece_after:.4f}")
    return {"temperature": report.temperature, "val_ece_before": report.ece_before, "val_ece_after": report.ece_after, "coverage": report.coverage}


def _log_mlflow(config: TrainConfig, out_dir: Path, metrics: dict[str, Any], log) -> None:
    if not (config.mlflow or os.environ.get("MLFLOW_TRACKING_URI")):
        return
    try:
        import mlflow
    except ImportError:
        raise ConfigError("MLflow logging asked for, but mlflow is not installed: pip install 'ticket-triage[mlflow]'") from None
    try:
        with mlflow.start_run(run_name=out_dir.name):
            mlflow.log_params({k: v for k, v in config.to_dict().items() if v is not None})
            for record in metrics["history"]:
                mlflow.log_metrics({k: float(v) for k, v in record.items() if k != "epoch"}, step=record["epoch"])
            mlflow.log_metrics({"test_macro_f1": metrics["test"]["macro_f1"], "test_accuracy": metrics["test"]["accuracy"]})
            for name in ("metrics.json", "classification_report.md", "confusion_matrix.png", "loss_curves.png", "train_config.yaml"):
                if (out_dir / name).exists():
                    mlflow.log_artifact(str(out_dir / name))
    except Exception as exc:  # the run's own files are written already: a tracking failure must not lose them
        log(f"warning: MLflow logging failed ({str(exc).splitlines()[0]}); the run folder {out_dir} is complete")
        return
    log("logged the run to MLflow")
