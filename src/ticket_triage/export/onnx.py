"""Export a model folder to ONNX (fp32, optionally int8), with parity checks.

    export_onnx("runs/demo/model", "runs/demo/onnx", quantize="int8", check_data="data/test.parquet")

The out folder is self-contained: model.onnx (+ model.int8.onnx), the tokenizer, triage.json,
taxonomy.yaml and config.json, so `Classifier.load(out_dir)` and `triage predict` use it
directly. Steps:

1. trace the PyTorch model with the TorchScript exporter (`dynamo=False`; the dynamo exporter
   needs onnxscript) using eager attention, whose graph ONNX Runtime's BERT optimizer can fuse
   into its Attention / SkipLayerNormalization kernels; dynamic batch and sequence axes;
2. optimise with `onnxruntime.transformers.optimizer` (kept only if logits still match);
   with [CLS] pooling, the last layer's row-wise ops then run on the [CLS] row only
   (graph.py: the same logits for about 1/8 less compute on a 6-layer MiniLM);
3. parity: fp32 ONNX logits must be within 1e-3 of PyTorch's on sample texts and random ids;
4. int8: `quantize_dynamic` (QInt8 weights, uint8 dynamic activations; MatMul, the fused
   Attention and the embedding table), one weight scale per tensor first; reported: logit drift
   and argmax agreement, and with `check_data` the macro-F1 of fp32 vs int8 on a labelled file
   (target: <= 1 point lost; per-channel scales are tried when per-tensor loses more, and the
   better of the two is kept: `int8_per_channel` says which).
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, ModelError
from ..evaluation.metrics import classification_metrics
from ..inference.backends import ONNX_FP32_FILE, ONNX_INT8_FILE, TORCH_WEIGHT_FILES
from .graph import apply_cls_rows_only

REPORT_FILE = "report.json"
PARITY_TOLERANCE = 1e-3
INT8_F1_TARGET_POINTS = 1.0
OPSET = 17
SAMPLE_TEXTS = [
    "I disputed an inaccurate account on my credit report and the bureau did not fix it.",
    "A debt collector keeps calling me about a debt I do not owe.",
    "My mortgage servicer misapplied my escrow payment and charged a late fee.",
    "The bank closed my checking account without notice and kept my money.",
    "Unauthorized charge on my credit card; the card company denied my dispute after two months of calls, "
    "letters and faxes, and now interest keeps growing on a balance that is not mine. " * 6,
    "student loan",
    "Payday lender took money from my savings account twice for the same loan payment.",
    "I was charged a fee for a money transfer that never arrived.",
]


@dataclass
class ExportReport:
    out_dir: str
    files: dict[str, int]  # file name -> bytes
    pooling: str
    opset: int
    exporter: str
    optimized: bool
    fused_operators: dict[str, int]
    cls_only_ops: int  # ops of the last layer moved after the [CLS] Gather (0: not applied)
    parity_max_abs_diff: float
    parity_tolerance: float
    parity_ok: bool
    quantize: str | None = None
    int8_max_abs_diff: float | None = None
    int8_argmax_agreement: float | None = None
    int8_per_channel: bool | None = None
    check_data: str | None = None
    check_rows: int | None = None
    macro_f1_fp32: float | None = None
    macro_f1_int8: float | None = None
    macro_f1_delta_points: float | None = None  # int8 - fp32, in points (x100)
    int8_within_target: bool | None = None
    check_argmax_agreement: float | None = None  # int8 vs fp32 predictions on the check data
    seconds: float = 0.0
    versions: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, folder: str | Path) -> Path:
        path = Path(folder, REPORT_FILE)
        path.write_text(json.dumps(self.to_dict(), indent=2))
        return path


class _LogitsOnly:
    """Wraps a classifier so the traced graph has inputs (input_ids, attention_mask) and one output."""

    def __new__(cls, model):
        import torch

        class LogitsOnly(torch.nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, input_ids, attention_mask):
                out = self.inner(input_ids=input_ids, attention_mask=attention_mask)
                return out.logits if hasattr(out, "logits") else out[0]

        # eval() matters: the exporter restores the wrapper's mode (train, by default) onto the model.
        return LogitsOnly(model).eval()


def _use_eager_attention(model) -> None:
    """Eager attention traces to MatMul/Softmax that ORT's optimizer fuses; SDPA does not fuse."""
    target = model.encoder if hasattr(model, "encoder") and hasattr(model.encoder, "set_attn_implementation") else model
    try:
        target.set_attn_implementation("eager")
    except Exception:  # pragma: no cover - older transformers or models without the switch
        pass


def _sample_batches(tokenizer, meta, extra_texts: list[str], seed: int = 0):
    """Padded batches to compare backends: real texts plus random token ids of varied length."""
    from ..tokenization import encode_texts, pad_batch

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = encode_texts(tokenizer, SAMPLE_TEXTS + list(extra_texts), meta.max_length, meta.truncation)
    batches = [pad_batch(ids[i : i + 8], pad_id) for i in range(0, len(ids), 8)]
    rng = np.random.default_rng(seed)
    vocab = len(tokenizer)
    specials = set(tokenizer.all_special_ids)
    for batch_size in (1, 3):
        lengths = rng.integers(3, meta.max_length + 1, size=batch_size)
        rows = [
            [int(t) if int(t) not in specials else 1000 % vocab for t in rng.integers(0, vocab, size=n)]
            for n in lengths
        ]
        batches.append(pad_batch(rows, pad_id))
    return batches


def _ort_session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _max_diff(path: Path, batches, reference: np.ndarray) -> float:
    """Largest |logit difference| of the graph at `path` from PyTorch's `reference` (inf if it does not run)."""
    try:
        return float(np.abs(_run(_ort_session(path), batches) - reference).max())
    except Exception:  # onnxruntime raises its own exception types for a graph it cannot run
        return float("inf")


def _run(session, batches) -> np.ndarray:
    names = {i.name for i in session.get_inputs()}
    outs = []
    for input_ids, attention_mask in batches:
        feed = {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()}
        outs.append(session.run(None, {k: v for k, v in feed.items() if k in names})[0])
    return np.concatenate(outs)


@contextlib.contextmanager
def _quiet_logging():
    """Mute ORT's optimizer/quantizer log lines without letting their root-logger calls
    (logging.warning -> basicConfig) install a handler in the user's process."""
    root = logging.getLogger()
    guard = logging.NullHandler()
    added = not root.handlers
    if added:
        root.addHandler(guard)
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)
        if added:
            root.removeHandler(guard)


def _optimize(raw: Path, dest: Path, config) -> dict[str, int] | None:
    """ORT's transformer optimizer for BERT-family graphs; None if it does not apply.

    MPNet goes through it too, at the same opset and with eager attention (its only kind): its
    layer norms and GELUs fuse, while its attention (scores plus a relative position bias) and
    embeddings (positions counted from the pad id) match no BERT pattern and stay as plain ops,
    which is correct, just slower than fused kernels. Any wrong fusion fails the parity check."""
    try:
        from onnxruntime.transformers.optimizer import optimize_model

        with warnings.catch_warnings(), _quiet_logging():
            warnings.simplefilter("ignore")
            optimized = optimize_model(
                str(raw),
                model_type="bert",
                num_heads=int(config.num_attention_heads),
                hidden_size=int(config.hidden_size),
                opt_level=1,
            )
        stats = {k: int(v) for k, v in optimized.get_fused_operator_statistics().items() if v}
        optimized.save_model_to_file(str(dest))
        return stats
    except Exception:
        return None


def _quantize(src: Path, dest: Path, per_channel: bool) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet_logging():
        quantize_dynamic(
            str(src),
            str(dest),
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            # The optimizer's fused contrib ops defeat shape inference; their outputs are float.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )


def copy_folder_files(src: Path, dest: Path) -> None:
    """Copy the model folder's non-weight files (tokenizer, triage.json, taxonomy, config, metrics)."""
    skip = set(TORCH_WEIGHT_FILES) | {ONNX_FP32_FILE, ONNX_INT8_FILE, REPORT_FILE}
    for path in src.iterdir():
        if path.is_file() and path.name not in skip:
            shutil.copy2(path, dest / path.name)


def export_onnx(
    model_dir: str | Path,
    out_dir: str | Path,
    quantize: str | None = None,
    check_data: str | Path | None = None,
    *,
    check_rows: int | None = 5000,
    batch_size: int = 32,
) -> ExportReport:
    """Export `model_dir` to a self-contained ONNX folder `out_dir` (may be `model_dir` itself)."""
    started = time.perf_counter()
    if quantize not in (None, "int8"):
        raise ConfigError(f"unknown quantisation {quantize!r}: use int8 or leave it out")
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        raise ModelError("ONNX export needs onnx and onnxruntime: run `pip install 'ticket-triage[onnx]'`") from None
    import torch

    from ..modeling import load_model_folder

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if not model_dir.is_dir():
        raise ModelError(f"model folder {model_dir} does not exist")
    model, tokenizer, meta = load_model_folder(model_dir)
    if check_data is not None and not Path(check_data).is_file():
        raise ModelError(f"check data file {check_data} does not exist")
    out_dir.mkdir(parents=True, exist_ok=True)
    same_folder = out_dir.resolve() == model_dir.resolve()
    if not same_folder:
        copy_folder_files(model_dir, out_dir)
    if quantize is None:
        # A stale int8 graph from an earlier export would be picked by backend="auto".
        (out_dir / ONNX_INT8_FILE).unlink(missing_ok=True)

    # 1. trace
    _use_eager_attention(model)
    wrapper = _LogitsOnly(model)
    check_texts: list[str] = []
    checked = None
    if check_data is not None:
        from ..inference.files import read_labelled
        from ..modeling import load_folder_taxonomy

        checked = read_labelled(check_data, list(meta.labels), load_folder_taxonomy(model_dir), max_rows=check_rows)
        check_texts = checked[0][:16]
    batches = _sample_batches(tokenizer, meta, check_texts)
    example = batches[0]
    raw = out_dir / "model.raw.onnx"
    fp32 = out_dir / ONNX_FP32_FILE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python bools in transformers' mask code
        torch.onnx.export(
            wrapper,
            (example[0], example[1]),
            str(raw),
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "sequence"},
                "attention_mask": {0: "batch", 1: "sequence"},
                "logits": {0: "batch"},
            },
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    with torch.inference_mode():
        reference = np.concatenate([wrapper(ids, mask).float().numpy() for ids, mask in batches])

    # 2. optimise (kept only when logits still match), then [CLS]-only last-layer ops (same rule)
    fused = _optimize(raw, fp32, model.config)
    optimized = False
    if fused is not None:
        diff = float(np.abs(_run(_ort_session(fp32), batches) - reference).max())
        optimized = diff <= PARITY_TOLERANCE
    if not optimized:
        raw.replace(fp32)
        fused = {}
    raw.unlink(missing_ok=True)
    cls_only = (
        apply_cls_rows_only(fp32, lambda path: _max_diff(path, batches, reference), PARITY_TOLERANCE)
        if meta.pooling == "cls"
        else 0
    )

    # 3. parity
    fp32_logits = _run(_ort_session(fp32), batches)
    parity = float(np.abs(fp32_logits - reference).max())
    import onnxruntime as ort
    import transformers

    report = ExportReport(
        out_dir=str(out_dir),
        files={},
        pooling=meta.pooling,
        opset=OPSET,
        exporter="torch.onnx.export(dynamo=False)",
        optimized=optimized,
        fused_operators=fused or {},
        cls_only_ops=cls_only,
        parity_max_abs_diff=parity,
        parity_tolerance=PARITY_TOLERANCE,
        parity_ok=parity <= PARITY_TOLERANCE,
        quantize=quantize,
        versions={
            "torch": torch.__version__,
            "onnxruntime": ort.__version__,
            "onnx": onnx.__version__,
            "transformers": transformers.__version__,
        },
    )

    # 4. int8: one scale per weight tensor first. Per-channel scales keep logits closer to fp32
    # (demo MiniLM: 99.2% vs 98.2% same argmax) at the same speed, yet lost more macro-F1 on all
    # three labelled sets we measured (val -0.08 vs +0.60, test -1.01 vs +0.05, 3000 bundled rows
    # -0.24 vs -0.11 points); the other mode is tried if the F1 target is missed.
    if quantize == "int8" and report.parity_ok:
        int8 = out_dir / ONNX_INT8_FILE
        report.int8_per_channel = False
        _quantize(fp32, int8, per_channel=False)
        if checked is not None:
            report.check_data, report.check_rows = str(check_data), len(checked[0])
            f1_fp32, fp32_pred = _f1_of(out_dir, fp32, checked, batch_size)
            f1_int8, int8_pred = _f1_of(out_dir, int8, checked, batch_size)
            _set_f1(report, f1_fp32, f1_int8, fp32_pred, int8_pred)
            if not report.int8_within_target:
                alt = out_dir / "model.int8.alt.onnx"
                _quantize(fp32, alt, per_channel=True)
                f1_alt, alt_pred = _f1_of(out_dir, alt, checked, batch_size)
                if f1_alt > f1_int8:
                    alt.replace(int8)
                    report.int8_per_channel = True
                    _set_f1(report, f1_fp32, f1_alt, fp32_pred, alt_pred)
                alt.unlink(missing_ok=True)
        int8_logits = _run(_ort_session(int8), batches)
        report.int8_max_abs_diff = float(np.abs(int8_logits - reference).max())
        report.int8_argmax_agreement = float((int8_logits.argmax(1) == reference.argmax(1)).mean())
    elif checked is not None:
        report.check_data, report.check_rows = str(check_data), len(checked[0])
        report.macro_f1_fp32 = _f1_of(out_dir, fp32, checked, batch_size)[0]

    report.files = {p.name: p.stat().st_size for p in sorted(out_dir.iterdir()) if p.is_file()}
    report.seconds = round(time.perf_counter() - started, 2)
    report.save(out_dir)
    report.files[REPORT_FILE] = (out_dir / REPORT_FILE).stat().st_size
    if not report.parity_ok:
        raise ModelError(
            f"ONNX export does not match PyTorch: max |logit difference| {parity:.2e} > {PARITY_TOLERANCE:g} "
            f"(details in {out_dir / REPORT_FILE}); the ONNX files are not safe to use"
        )
    return report


def _f1_of(folder: Path, onnx_file: Path, checked, batch_size: int) -> tuple[float, np.ndarray]:
    """Macro-F1 (and the predictions) of one ONNX file on the labelled check texts."""
    from ..inference.backends import OnnxBackend
    from ..inference.classifier import Classifier
    from ..modeling import ModelMeta, load_tokenizer

    tokenizer = load_tokenizer(str(folder))
    clf = Classifier(
        folder, ModelMeta.load(folder), tokenizer, OnnxBackend(onnx_file), None, "check", tokenizer.pad_token_id or 0
    )
    texts, y, _ = checked
    pred = clf.predict_logits(texts, batch_size).argmax(1)
    return classification_metrics(y, pred, clf.labels)["macro_f1"], pred


def _set_f1(report: ExportReport, f1_fp32: float, f1_int8: float, fp32_pred: np.ndarray, int8_pred: np.ndarray) -> None:
    report.macro_f1_fp32, report.macro_f1_int8 = f1_fp32, f1_int8
    report.macro_f1_delta_points = round(100 * (f1_int8 - f1_fp32), 3)
    report.int8_within_target = report.macro_f1_delta_points >= -INT8_F1_TARGET_POINTS
    report.check_argmax_agreement = float((fp32_pred == int8_pred).mean())
