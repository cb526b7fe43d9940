"""Backends that turn padded token ids into raw logits: PyTorch (fp32 or bf16) and
ONNX Runtime (fp32 or int8).

A backend sees only `(input_ids, attention_mask)` for one padded batch and returns logits of
shape (batch, num_labels) as float32 numpy; tokenization, batching and temperature live in
`Classifier`, so every backend cuts and scores text the same way.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ..errors import ModelError

# ONNX files an export may leave in a model folder, fastest first.
ONNX_INT8_FILE = "model.int8.onnx"
ONNX_FP32_FILE = "model.onnx"
ONNX_FILES = (ONNX_INT8_FILE, ONNX_FP32_FILE)
TORCH_WEIGHT_FILES = ("model.safetensors", "head.safetensors", "pytorch_model.bin")
BACKENDS = ("auto", "torch", "torch-bf16", "onnx", "onnx-fp32", "onnx-int8")


def file_digest(paths: list[Path], n: int = 12) -> str:
    """First `n` hex digits of the sha256 over the given files (in order): a stable weights id."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:n]


def torch_weight_files(folder: Path) -> list[Path]:
    return [folder / name for name in TORCH_WEIGHT_FILES if (folder / name).is_file()]


class ModuleBackend:
    """A PyTorch model already in memory (training's validation and test), on `device`, under
    autocast to `dtype` when given (bf16/fp16 training scores in the precision it trains in)."""

    name = "torch"
    precision = "fp32"

    def __init__(self, model, device, dtype=None):
        import torch

        self._torch = torch
        self.model = model
        self.device = torch.device(device)
        self.dtype = dtype
        if dtype is not None:
            self.precision = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, str(dtype))
        self.weight_files: list[Path] = []

    def __call__(self, input_ids, attention_mask) -> np.ndarray:
        from contextlib import nullcontext

        torch = self._torch
        autocast = (
            torch.autocast(device_type=self.device.type, dtype=self.dtype) if self.dtype is not None else nullcontext()
        )
        self.model.eval()
        with torch.inference_mode(), autocast:
            out = self.model(input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device))
        logits = out.logits if hasattr(out, "logits") else out[0]
        return logits.float().cpu().numpy()


class TorchBackend(ModuleBackend):
    """The PyTorch model from the folder, run under `torch.inference_mode()` on `device`
    ("auto": a CUDA GPU if one is visible, else Apple MPS, else the CPU)."""

    def __init__(self, folder: Path, threads: int | None = None, device: str = "auto"):
        import torch

        from ..modeling import load_model_folder, pick_device

        if not torch_weight_files(folder):
            raise ModelError(
                f"{folder} has no PyTorch weights (model.safetensors), which device {device!r} needs: "
                "use the folder `triage train` wrote, or backend='onnx' on the CPU"
            )
        if threads:
            torch.set_num_threads(int(threads))  # process-wide: torch has no per-model thread pool
        chosen = pick_device(device)
        model, _, _ = load_model_folder(folder, device=str(chosen))
        super().__init__(model, chosen)
        self.weight_files = torch_weight_files(folder)


class TorchBf16Backend(TorchBackend):
    """The PyTorch model with its weights and activations in bf16; logits come back as float32.
    Fast where the CPU does bf16 in hardware (AMX, AVX-512 BF16); elsewhere it runs, emulated and
    slower than fp32. On CUDA it needs a GPU with bf16.

    Not autocast over fp32 weights: that re-casts every weight on every call and switches dtypes
    around each op, and measured 1.3x slower (MiniLM, batch 32, AMX Xeon: 263 against 345
    texts/s) for the same predictions on all 1,061 test texts (log-loss within 0.0002 of fp32
    either way). PyTorch's CPU LayerNorm and softmax accumulate in fp32 for bf16 inputs."""

    precision = "bf16"

    def __init__(self, folder: Path, threads: int | None = None, device: str = "auto"):
        super().__init__(folder, threads, device)
        kind = self.device.type
        if kind == "mps" or (kind == "cuda" and not self._torch.cuda.is_bf16_supported()):
            raise ModelError(f"backend 'torch-bf16' does not run on this {kind} device; use backend='torch'")
        self.model.to(self._torch.bfloat16)


class OnnxBackend:
    """An exported ONNX graph (fp32 or int8) run by ONNX Runtime on CPU."""

    name = "onnx"

    def __init__(self, path: Path, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise ModelError(
                "onnxruntime is not installed: run `pip install 'ticket-triage[onnx]'` or use backend='torch'"
            ) from None
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        if threads:
            options.intra_op_num_threads = int(threads)  # default (0) = one thread per physical core
        # Idle pool threads sleep instead of spin-waiting between ops. On a shared 2-core machine
        # spinning workers steal the cores that the other workers (and other processes) need:
        # measured 1.2x more texts/s with spinning off under load (bench/infer_speed.py).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"cannot load {path} with ONNX Runtime: {str(exc).splitlines()[0]}") from None
        self.input_names = {i.name for i in self.session.get_inputs()}
        self.precision = "int8" if path.name == ONNX_INT8_FILE else "fp32"
        self.weight_files = [path]

    def __call__(self, input_ids, attention_mask) -> np.ndarray:
        feed = {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()}
        if "token_type_ids" in self.input_names:
            feed["token_type_ids"] = np.zeros_like(feed["input_ids"])
        return self.session.run(None, {k: v for k, v in feed.items() if k in self.input_names})[0].astype(
            np.float32, copy=False
        )


def open_backend(folder: Path, backend: str = "auto", threads: int | None = None, device: str = "auto"):
    """The backend `backend` names for `folder`; "auto" is `choose_auto`'s pick, and the opened
    backend's `auto_reason` says why. `device` places the PyTorch model; ONNX Runtime runs on the CPU."""
    if backend not in BACKENDS:
        raise ModelError(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)}")
    reason = ""
    if backend == "auto":
        backend, reason = choose_auto(folder, device)
    impl = _open_named(folder, backend, threads, device)
    impl.auto_reason = reason
    return impl


def choose_auto(folder: Path, device: str = "auto") -> tuple[str, str]:
    """(backend, why) for backend="auto": the fastest path for this folder on this machine.

    Measured with MiniLM at batch 32, 2 threads (bench/infer_speed.py): on a CPU with AMX-BF16
    torch-bf16 runs 317-335 texts/s against ONNX int8's 190 and torch fp32's 91, with the same
    predictions. Without AMX, ONNX int8 (then fp32) beats PyTorch (AMD EPYC: int8 240, bf16 88,
    fp32 49-68); without an export bf16 still beats fp32 there (1.8x) where AVX-512 BF16 is native,
    but is 3x slower than fp32 where bf16 is emulated. On a CUDA GPU only PyTorch runs."""
    from ..hardware import has_amx, has_native_bf16

    torch_ok = bool(torch_weight_files(folder))
    if device not in ("auto", "cpu") or (device == "auto" and torch_ok and _finds_cuda()):
        return "torch", "an accelerator: only PyTorch runs there"
    if torch_ok and has_amx():
        return "torch-bf16", "CPU has AMX-BF16"
    onnx = [name for name in ONNX_FILES if (folder / name).is_file()] if _has_onnxruntime() else []
    if onnx:
        return (
            ("onnx-int8", "ONNX int8 export present")
            if onnx[0] == ONNX_INT8_FILE
            else ("onnx-fp32", "ONNX fp32 export present")
        )
    if not torch_ok:
        raise ModelError(f"{folder} has neither PyTorch weights (model.safetensors) nor an exported {ONNX_FP32_FILE}")
    if has_native_bf16():
        return "torch-bf16", "CPU has AVX-512 BF16, no ONNX export"
    return "torch", "no ONNX export, no native bf16"


def _open_named(folder: Path, backend: str, threads: int | None, device: str):
    if backend == "torch":
        return TorchBackend(folder, threads, device)
    if backend == "torch-bf16":
        return TorchBf16Backend(folder, threads, device)
    if device.startswith(("cuda", "mps")):
        raise ModelError(
            f"backend {backend!r} runs on the CPU (ONNX Runtime); use backend='torch' (or 'auto') for device {device!r}"
        )
    wanted = {"onnx": ONNX_FILES, "onnx-int8": (ONNX_INT8_FILE,), "onnx-fp32": (ONNX_FP32_FILE,)}[backend]
    for name in wanted:
        if (folder / name).is_file():
            return OnnxBackend(folder / name, threads)
    raise ModelError(
        f"{folder} has no {' or '.join(wanted)}: run `triage export --model {folder} --format onnx --out DIR` first"
    )


def _has_onnxruntime() -> bool:
    # An export is useless without the runtime: auto then falls back to PyTorch.
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _finds_cuda() -> bool:
    import torch

    return torch.cuda.is_available()
