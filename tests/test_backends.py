"""CPU features and the backend `auto` picks from them; the torch bf16 backend (precision, version,
logits close to fp32, CLI). Every test names the CPU it assumes (see _hardware_support)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from _hardware_support import AMX, BF16_NO_AMX, PLAIN, assume_cpu
from _model_support import TEXTS, make_model_folder

from ticket_triage import hardware
from ticket_triage.errors import ModelError
from ticket_triage.hardware import CpuInfo

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse avx2 avx512f avx512_vnni avx_vnni avx512_bf16 amx_bf16 amx_tile amx_int8

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse avx2 avx512f avx512_vnni avx_vnni avx512_bf16 amx_bf16 amx_tile amx_int8
"""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_model_dir):
    return make_model_folder(tmp_path_factory.mktemp("backends") / "model", tiny_model_dir)


def folder_with(tmp_path, *names):
    """A folder holding empty files of these names: choose_auto looks at names, opens nothing."""
    for name in names:
        (tmp_path / name).write_bytes(b"")
    return tmp_path


# -- hardware ---------------------------------------------------------------------------------
def test_cpuinfo_is_parsed_and_summarised():
    info = hardware.parse_cpuinfo(CPUINFO)
    assert info.model == "Intel(R) Xeon(R) Platinum 8480+" and "amx_bf16" in info.flags and "fpu" in info.flags
    with assume_cpu(info):
        assert hardware.has_native_bf16() and hardware.has_amx() and hardware.has_vnni()
        assert (
            hardware.cpu_summary()
            == "Intel(R) Xeon(R) Platinum 8480+; amx_bf16 amx_int8 amx_tile avx512_bf16 avx512_vnni avx_vnni avx512f avx2"
        )
    with assume_cpu(BF16_NO_AMX):
        assert hardware.has_native_bf16() and not hardware.has_amx()
    with assume_cpu(PLAIN):
        assert not hardware.has_native_bf16() and not hardware.has_amx() and hardware.has_vnni()
    with assume_cpu(CpuInfo("", frozenset())):
        assert hardware.cpu_summary() == "unknown CPU; no AVX2" and not hardware.has_vnni()


def test_cpuinfo_is_read_once_and_a_missing_file_means_no_features(tmp_path, monkeypatch):
    source = tmp_path / "cpuinfo"
    source.write_text(CPUINFO)
    monkeypatch.setattr(hardware, "CPUINFO", source)
    saved = hardware.set_cpu_info(None)
    try:
        assert hardware.has_amx()
        source.write_text("flags : avx2\n")  # the cache holds: a second read would see no AMX
        assert hardware.has_amx()
        hardware.set_cpu_info(None)
        monkeypatch.setattr(hardware, "CPUINFO", tmp_path / "missing")  # macOS, Windows
        assert hardware.cpu_info() == CpuInfo("", frozenset()) and not hardware.has_native_bf16()
    finally:
        hardware.set_cpu_info(saved)


def test_training_bf16_check_uses_the_shared_reader():
    from ticket_triage.training.loop import _cpu_has_native_bf16

    for cpu, native in ((AMX, True), (BF16_NO_AMX, True), (PLAIN, False)):
        with assume_cpu(cpu):
            assert _cpu_has_native_bf16() is native


# -- the auto rule ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "cpu, files, expected",
    [
        (AMX, ["model.safetensors"], "torch-bf16"),
        (AMX, ["model.safetensors", "model.onnx", "model.int8.onnx"], "torch-bf16"),  # AMX bf16 beats int8 (README)
        (AMX, ["model.onnx", "model.int8.onnx"], "onnx-int8"),  # an ONNX-only folder: no torch to run
        (BF16_NO_AMX, ["model.safetensors", "model.onnx", "model.int8.onnx"], "onnx-int8"),
        (BF16_NO_AMX, ["model.safetensors"], "torch-bf16"),
        (PLAIN, ["model.safetensors", "model.onnx", "model.int8.onnx"], "onnx-int8"),
        (PLAIN, ["model.safetensors", "model.onnx"], "onnx-fp32"),
        (PLAIN, ["model.safetensors"], "torch"),
    ],
)
def test_auto_follows_the_cpu(tmp_path, monkeypatch, cpu, files, expected):
    from ticket_triage.inference import backends

    monkeypatch.setattr(backends, "_finds_cuda", lambda: False)
    with assume_cpu(cpu):
        chosen, reason = backends.choose_auto(folder_with(tmp_path, *files))
    assert chosen == expected and reason


def test_auto_on_a_gpu_or_without_onnxruntime(tmp_path, monkeypatch):
    from ticket_triage.inference import backends

    folder = folder_with(tmp_path, "model.safetensors", "model.onnx", "model.int8.onnx")
    monkeypatch.setattr(backends, "_finds_cuda", lambda: True)
    with assume_cpu(AMX):
        assert backends.choose_auto(folder)[0] == "torch"  # CUDA: PyTorch fp32 there, as before
        assert backends.choose_auto(folder, device="cpu")[0] == "torch-bf16"
    monkeypatch.setattr(backends, "_finds_cuda", lambda: False)
    monkeypatch.setattr(backends, "_has_onnxruntime", lambda: False)
    with assume_cpu(PLAIN):
        assert backends.choose_auto(folder)[0] == "torch"
    (tmp_path / "empty").mkdir()
    with assume_cpu(PLAIN), pytest.raises(ModelError, match="neither PyTorch weights"):
        backends.choose_auto(tmp_path / "empty")


def test_auto_loads_bf16_where_the_cpu_has_amx(model_dir):
    from ticket_triage import Classifier

    with assume_cpu(AMX):
        clf = Classifier.load(model_dir)
    assert (clf.backend, clf.precision) == ("torch", "bf16")
    assert re.fullmatch(r"[0-9a-f]{12}-torch-bf16", clf.model_version)
    assert clf.backend_label == "torch-bf16 (auto: CPU has AMX-BF16)"
    with assume_cpu(PLAIN):
        plain = Classifier.load(model_dir)
    assert (plain.backend, plain.precision, plain.backend_label) == (
        "torch",
        "fp32",
        "torch-fp32 (auto: no ONNX export, no native bf16)",
    )
    assert plain.model_version == clf.model_version[: -len("-bf16")], (
        "same weights, the precision is the only difference"
    )


# -- the bf16 backend -------------------------------------------------------------------------
def test_bf16_logits_are_close_to_fp32(model_dir):
    from ticket_triage import Classifier

    bf16 = Classifier.load(model_dir, backend="torch-bf16", device="cpu")
    fp32 = Classifier.load(model_dir, backend="torch", device="cpu")
    assert (bf16.backend, bf16.precision, bf16.backend_label) == ("torch", "bf16", "torch-bf16")
    assert "precision='bf16'" in repr(bf16)
    texts = TEXTS * 4 + [f"{t} {i}" for i, t in enumerate(TEXTS)]
    a, b = bf16.predict_logits(texts, batch_size=8), fp32.predict_logits(texts, batch_size=8)
    assert a.dtype == np.float32 and a.shape == b.shape
    scale = np.abs(b).max()
    assert np.abs(a - b).max() <= 0.05 * scale, "bf16 keeps ~3 significant digits"
    assert np.abs(a - b).max() > 0, "autocast really ran in bf16"
    assert np.mean(a.argmax(1) == b.argmax(1)) >= 0.9
    probs = bf16.predict_proba(texts)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)


@pytest.mark.parametrize(
    "fields",
    [{"pooling": "mean"}, {"max_length": 16, "long_text": "chunks", "max_chunks": 4, "chunk_pool": "attention"}],
)
def test_bf16_runs_mean_pooling_and_chunks_models(tmp_path, tiny_model_dir, fields):
    from ticket_triage import Classifier

    folder = make_model_folder(tmp_path / "model", tiny_model_dir, **fields)
    a = Classifier.load(folder, backend="torch-bf16").predict_logits(TEXTS, batch_size=3)
    b = Classifier.load(folder, backend="torch").predict_logits(TEXTS, batch_size=3)
    assert a.dtype == np.float32 and np.abs(a - b).max() <= 0.05 * np.abs(b).max()


def test_bf16_is_refused_on_a_gpu_without_bf16(model_dir, monkeypatch):
    import torch

    from ticket_triage.inference import backends

    def on_fake_cuda(self, folder, threads=None, device="auto"):  # no GPU here: skip the real load
        self._torch, self.device = torch, torch.device("cuda")

    monkeypatch.setattr(backends.TorchBackend, "__init__", on_fake_cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    with pytest.raises(ModelError, match="'torch-bf16' does not run on this cuda device; use backend='torch'"):
        backends.TorchBf16Backend(model_dir, device="cuda")


def test_unknown_backend_error_is_unchanged(model_dir):
    from ticket_triage import Classifier

    with pytest.raises(
        ModelError, match=r"unknown backend 'tensorrt': use one of auto, torch, torch-bf16, onnx, onnx-fp32, onnx-int8$"
    ):
        Classifier.load(model_dir, backend="tensorrt")


def test_cli_predict_takes_torch_bf16_and_says_what_auto_chose(tmp_path, model_dir, capsys):
    import pandas as pd
    from _model_support import cli_error, cli_ok

    src = tmp_path / "in.csv"
    pd.DataFrame({"text": TEXTS}).to_csv(src, index=False)
    cli_ok(
        [
            "predict",
            "--model",
            str(model_dir),
            "--input",
            str(src),
            "--out",
            str(tmp_path / "a.csv"),
            "--backend",
            "torch-bf16",
        ]
    )
    out = capsys.readouterr().out
    assert "(torch-bf16; model " in out and "-torch-bf16)" in out
    assert len(pd.read_csv(tmp_path / "a.csv")) == len(TEXTS)
    with assume_cpu(AMX):
        cli_ok(["predict", "--model", str(model_dir), "--input", str(src), "--out", str(tmp_path / "b.csv")])
    assert "torch-bf16, auto: CPU has AMX-BF16" in capsys.readouterr().out
    assert "unknown backend 'tensorrt'" in cli_error(
        capsys,
        [
            "predict",
            "--model",
            str(model_dir),
            "--input",
            str(src),
            "--out",
            str(tmp_path / "c.csv"),
            "--backend",
            "tensorrt",
        ],
    )


def test_service_loads_the_bf16_backend(model_dir):
    pytest.importorskip("fastapi")
    from ticket_triage.service.classifier import load_classifier
    from ticket_triage.service.settings import Settings

    settings = Settings(model_dir=model_dir, backend="torch-bf16")
    clf = load_classifier(settings.model_dir, settings.backend, "cpu")
    assert clf.precision == "bf16" and clf.model_version.endswith("-torch-bf16")
