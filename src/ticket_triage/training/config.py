"""TrainConfig: every setting of a training run, validated, saved beside what it produced."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from ..modeling import EMBEDDED_MODEL
from ..tokenization import CHUNK_POOLS, LONG_TEXT_MODES, MAX_POSITIONS, TRUNCATION_STRATEGIES


def setting(default: Any, help: str) -> Any:
    """A TrainConfig field with its user-facing help: the CLI's training options are built from these."""
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    # Each help is what `triage train --help` (and tune, distill) shows; the default is added there.
    model: str = setting(
        EMBEDDED_MODEL,
        "Pre-trained encoder: minilm or mpnet (see `triage models list`), a local Hugging Face folder or a hub id. Default: minilm, the embedded all-MiniLM-L6-v2.",
    )
    epochs: int = setting(3, "Maximum epochs (early stopping may end sooner).")
    batch_size: int = setting(16, "Batch size per device, per optimizer micro-step.")
    grad_accum: int = setting(1, "Micro-batches per optimizer step.")
    # Small encoders like MiniLM-L6 want a higher rate than BERT-base's 2e-5.
    lr: float = setting(8e-5, "Peak learning rate (AdamW, linear warm-up then decay).")
    weight_decay: float = setting(0.01, "AdamW weight decay (not on biases/LayerNorm).")
    layer_lr_decay: float = setting(
        1.0, "Layer-wise lr decay: each layer down from the head learns this much slower (1: off)."
    )
    warmup_ratio: float = setting(0.1, "Share of steps spent warming up.")
    max_grad_norm: float = setting(1.0, "Gradient clipping: the largest gradient norm.")
    dropout: float | None = setting(None, "Dropout for the encoder and head. Default: the model's own.")
    max_length: int = setting(256, "Tokens per text (one window), at most 512.")
    truncation: str = setting(
        "head+tail", "With --long-text truncate: which tokens of a long text are read: head | tail | head+tail."
    )
    long_text: str = setting(
        "truncate",
        "truncate: read --max-length tokens of each text; chunks: read it whole, in overlapping windows of --max-length tokens "
        "whose logits are pooled per text (in training and every scorer).",
    )
    chunk_overlap: float = setting(0.25, "With --long-text chunks: share of a window repeated in the next, 0 to 0.9.")
    max_chunks: int = setting(
        8,
        "With --long-text chunks: windows per text at most; a longer text gets this many spread evenly over it, first and "
        "last kept. A batch runs up to --batch-size x this many windows.",
    )
    chunk_pool: str = setting(
        "mean",
        "With --long-text chunks: mean | max | attention (a window's weight: softmax over its text's windows of its top log-probability; no extra weights).",
    )
    class_weights: str = setting("none", "none | balanced (inverse class frequency in the loss, for imbalanced data).")
    freeze_encoder: bool = setting(False, "Train only a head on mean-pooled token outputs (frozen encoder).")
    seed: int = setting(42, "Random seed.")
    max_train_rows: int | None = setting(None, "Train on a stratified subset of this many rows (quick runs).")
    patience: int = setting(2, "Early-stopping patience: epochs without a better validation macro-F1.")
    precision: str = setting("auto", "auto | bf16 | fp16 | fp32 (auto: bf16 where the hardware has it).")
    device: str = setting("auto", "auto (CUDA, then MPS, then CPU) | cpu | cuda | cuda:N | mps.")
    deterministic: bool = setting(
        True,
        "On a GPU: deterministic kernels and plain attention, so the same seed gives the same metrics (slower). CPU runs repeat either way.",
    )
    threads: int | None = setting(None, "CPU threads for torch. Default: torch decides.")
    eval_batch_size: int = setting(64, "Texts (windows, with --long-text chunks) per validation and test batch.")
    group_by_length: bool = setting(
        True, "Batch texts of similar length together: less padding, the same randomness per epoch."
    )
    checkpoint_every: int = setting(200, "Optimizer steps between resumable checkpoints (0: only at epoch ends).")
    calibrate: bool = setting(True, "Fit temperature scaling on the validation split after training.")
    baseline: bool = setting(True, "Also fit the TF-IDF + linear SVM baseline, for the report.")
    mlflow: bool = setting(
        False, "Log params, metrics and artefacts to MLflow (also on when MLFLOW_TRACKING_URI is set)."
    )
    lr_scaling: str = setting(
        "none", "With several processes: none | linear (lr x N) | sqrt (lr x sqrt N) scaling of --lr."
    )
    ensemble: str = setting(
        "none",
        "none | tfidf: also fit a TF-IDF linear model and mix its probabilities in, where that beats both on validation.",
    )

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
        need(
            0 < self.layer_lr_decay <= 1,
            f"layer_lr_decay must be in (0, 1] (1 turns it off; 0.8 to 0.95 is usual), got {self.layer_lr_decay}",
        )
        need(self.dropout is None or 0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}")
        need(
            8 <= self.max_length <= MAX_POSITIONS,
            f"max_length must be between 8 and {MAX_POSITIONS} (BERT has {MAX_POSITIONS} positions), got {self.max_length}",
        )
        need(
            self.truncation in TRUNCATION_STRATEGIES,
            f"truncation must be one of {', '.join(TRUNCATION_STRATEGIES)}, got {self.truncation!r}",
        )
        need(
            self.long_text in LONG_TEXT_MODES,
            f"long_text must be one of {', '.join(LONG_TEXT_MODES)}, got {self.long_text!r}",
        )
        need(
            isinstance(self.chunk_overlap, (int, float)) and 0 <= self.chunk_overlap <= 0.9,
            f"chunk_overlap is the share of a window repeated in the next: give a number from 0 to 0.9, got {self.chunk_overlap!r}",
        )
        need(
            isinstance(self.max_chunks, int) and self.max_chunks >= 2,
            f"max_chunks must be at least 2, got {self.max_chunks!r} (for one window per text use long_text 'truncate')",
        )
        need(
            self.chunk_pool in CHUNK_POOLS,
            f"chunk_pool must be one of {', '.join(CHUNK_POOLS)}, got {self.chunk_pool!r}",
        )
        need(
            self.class_weights in ("none", "balanced"),
            f"class_weights must be 'none' or 'balanced', got {self.class_weights!r}",
        )
        need(
            self.max_train_rows is None or self.max_train_rows >= 1,
            f"max_train_rows must be at least 1, got {self.max_train_rows}",
        )
        need(self.patience >= 1, f"patience must be at least 1, got {self.patience}")
        need(
            self.precision in ("auto", "bf16", "fp16", "fp32"),
            f"precision must be auto, bf16, fp16 or fp32, got {self.precision!r}",
        )
        need(self.threads is None or self.threads >= 1, f"threads must be at least 1, got {self.threads}")
        need(
            self.lr_scaling in ("none", "linear", "sqrt"),
            f"lr_scaling must be none, linear or sqrt, got {self.lr_scaling!r}",
        )
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
        data = cls.read_yaml(path)
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(data)

    @classmethod
    def read_yaml(cls, path: str | Path) -> dict[str, Any]:
        """The settings in a YAML file, checked (names and values) but not filled with defaults:
        what `triage tune --config` fixes for every trial."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {_first_line(exc)}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must be a mapping of setting: value")
        cls.from_dict(data)
        return {k: v for k, v in data.items() if k != "run"}

    def save(self, path: str | Path, run: dict[str, Any] | None = None) -> None:
        """YAML usable as `triage train --config`; `run` records facts such as the effective batch."""
        data = self.to_dict()
        if run:
            data["run"] = run
        Path(path).write_text(yaml.safe_dump(data, sort_keys=False))


def _first_line(exc: Exception) -> str:
    # PyYAML's messages span lines (the offending line, a caret); the CLI prints one.
    return " ".join(str(exc).split())
