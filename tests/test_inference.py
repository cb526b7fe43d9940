"""The Classifier Python API: shape of results, order, temperature, abstention, bad inputs."""

from __future__ import annotations

import re

import numpy as np
import pytest
from _hardware_support import plain_cpu  # noqa: F401  (autouse: auto picks as on a CPU without bf16)
from _model_support import TEXTS, make_model_folder

from ticket_triage.errors import ConfigError, DataError, ModelError
from ticket_triage.taxonomy import load_taxonomy


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_model_dir):
    return make_model_folder(tmp_path_factory.mktemp("clf") / "model", tiny_model_dir)


@pytest.fixture(scope="module")
def clf(model_dir):
    from ticket_triage import Classifier

    return Classifier.load(model_dir)


def test_api_shape_and_label_names(clf, model_dir):
    import ticket_triage
    from ticket_triage.inference import Classifier, Prediction

    assert ticket_triage.Classifier is Classifier and ticket_triage.Prediction is Prediction
    labels = list(load_taxonomy("cfpb-6").categories)
    assert clf.labels == labels
    assert clf.backend == "torch" and clf.precision == "fp32"
    assert re.fullmatch(r"[0-9a-f]{12}-torch", clf.model_version)
    assert Classifier.load(model_dir).model_version == clf.model_version, "the version id is stable"
    assert clf.meta.max_length == 48 and clf.taxonomy.categories == tuple(labels)

    preds = clf.predict(TEXTS, batch_size=3, top_k=2)
    assert len(preds) == len(TEXTS) and all(isinstance(p, Prediction) for p in preds)
    for p in preds:
        assert list(p.probabilities) == labels
        assert sum(p.probabilities.values()) == pytest.approx(1.0)
        assert p.category == max(p.probabilities, key=p.probabilities.get)
        assert p.confidence == pytest.approx(p.probabilities[p.category])
        assert len(p.top_k) == 2 and p.top_k[0] == (p.category, p.confidence) and p.top_k[1][1] <= p.confidence
        assert p.needs_review is False
        d = p.to_dict()
        assert set(d) == {"category", "confidence", "probabilities", "top_k", "needs_review"}
    from dataclasses import FrozenInstanceError

    with pytest.raises(FrozenInstanceError):
        preds[0].category = "x"
    assert clf.predict(TEXTS[:1])[0].top_k is None
    assert clf.predict([]) == []


def test_order_is_preserved_after_length_sorting(clf):
    calls = []
    inner = clf.backend_impl

    def spy(input_ids, attention_mask):
        calls.append(tuple(input_ids.shape))
        return inner(input_ids, attention_mask)

    texts = TEXTS * 3
    clf.backend_impl = spy
    try:
        batched = clf.predict_logits(texts, batch_size=4)
    finally:
        clf.backend_impl = inner
    widths = [w for _, w in calls]
    assert widths == sorted(widths, reverse=True), "batches run longest first"
    assert len(calls) == 6
    one_by_one = np.concatenate([clf.predict_logits([t]) for t in texts])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    # The logits of different texts differ, so a mix-up of rows would be caught.
    assert np.abs(batched[0] - batched[1]).max() > 1e-3


def test_temperature_from_meta_is_applied(clf):
    from ticket_triage.inference import softmax

    logits = clf.predict_logits(TEXTS)
    base = clf.meta.temperature
    try:
        clf.meta.temperature = 3.0
        probs = np.array([[p.probabilities[l] for l in clf.labels] for p in clf.predict(TEXTS)])
    finally:
        clf.meta.temperature = base
    np.testing.assert_allclose(probs, softmax(logits / 3.0), atol=1e-6)
    assert probs.max(1).mean() < softmax(logits).max(1).mean(), "a higher temperature softens confidence"


def test_empty_texts_raise_data_error_naming_the_index(clf):
    with pytest.raises(DataError, match=r"2 empty .* index 1, 3"):
        clf.predict(["credit report", "   ", "loan", ""])
    with pytest.raises(DataError, match="list of texts"):
        clf.predict("a single string")


def test_huge_text_is_cut_like_training(clf):
    from ticket_triage.tokenization import encode_texts

    huge = ("credit report dispute " * 60000)[:1_000_000] + " mortgage"
    assert len(huge) > 999_000
    ids = encode_texts(clf.tokenizer, [huge], clf.meta.max_length, clf.meta.truncation)[0]
    assert len(ids) == clf.meta.max_length
    pred = clf.predict([huge, "loan"])[0]
    assert pred.category in clf.labels and 0 < pred.confidence <= 1


def test_abstention_routes_low_confidence_to_review(clf):
    preds = clf.predict(TEXTS)
    confidences = sorted(p.confidence for p in preds)
    threshold = (confidences[2] + confidences[3]) / 2  # three below, four above
    flagged = clf.predict(TEXTS, abstain_below=threshold)
    assert [p.needs_review for p in flagged] == [p.confidence < threshold for p in preds]
    assert sum(p.needs_review for p in flagged) == 3
    assert [p.category for p in flagged] == [p.category for p in preds], "category stays the argmax"
    assert all(p.needs_review for p in clf.predict(TEXTS, abstain_below=1.0))
    assert not any(p.needs_review for p in clf.predict(TEXTS, abstain_below=0.0))
    with pytest.raises(ConfigError):
        clf.predict(TEXTS, abstain_below=1.5)


def test_bad_model_folders(tmp_path, model_dir):
    from ticket_triage import Classifier

    with pytest.raises(ModelError, match="does not exist"):
        Classifier.load(tmp_path / "missing")
    with pytest.raises(ModelError, match="triage.json"):
        Classifier.load(tmp_path)
    with pytest.raises(ModelError, match="triage export"):
        Classifier.load(model_dir, backend="onnx")
    with pytest.raises(ModelError, match="unknown backend"):
        Classifier.load(model_dir, backend="tensorrt")


def test_mean_pooling_model(tmp_path, tiny_model_dir):
    from ticket_triage import Classifier

    folder = make_model_folder(tmp_path / "mean", tiny_model_dir, pooling="mean")
    clf = Classifier.load(folder)
    preds = clf.predict(TEXTS)
    assert [p.category in clf.labels for p in preds] == [True] * len(TEXTS)
    np.testing.assert_allclose(
        clf.predict_logits(TEXTS, batch_size=2), np.concatenate([clf.predict_logits([t]) for t in TEXTS]), atol=1e-5
    )


def test_device_choice(tmp_path, model_dir, monkeypatch):
    """device places PyTorch; bad devices fail clearly; with a CUDA GPU, auto prefers PyTorch on it
    over an ONNX export (ONNX Runtime here runs on the CPU)."""
    import shutil

    import torch

    from ticket_triage import Classifier
    from ticket_triage.inference import backends

    on_cpu = Classifier.load(model_dir, backend="torch", device="cpu")
    assert on_cpu.backend_impl.device.type == "cpu"
    assert next(on_cpu.backend_impl.model.parameters()).device.type == "cpu"
    with pytest.raises(ModelError, match="unknown device 'gpu0'"):
        Classifier.load(model_dir, backend="torch", device="gpu0")
    with pytest.raises(ModelError, match="runs on the CPU"):
        Classifier.load(model_dir, backend="onnx", device="cuda")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="no CUDA GPU is visible"):
            Classifier.load(model_dir, backend="torch", device="cuda")
    if not torch.backends.mps.is_available():
        with pytest.raises(ModelError, match="MPS"):
            Classifier.load(model_dir, device="mps")

    exported = tmp_path / "exported"
    shutil.copytree(model_dir, exported)
    (exported / backends.ONNX_FP32_FILE).write_bytes(b"not a graph: auto must not open it when a GPU is there")
    monkeypatch.setattr(backends, "_finds_cuda", lambda: True)
    assert Classifier.load(exported).backend == "torch"
    monkeypatch.setattr(backends, "_finds_cuda", lambda: False)
    with pytest.raises(ModelError, match="cannot load"):
        Classifier.load(exported)  # no GPU: auto takes the (here broken) ONNX export
    for name in backends.TORCH_WEIGHT_FILES:
        (exported / name).unlink(missing_ok=True)
    with pytest.raises(ModelError, match="no PyTorch weights.*device 'mps' needs"):
        Classifier.load(exported, device="mps")  # named accelerator, ONNX-only folder: said, not ignored


@pytest.mark.parametrize("pool", ["mean", "max", "attention"])
def test_chunks_model_pools_its_windows_logits(tmp_path, tiny_model_dir, pool):
    """A chunks model scores each window and pools per text: the same numbers as doing it by hand."""
    import torch

    from ticket_triage import Classifier
    from ticket_triage.modeling import load_model_folder
    from ticket_triage.tokenization import chunk_stride, encode_texts, encode_windows

    folder = make_model_folder(
        tmp_path / "model",
        tiny_model_dir,
        max_length=16,
        long_text="chunks",
        chunk_overlap=0.25,
        max_chunks=4,
        chunk_pool=pool,
    )
    clf = Classifier.load(folder, backend="torch", device="cpu")
    assert (clf.meta.long_text, clf.meta.chunk_pool, clf.meta.max_chunks) == ("chunks", pool, 4)
    windows, owners = encode_windows(clf.tokenizer, TEXTS, 16, chunk_stride(16, 0.25), 4)
    assert len(windows) > len(TEXTS) and max(owners.count(i) for i in set(owners)) == 4, (
        "long texts give several windows, capped"
    )

    model, _, _ = load_model_folder(folder)
    with torch.no_grad():  # each window on its own: no padding at all
        per_window = np.stack(
            [
                model(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long))
                .logits[0]
                .numpy()
                for ids in windows
            ]
        )
    expected = []
    for text in range(len(TEXTS)):
        rows = per_window[[i for i, o in enumerate(owners) if o == text]]
        if pool == "mean":
            expected.append(rows.mean(0))
        elif pool == "max":
            expected.append(rows.max(0))
        else:
            sure = (rows - np.log(np.exp(rows).sum(1, keepdims=True))).max(1)  # top log-probability per window
            weights = np.exp(sure - sure.max()) / np.exp(sure - sure.max()).sum()
            expected.append(weights @ rows)
    got = clf.predict_logits(TEXTS, batch_size=3)
    np.testing.assert_allclose(got, np.array(expected), atol=1e-5)
    # The same folder read as truncate scores the first window only: pooling really changed the answer.
    truncated = encode_texts(clf.tokenizer, TEXTS, 16)
    assert any(len(ids) == 16 for ids in truncated)
    long_rows = [i for i in range(len(TEXTS)) if owners.count(i) > 1]
    first_windows = per_window[[owners.index(i) for i in long_rows]]
    assert np.abs(got[long_rows] - first_windows).max() > 1e-3


def test_old_model_folder_reads_as_truncate_and_bad_settings_are_named(model_dir, tmp_path):
    import json
    import shutil

    from ticket_triage import Classifier
    from ticket_triage.modeling import ModelMeta

    old = tmp_path / "old"
    shutil.copytree(model_dir, old)
    data = json.loads((old / "triage.json").read_text())
    for key in ("long_text", "chunk_overlap", "max_chunks", "chunk_pool"):
        data.pop(key)  # a folder written before whole-text reading existed
    (old / "triage.json").write_text(json.dumps(data))
    assert ModelMeta.load(old).long_text == "truncate"
    np.testing.assert_allclose(
        Classifier.load(old).predict_logits(TEXTS), Classifier.load(model_dir).predict_logits(TEXTS), atol=1e-6
    )

    (old / "triage.json").write_text(json.dumps({**data, "long_text": "sliding"}))
    with pytest.raises(ModelError, match="long_text 'sliding' is not one of truncate, chunks"):
        Classifier.load(old)
    (old / "triage.json").write_text(json.dumps({**data, "long_text": "chunks", "chunk_pool": "sum"}))
    with pytest.raises(ModelError, match="chunk_pool='sum'"):
        Classifier.load(old)
    (old / "triage.json").write_text(json.dumps({**data, "long_text": "chunks", "max_chunks": "eight"}))
    with pytest.raises(ModelError, match="max_chunks='eight'"):
        Classifier.load(old)


def test_load_checks_the_folders_format_version(tmp_path, model_dir):
    """triage.json's format_version: a newer one is refused with what to do; a folder from before
    versioning (no key) still loads."""
    import json
    import shutil

    from ticket_triage import Classifier

    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    meta = json.loads((folder / "triage.json").read_text())
    assert meta["format_version"] == 1
    (folder / "triage.json").write_text(json.dumps({**meta, "format_version": 7}))
    with pytest.raises(ModelError, match="format version 7; this ticket-triage reads versions 0 to 1: upgrade"):
        Classifier.load(folder, backend="torch")
    old = {k: v for k, v in meta.items() if k not in ("format_version", "provenance")}
    (folder / "triage.json").write_text(json.dumps(old))
    assert Classifier.load(folder, backend="torch").meta.format_version == 0
