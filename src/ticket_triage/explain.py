"""Why a text got its category: word attributions by integrated gradients (Captum).

    from ticket_triage.explain import explain
    result = explain("runs/demo/model", "I was charged twice for my card")
    for word in result.tokens: print(word.text, word.attribution)

Integrated gradients (Sundararajan et al. 2017) on the word-embedding layer: the embeddings of
the text's tokens are moved in a straight line from a baseline (the same sequence with every
content token replaced by [PAD], or [MASK] for models that number positions from the pad id),
and the gradient of the target logit is integrated along the way. Completeness: the
attributions sum to logit(target, text) - logit(target, baseline); `delta` says how far the
numeric integral is from that (it shrinks as n_steps grows). [CLS] and [SEP] are the same in the
text and the baseline, so their attributions are exactly 0 and the word sum is the whole sum.

The text is read exactly as inference reads it (`tokenization.encode_for`: head+tail truncation,
or overlapping windows pooled into one row), so the words explained are the words the model saw;
a truncated text says so (`truncated`). WordPiece pieces are summed into the words the
tokenizer's pre-tokenizer made, with character offsets into the original text.

Attributions explain the transformer's raw logit (before the temperature, which only rescales
it). A folder with a TF-IDF ensemble also mixes in that model's probabilities; those are not
attributed, and `note` says so.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .errors import ConfigError, DataError, ModelError

METHOD = "integrated_gradients"
DEFAULT_STEPS = 50
BASELINES = ("auto", "pad", "mask")
# Models that compute position ids from the input ids (a [PAD] gets the pad position and
# shifts nothing, but the endpoint F(baseline) would then differ from the path's end): for
# them the baseline token is [MASK].
POSITIONS_FROM_PAD = ("mpnet", "roberta", "xlm-roberta", "camembert")
# Each gradient step runs the model on steps x windows x tokens at once; this many tokens per
# internal batch keeps a 512-token MiniLM explanation under ~1 GB of activations.
MAX_TOKENS_PER_BATCH = 8192


@dataclass
class WordAttribution:
    text: str
    start: int  # character offsets into the explained text
    end: int
    attribution: float


@dataclass
class Explanation:
    target: str
    target_index: int
    tokens: list[WordAttribution]
    delta: float  # sum(attributions) - (logit - baseline_logit)
    logit: float  # the target's raw logit for the text
    baseline_logit: float  # ... and for the baseline
    n_steps: int
    baseline: str  # "pad" | "mask"
    truncated: bool  # part of the text was never read by the model (head+tail or max_chunks)
    windows: int  # how many windows the model read (1 unless long_text is "chunks")
    model_version: str = ""
    method: str = METHOD
    explains: str = "transformer"
    note: str = ""
    probabilities: dict[str, float] = field(default_factory=dict)  # the transformer's softmax(logits / T)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# Reading the text as inference does, keeping each token's characters
# ---------------------------------------------------------------------------------------------
@dataclass
class _Encoded:
    windows: list[list[int]]  # token ids per window, [CLS] ... [SEP]
    positions: list[list[int | None]]  # per window slot: the content token's index, None for specials
    offsets: list[tuple[int, int]]  # per content token: characters in the original text
    word_ids: list[int | None]  # per content token: the pre-tokenizer's word
    truncated: bool


def _cut_offset_mapper(text: str, cut: str, max_chars: int):
    """Offsets in `tokenization._pre_cut`'s output back to offsets in the original text."""
    if cut is text or cut == text:
        return lambda i: i
    shift = len(text) - max_chars - (max_chars + 1)  # the tail starts at max_chars + 1 in `cut`
    return lambda i: i if i <= max_chars else i + shift


def encode_with_offsets(tokenizer, text: str, meta) -> _Encoded:
    """`encode_for(tokenizer, [text], meta)` plus where each token came from. Raises ModelError if
    the ids ever differ from inference's (the explanation would be of another input)."""
    from .tokenization import (
        CHARS_PER_TOKEN_BOUND,
        _pre_cut,
        _special_ids,
        chunk_stride,
        encode_for,
        split_budget,
        window_starts,
    )

    first, last = _special_ids(tokenizer)
    width = meta.max_length - 2
    chunks = getattr(meta, "long_text", "truncate") == "chunks"
    max_chars = CHARS_PER_TOKEN_BOUND * meta.max_length * (meta.max_chunks if chunks else 1)
    cut = _pre_cut(text, max_chars)
    to_original = _cut_offset_mapper(text, cut, max_chars)
    enc = tokenizer(
        cut,
        add_special_tokens=False,
        truncation=False,
        verbose=False,
        split_special_tokens=True,
        return_offsets_mapping=True,
    )
    ids, n = enc["input_ids"], len(enc["input_ids"])
    offsets = [(to_original(s), to_original(e)) for s, e in enc["offset_mapping"]]
    if chunks:
        stride = chunk_stride(meta.max_length, meta.chunk_overlap)
        spans = [list(range(s, min(s + width, n))) for s in window_starts(n, width, stride, meta.max_chunks)]
    elif n > width:
        head, tail = split_budget(width, meta.truncation)
        spans = [list(range(head)) + list(range(n - tail, n))]
    else:
        spans = [list(range(n))]
    windows = [[first, *(ids[i] for i in span), last] for span in spans]
    expected, _ = encode_for(tokenizer, [text], meta)
    if windows != expected:
        raise ModelError("the explainer read the text differently from inference; please report this with the text")
    seen = set().union(*map(set, spans)) if spans else set()
    return _Encoded(
        windows=windows,
        positions=[[None, *span, None] for span in spans],
        offsets=offsets,
        word_ids=list(enc.word_ids()),
        truncated=len(seen) < n or len(cut) < len(text),
    )


def merge_words(text: str, encoded: _Encoded, token_scores: dict[int, float]) -> list[WordAttribution]:
    """Sum the pieces of each word (the pre-tokenizer's words) and give it its characters."""
    words: dict[Any, list] = {}
    for index, score in sorted(token_scores.items()):
        start, end = encoded.offsets[index]
        key = encoded.word_ids[index] if encoded.word_ids[index] is not None else ("piece", index)
        slot = words.setdefault(key, [start, end, 0.0])
        slot[0], slot[1], slot[2] = min(slot[0], start), max(slot[1], end), slot[2] + score
    ordered = sorted(words.values(), key=lambda w: (w[0], w[1]))
    return [WordAttribution(text[s:e], s, e, float(a)) for s, e, a in ordered]


# ---------------------------------------------------------------------------------------------
# The explainer
# ---------------------------------------------------------------------------------------------
class Explainer:
    """A PyTorch model folder loaded for attributions (on the CPU unless told otherwise).

    The service's classifier may be ONNX, so this always loads the folder's PyTorch weights."""

    def __init__(self, model, tokenizer, meta, *, model_version: str = "", device: str = "cpu"):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.meta = meta
        self.model_version = model_version
        self.device = device
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._lock = threading.Lock()  # one explanation at a time (see `explain`)

    @classmethod
    def load(cls, model_dir: str | Path, *, device: str = "cpu", model_version: str | None = None) -> "Explainer":
        from .inference.backends import file_digest, torch_weight_files
        from .modeling import load_model_folder

        folder = Path(model_dir).expanduser()
        if not folder.is_dir():
            raise ModelError(
                f"model folder {folder} does not exist; give the `model/` folder that `triage train` wrote"
            )
        weights = torch_weight_files(folder)
        if not weights:
            raise ModelError(
                f"{folder} has no PyTorch weights (model.safetensors): explanations need them, not only an ONNX export"
            )
        model, tokenizer, meta = load_model_folder(folder, device=device)
        version = model_version if model_version is not None else f"{file_digest(weights)}-torch"
        return cls(model, tokenizer, meta, model_version=version, device=device)

    @property
    def labels(self) -> list[str]:
        return list(self.meta.labels)

    def _embeddings(self):
        # A Hugging Face model has get_input_embeddings; our mean-pooling head keeps its encoder as `.encoder`.
        base = self.model if hasattr(self.model, "get_input_embeddings") else self.model.encoder
        return base.get_input_embeddings()

    def _baseline_token(self, baseline: str) -> tuple[str, int]:
        if baseline not in BASELINES:
            raise ConfigError(f"unknown baseline {baseline!r}: use one of {', '.join(BASELINES)}")
        if baseline == "auto":
            model_type = getattr(getattr(self.model, "config", None), "model_type", "")
            baseline = "mask" if model_type in POSITIONS_FROM_PAD else "pad"
        token = self.pad_id if baseline == "pad" else self.tokenizer.mask_token_id
        if token is None:
            raise ConfigError(f"the tokenizer has no {baseline} token: use baseline 'pad'")
        return baseline, int(token)

    def _target_index(self, target: str | int | None, logits) -> int:
        if target is None:
            return int(logits.argmax())
        if isinstance(target, int) and not isinstance(target, bool) and 0 <= target < len(self.labels):
            return target
        if isinstance(target, str) and target in self.labels:
            return self.labels.index(target)
        raise ConfigError(f"unknown target {target!r}: use one of {', '.join(self.labels)}")

    def _forward(self, input_ids, attention_mask):
        """Pooled logits (B, C) for B texts of W windows each: ids and mask are (B, W, T)."""
        import torch

        from .tokenization import pool_windows

        b, w, t = input_ids.shape
        out = self.model(input_ids=input_ids.reshape(b * w, t), attention_mask=attention_mask.reshape(b * w, t))
        logits = out.logits if hasattr(out, "logits") else out[0]
        owners = torch.arange(b, device=logits.device).repeat_interleave(w)
        return pool_windows(logits, owners, b, getattr(self.meta, "chunk_pool", "mean"))

    def explain(
        self,
        text: str,
        target: str | int | None = None,
        n_steps: int = DEFAULT_STEPS,
        baseline: str = "auto",
    ) -> Explanation:
        """Word attributions for `target` (a label, its index, or None: the transformer's top class)."""
        _captum()  # a clear error before any work when Captum is missing
        if not isinstance(text, str) or not text.strip():
            raise DataError("nothing to explain: the text is empty")
        if not 1 <= int(n_steps) <= 1000:
            raise ConfigError(f"n_steps must be between 1 and 1000, got {n_steps}")
        baseline, baseline_id = self._baseline_token(baseline)
        encoded = encode_with_offsets(self.tokenizer, text, self.meta)
        # Captum hooks the shared embedding layer during a call, and the hook would also catch
        # another thread's forward passes: the model runs one explanation at a time.
        with self._lock:
            logits, base_logits, index, attributions = self._integrate(encoded, baseline_id, target, n_steps)
        windows, width = len(encoded.windows), max(len(w) for w in encoded.windows)
        per_slot = attributions.sum(dim=-1).reshape(windows, width).detach().cpu().double()
        scores: dict[int, float] = {}
        for w, slots in enumerate(encoded.positions):
            for slot, token in enumerate(slots):
                if token is not None:  # overlapping windows: a token's share from each window adds up
                    scores[token] = scores.get(token, 0.0) + float(per_slot[w, slot])
        return self._result(text, encoded, scores, float(per_slot.sum()), logits, base_logits, index, n_steps, baseline)

    def _integrate(self, encoded: _Encoded, baseline_id: int, target, n_steps: int):
        """(logits, baseline logits, target index, attributions (W, T, H)) of the encoded text."""
        import torch

        LayerIntegratedGradients = _captum()
        ids, mask, base = self._tensors(encoded, baseline_id)
        with torch.no_grad():
            logits = self._forward(ids, mask)[0]
            base_logits = self._forward(base, mask)[0]
        index = self._target_index(target, logits)
        windows, width = ids.shape[1], ids.shape[2]
        steps_per_batch = max(1, MAX_TOKENS_PER_BATCH // (windows * width))
        ig = LayerIntegratedGradients(self._forward, self._embeddings())
        with torch.enable_grad():
            attributions = ig.attribute(
                inputs=ids,
                baselines=base,
                additional_forward_args=(mask,),
                target=index,
                n_steps=int(n_steps),
                # Captum counts a batch in examples x steps; its examples are the W windows here.
                internal_batch_size=steps_per_batch * windows,
            )
        return logits, base_logits, index, attributions

    def _tensors(self, encoded: _Encoded, baseline_id: int):
        """(ids, mask, baseline ids), each (1, W, T): windows padded to the longest, content tokens
        of the baseline replaced by `baseline_id` ([CLS], [SEP] and padding stay)."""
        import torch

        width = max(len(w) for w in encoded.windows)
        ids = torch.full((1, len(encoded.windows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        base = ids.clone()
        for w, window in enumerate(encoded.windows):
            ids[0, w, : len(window)] = torch.tensor(window)
            mask[0, w, : len(window)] = 1
            base[0, w, : len(window)] = torch.tensor([window[0], *[baseline_id] * (len(window) - 2), window[-1]])
        return ids.to(self.device), mask.to(self.device), base.to(self.device)

    def _result(self, text, encoded, scores, total, logits, base_logits, index, n_steps, baseline) -> Explanation:
        from .inference.classifier import softmax

        logit, base_logit = float(logits[index]), float(base_logits[index])
        probs = softmax(logits.detach().cpu().numpy()[None, :], float(self.meta.temperature))[0]
        return Explanation(
            target=self.labels[index],
            target_index=index,
            tokens=merge_words(text, encoded, scores),
            delta=total - (logit - base_logit),
            logit=logit,
            baseline_logit=base_logit,
            n_steps=int(n_steps),
            baseline=baseline,
            truncated=encoded.truncated,
            windows=len(encoded.windows),
            model_version=self.model_version,
            note=ensemble_note(self.meta),
            probabilities={name: float(p) for name, p in zip(self.labels, probs)},
        )


def _captum():
    try:
        from captum.attr import LayerIntegratedGradients
    except ImportError:
        raise ConfigError(
            "explanations need Captum: pip install 'ticket-triage[serve]' (or pip install 'captum>=0.7')"
        ) from None
    return LayerIntegratedGradients


def ensemble_note(meta) -> str:
    spec = getattr(meta, "ensemble", None)
    if not spec:
        return ""
    mixed = "mixes in" if spec.get("enabled") else "holds (switched off)"
    return (
        f"attributions explain the transformer only; this model also {mixed} a {spec.get('kind', 'tfidf')} model "
        f"at weight {spec.get('weight')}, whose words are not attributed"
    )


def explain(
    model: str | Path | Explainer,
    text: str,
    target: str | int | None = None,
    n_steps: int = DEFAULT_STEPS,
    baseline: str = "auto",
) -> Explanation:
    """Explain one text with a model folder (loaded here) or an `Explainer` already loaded."""
    explainer = model if isinstance(model, Explainer) else Explainer.load(model)
    return explainer.explain(text, target=target, n_steps=n_steps, baseline=baseline)


def ticket_text(subject: str | None, body: str) -> str:
    """What the classifier reads for a ticket (as `Ticket.text` and POST /v1/tickets build it)."""
    return f"{subject}\n\n{body}" if subject else body


def top_words(explanation: Explanation, k: int = 10) -> Sequence[WordAttribution]:
    """The k words that pushed hardest towards the target (largest attributions first)."""
    return sorted(explanation.tokens, key=lambda w: -w.attribution)[:k]
