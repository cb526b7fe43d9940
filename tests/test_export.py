"""ONNX export: parity with PyTorch (cls and mean pooling), int8, self-contained folder, CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("onnxruntime")

from _hardware_support import plain_cpu  # noqa: F401,E402  (autouse: auto picks as on a CPU without bf16)
from _model_support import TEXTS, make_model_folder  # noqa: E402


def random_texts(n=24, seed=0):
    words = "credit report debt collector mortgage loan payment escrow card charge fee bank checking savings money student late zzqx 42".split()
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(words, size=int(rng.integers(1, 80)))) for _ in range(n)]


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_fp32_parity_with_pytorch(tmp_path, tiny_model_dir, pooling):
    from ticket_triage import Classifier
    from ticket_triage.export import export_onnx

    model_dir = make_model_folder(tmp_path / "model", tiny_model_dir, pooling=pooling)
    out = tmp_path / "onnx"
    report = export_onnx(model_dir, out)
    assert report.parity_ok and report.parity_max_abs_diff < 1e-3 and report.pooling == pooling
    assert json.loads((out / "report.json").read_text())["parity_ok"] is True
    names = {p.name for p in out.iterdir()}
    assert {"model.onnx", "triage.json", "config.json", "tokenizer.json", "taxonomy.yaml"} <= names
    assert not any(n.endswith(".safetensors") for n in names), "PyTorch weights are left out"
    assert "model.int8.onnx" not in names

    torch_clf = Classifier.load(model_dir, backend="torch")
    onnx_clf = Classifier.load(out)
    assert onnx_clf.backend == "onnx" and onnx_clf.precision == "fp32" and onnx_clf.labels == torch_clf.labels
    assert onnx_clf.model_version.endswith("-onnx") and onnx_clf.model_version != torch_clf.model_version
    texts = random_texts() + TEXTS
    a, b = torch_clf.predict_logits(texts, batch_size=5), onnx_clf.predict_logits(texts, batch_size=7)
    np.testing.assert_allclose(b, a, atol=1e-4)
    assert [p.category for p in onnx_clf.predict(texts)] == [p.category for p in torch_clf.predict(texts)]
    from ticket_triage.errors import ModelError

    with pytest.raises(ModelError, match="PyTorch weights"):
        Classifier.load(out, backend="torch")


def test_int8_export_loads_and_predicts(tmp_path, tiny_model_dir):
    from ticket_triage import Classifier
    from ticket_triage.export import export_onnx

    model_dir = make_model_folder(tmp_path / "model", tiny_model_dir)
    torch_clf = Classifier.load(model_dir)
    texts = random_texts(40, seed=1)
    # A labelled check file: the labels are the fp32 model's own predictions.
    labelled = tmp_path / "check.parquet"
    pd.DataFrame({"text": texts, "label": [p.category for p in torch_clf.predict(texts)]}).to_parquet(labelled)

    report = export_onnx(model_dir, model_dir, quantize="int8", check_data=labelled)  # export in place
    assert (model_dir / "model.int8.onnx").is_file() and (model_dir / "model.onnx").is_file()
    assert report.int8_argmax_agreement is not None and report.int8_max_abs_diff < 1.0
    # fp32 predicts the labels exactly: its macro-F1 is that of a perfect score, over the model's
    # categories as `triage evaluate` (evaluation.metrics) counts it, absent categories included.
    from ticket_triage.evaluation.metrics import classification_metrics

    y = [torch_clf.labels.index(p.category) for p in torch_clf.predict(texts)]
    assert report.check_rows == 40 and report.macro_f1_fp32 == pytest.approx(
        classification_metrics(y, y, torch_clf.labels)["macro_f1"]
    )
    assert report.macro_f1_delta_points == pytest.approx(100 * (report.macro_f1_int8 - report.macro_f1_fp32), abs=1e-3)
    assert report.int8_within_target == (report.macro_f1_delta_points >= -1.0)
    assert 0.8 <= report.check_argmax_agreement <= 1.0 and report.int8_per_channel in (True, False)

    clf = Classifier.load(model_dir)  # auto: the int8 graph is fastest
    assert (clf.backend, clf.precision) == ("onnx", "int8") and clf.model_version.endswith("-onnx-int8")
    preds = clf.predict(texts)
    assert all(p.category in clf.labels and 0 < p.confidence <= 1 for p in preds)
    agree = np.mean([p.category == q.category for p, q in zip(preds, torch_clf.predict(texts))])
    assert agree >= 0.8
    assert Classifier.load(model_dir, backend="onnx-fp32").precision == "fp32"
    assert Classifier.load(model_dir, backend="torch").backend == "torch"
    export_onnx(model_dir, model_dir)  # re-export without int8: no stale int8 graph is left behind
    assert not (model_dir / "model.int8.onnx").exists() and Classifier.load(model_dir).precision == "fp32"


def test_cli_export(tmp_path, tiny_model_dir, capsys):
    from _model_support import cli_error, cli_ok

    model_dir = make_model_folder(tmp_path / "model", tiny_model_dir)
    cli_ok(["export", "--model", str(model_dir), "--format", "onnx", "--out", str(tmp_path / "onnx")])
    assert "fp32 parity" in capsys.readouterr().out
    assert (tmp_path / "onnx" / "model.onnx").is_file()
    # The exported folder is what `triage predict` takes.
    src = tmp_path / "in.jsonl"
    pd.DataFrame({"text": TEXTS}).to_json(src, orient="records", lines=True)
    cli_ok(["predict", "--model", str(tmp_path / "onnx"), "--input", str(src), "--out", str(tmp_path / "o.csv")])
    assert "onnx-fp32" in capsys.readouterr().out

    assert "only onnx" in cli_error(
        capsys, ["export", "--model", str(model_dir), "--format", "tflite", "--out", str(tmp_path / "x")]
    )
    assert "int8" in cli_error(
        capsys, ["export", "--model", str(model_dir), "--quantize", "int4", "--out", str(tmp_path / "x")]
    )
    assert "does not exist" in cli_error(
        capsys, ["export", "--model", str(tmp_path / "none"), "--out", str(tmp_path / "x")]
    )


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_last_layer_runs_on_cls_row_only(tmp_path, tiny_model_dir, pooling):
    """cls pooling: the pooler's Gather moves above the last layer's row-wise ops (same logits);
    mean pooling needs every token, so its graph keeps them on all rows."""
    import onnx

    from ticket_triage.export import export_onnx

    model_dir = make_model_folder(tmp_path / "model", tiny_model_dir, pooling=pooling)
    report = export_onnx(model_dir, tmp_path / "onnx")
    assert report.parity_ok
    graph = onnx.load(str(tmp_path / "onnx" / "model.onnx")).graph
    cls_gathers = [n for n in graph.node if n.op_type == "Gather" and n.name.endswith("_cls_gather")]
    if pooling == "mean":
        assert report.cls_only_ops == 0 and not cls_gathers
        return
    # Attention output projection + 2 feed-forward MatMuls, their 2 layer norms and the GELU at least.
    assert report.cls_only_ops >= 6 and cls_gathers
    sliced = set()
    for n in graph.node:  # tensors computed from a [CLS]-only Gather
        if n in cls_gathers or any(i in sliced for i in n.input):
            sliced.update(n.output)
    last_matmuls = [n for n in graph.node if n.op_type == "MatMul"][-3:]
    assert all(n.input[0] in sliced for n in last_matmuls), "the last layer's MatMuls still see every token"


def test_chunks_model_onnx_pools_like_pytorch(tmp_path, tiny_model_dir):
    """The ONNX graph scores windows like any batch; Classifier pools them the same way for both backends."""
    from ticket_triage import Classifier
    from ticket_triage.export import export_onnx

    model_dir = make_model_folder(
        tmp_path / "model", tiny_model_dir, max_length=16, long_text="chunks", max_chunks=4, chunk_pool="attention"
    )
    report = export_onnx(model_dir, tmp_path / "onnx")
    assert report.parity_ok
    onnx_clf, torch_clf = Classifier.load(tmp_path / "onnx"), Classifier.load(model_dir, backend="torch")
    assert onnx_clf.backend == "onnx" and (onnx_clf.meta.long_text, onnx_clf.meta.chunk_pool) == ("chunks", "attention")
    texts = random_texts() + TEXTS
    np.testing.assert_allclose(
        onnx_clf.predict_logits(texts, batch_size=7), torch_clf.predict_logits(texts, batch_size=5), atol=1e-4
    )
