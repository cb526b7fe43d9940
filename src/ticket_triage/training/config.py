"""TrainConfig: every setting of a training run, validated, saved beside what it produced."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from ..modeling import EMBEDDED_MODEL
from ..tokenization import CHUNK_POOLS, LONG_TEXT_MODES, MAX_POSITIONS, TRUNCATION_STRATEGIES


@dataclass
class TrainConfig:
    model: str = EMBEDDED_MODEL  # local Hugging Face folder, hub id, or the embedded default
    epochs: int = 3
    batch_size: int = 16  # per device, per optimizer micro-step
    grad_accum: int = 1  # optimizer steps every `grad_accum` micro-batches
    lr: float = 8e-5  # small encoders like MiniLM-L6 want a higher rate than BERT-base's 2e-5
    weight_decay: float = 0.01  # not applied to biases and LayerNorm weights
    layer_lr_decay: float = 1.0  # layer-wise lr decay: each layer below the head gets this factor once more (1: off)
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    dropout: float | None = None  # None keeps the pre-trained model's own dropout
    max_length: int = 256
    truncation: str = "head+tail"  # with long_text "truncate": which max_length tokens of a long text are read
    # Whole-text reading. "chunks": overlapping windows of max_length tokens over the whole text,
    # each scored, their logits pooled per text (the loss is on the pooled logits); "truncate": one window.
    long_text: str = "truncate"  # truncate | chunks
    chunk_overlap: float = 0.25  # share of a window repeated at the start of the next one
    max_chunks: int = 8  # windows per text at most; a longer text gets this many spread evenly over it (first and last kept)
    chunk_pool: str = "mean"  # mean | max | attention (weights: softmax over a text's windows of each window's top log-probability)
    class_weights: str = "none"  # "none" or "balanced" (inverse class frequency in the loss)
    freeze_encoder: bool = False  # feature-extractor mode: frozen encoder, head on mean-pooled tokens
    seed: int = 42
    max_train_rows: int | None = None  # stratified subset of the training split, for quick runs
    patience: int = 2  # epochs without a better validation macro-F1 before stopping
    precision: str = "auto"  # auto | bf16 | fp16 | fp32
    device: str = "auto"  # auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps
    deterministic: bool = True  # on CUDA: deterministic kernels and plain attention, so a seed repeats its metrics (slower); CPU runs repeat either way
    threads: int | None = None  # CPU threads for torch; None lets torch decide
    eval_batch_size: int = 64
    group_by_length: bool = True  # batches of similar lengths: less padding, same randomness per epoch
    checkpoint_every: int = 200  # optimizer steps between resumable checkpoints (0: only at epoch ends)
    calibrate: bool = True  # fit temperature scaling on the validation split after training
    baseline: bool = True  # also fit the TF-IDF + linear SVM baseline, for the report
    mlflow: bool = False  # log params, metrics and artefacts to MLflow (or set MLFLOW_TRACKING_URI)
    lr_scaling: str = "none"  # with N processes: none | linear (lr x N) | sqrt (lr x sqrt N)
    ensemble: str = "none"  # "tfidf": also fit a TF-IDF linear model and mix it in where it helps on validation

    def __post_init__(self) -> None:
        def need(cond: bool, message: str) -> None:
            if not cond:
                raise ConfigError(message)

        need(self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}")
        need(self.batch_size >= 1, f"batch_size must be at least 1, got {self.batch_size}")
        need(self.grad_accum >= 1, f"grad_accum must be at least 1, got {self.grad_accum}")
        need(self.lr >= 0, f"lr must be zero or positive, got {self.lr}")
        need(0 <= self.warmup_ratio < 1, f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        need(self.weight_decay >= 0, f"weight_decay must be zero or positive, got {self.weight_decay}")
        need(0 < self.layer_lr_decay <= 1, f"layer_lr_decay must be in (0, 1] (1 turns it off; 0.8 to 0.95 is usual), got {self.layer_lr_decay}")
        need(self.dropout is None or 0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}")
        need(
            8 <= self.max_length <= MAX_POSITIONS,
            f"max_length must be between 8 and {MAX_POSITIONS} (BERT has {MAX_POSITIONS} positions), got {self.max_length}",
        )
        need(self.truncation in TRUNCATION_STRATEGIES, f"truncation must be one of {', '.join(TRUNCATION_STRATEGIES)}, got {self.truncation!r}")
        need(self.long_text in LONG_TEXT_MODES, f"long_text must be one of {', '.join(LONG_TEXT_MODES)}, got {self.long_text!r}")
        need(
            isinstance(self.chunk_overlap, (int, float)) and 0 <= self.chunk_overlap <= 0.9,
            f"chunk_overlap is the share of a window repeated in the next: give a number from 0 to 0.9, got {self.chunk_overlap!r}",
        )
        need(
            isinstance(self.max_chunks, int) and self.max_chunks >= 2,
            f"max_chunks must be at least 2, got {self.max_chunks!r} (for one window per text use long_text 'truncate')",
        )
        need(self.chunk_pool in CHUNK_POOLS, f"chunk_pool must be one of {', '.join(CHUNK_POOLS)}, got {self.chunk_pool!r}")
        need(self.class_weights in ("none", "balanced"), f"class_weights must be 'none' or 'balanced', got {self.class_weights!r}")
        need(self.max_train_rows is None or self.max_train_rows >= 1, f"max_train_rows must be at least 1, got {self.max_train_rows}")
        need(self.patience >= 1, f"patience must be at least 1, got {self.patience}")
        need(self.precision in ("auto", "bf16", "fp16", "fp32"), f"precision must be auto, bf16, fp16 or fp32, got {self.precision!r}")
        need(self.threads is None or self.threads >= 1, f"threads must be at least 1, got {self.threads}")
        need(self.lr_scaling in ("none", "linear", "sqrt"), f"lr_scaling must be none, linear or sqrt, got {self.lr_scaling!r}")
        need(self.ensemble in ("none", "tfidf"), f"ensemble must be 'none' or 'tfidf', got {self.ensemble!r}")
        need(self.checkpoint_every >= 0, f"checkpoint_every must be 0 or more, got {self.checkpoint_every}")

    @property
    def pooling(self) -> str:
        # The recipe: fine-tuning reads the [CLS] token; a frozen encoder is read through a mean pool.
        return "mean" if self.freeze_encoder else "cls"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        aliases = {"learning_rate": "lr", "gradient_accumulation": "grad_accum", "num_epochs": "epochs"}
        clean: dict[str, Any] = {}
        for key, value in (data or {}).items():
            if key == "run":  # facts about a past run (world size, effective batch), not settings
                continue
            key = aliases.get(key, key).replace("-", "_")
            if key not in names:
                raise ConfigError(f"unknown training setting {key!r}; known settings: {', '.join(sorted(names))}")
            clean[key] = value
        try:
            return cls(**clean)
        except TypeError as exc:
            raise ConfigError(f"invalid training settings: {exc}") from None

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> "TrainConfig":
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must be a mapping of setting: value")
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(data)

    def save(self, path: str | Path, run: dict[str, Any] | None = None) -> None:
        """YAML usable as `triage train --config`; `run` records facts such as the effective batch."""
        data = self.to_dict()
        if run:
            data["run"] = run
        Path(path).write_text(yaml.safe_dump(data, sort_keys=False))
