"""MPNet (all-mpnet-base-v2's architecture) through the whole pipeline, on a tiny random MPNet.

What MPNet does differently from BERT, and what these tests pin: <s> ... </s> instead of
[CLS] ... [SEP], pad id 1 (also its padding_idx, from which position ids are derived), no
token_type_ids, a relative position bias shared by all layers, and 514 positions.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from _model_support import tiny_train_config

from ticket_triage.training import TrainConfig, train_model

BOS, PAD, EOS, UNK = 0, 1, 2, 3
LONG = "the debt collector called about my mortgage payment and the late fee on my escrow account " * 4
TEXTS = [
    "my credit report shows a debt i do not owe",
    "loan",
    LONG,
    "bank charge on checking",
    "student loan interest",
    "i was charged a fee for a money transfer to my savings account that was not mine",
    "card",
]


def _quiet(*_args, **_kwargs):
    pass


def _config(model_dir, **overrides) -> TrainConfig:
    return tiny_train_config(model_dir, **overrides)


def _train(tiny_dir, data_dir, out_dir, **overrides):
    """One training run; also returns every pad id `pad_batch` was given."""
    from ticket_triage.training import loop

    pads = []
    real = loop.pad_batch
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loop, "pad_batch", lambda ids, pad_id: pads.append(pad_id) or real(ids, pad_id))
        result = train_model(_config(tiny_dir, **overrides), data_dir, out_dir, log=_quiet, progress=False)
    return result, pads


@pytest.fixture(scope="module")
def tiny_mpnet_dir(tmp_path_factory, cfpb_words):
    from ticket_triage.modeling import tiny_mpnet

    return tiny_mpnet(tmp_path_factory.mktemp("tiny-mpnet"), cfpb_words)


@pytest.fixture(scope="module")
def tokenizer(tiny_mpnet_dir):
    from ticket_triage.modeling import load_tokenizer

    return load_tokenizer(str(tiny_mpnet_dir))


@pytest.fixture(scope="module")
def cls_run(tiny_mpnet_dir, small_prepared, tmp_path_factory):
    """One epoch of fine-tuning ([CLS]-style pooling on <s>, layer-wise lr decay)."""
    return _train(tiny_mpnet_dir, small_prepared, tmp_path_factory.mktemp("mpnet-cls") / "run", layer_lr_decay=0.8)


@pytest.fixture(scope="module")
def onnx_dir(cls_run, small_prepared, tmp_path_factory):
    """The trained folder exported to fp32 + int8, checked on the labelled test split."""
    from ticket_triage.export import export_onnx

    out = tmp_path_factory.mktemp("mpnet-onnx")
    report = export_onnx(cls_run[0].model_dir, out, quantize="int8", check_data=small_prepared / "test.parquet")
    return out, report


class Spy:
    """Wraps a Classifier's backend to keep the padded batches it is given."""

    def __init__(self, inner):
        self.inner, self.batches = inner, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, input_ids, attention_mask):
        self.batches.append((input_ids.clone(), attention_mask.clone()))
        return self.inner(input_ids, attention_mask)


def _assert_mpnet_padding(batches):
    """Every window starts with <s>, ends with </s>, and is padded with <pad> (1), never 0."""
    assert batches and any((mask == 0).any() for _, mask in batches), "some batch needs padding"
    for ids, mask in batches:
        lengths = mask.sum(1)
        assert (ids[:, 0] == BOS).all()
        assert all(ids[row, n - 1] == EOS for row, n in enumerate(lengths.tolist()))
        assert (ids[mask == 0] == PAD).all()
        assert not (ids[mask == 1] == PAD).any()


# ---------------------------------------------------------------------------------------------
# tokenizer and tokenization
# ---------------------------------------------------------------------------------------------
def test_tiny_mpnet_looks_like_all_mpnet_base_v2(tiny_mpnet_dir, tokenizer):
    from transformers import AutoConfig, AutoTokenizer

    auto = AutoTokenizer.from_pretrained(tiny_mpnet_dir)
    assert auto.is_fast and type(auto).__name__ == "MPNetTokenizer"
    for tok in (auto, tokenizer):
        assert (tok.cls_token, tok.cls_token_id, tok.pad_token, tok.pad_token_id) == ("<s>", BOS, "<pad>", PAD)
        assert (tok.sep_token, tok.sep_token_id, tok.eos_token_id, tok.unk_token_id) == ("</s>", EOS, EOS, UNK)
        assert tok.mask_token == "<mask>" and tok.mask_token_id == len(tok) - 1
    encoded = auto("My CREDIT report")
    assert encoded["input_ids"] == [BOS, *auto.convert_tokens_to_ids(["my", "credit", "report"]), EOS]
    assert "token_type_ids" not in encoded  # MPNet has no segment embeddings
    config = AutoConfig.from_pretrained(tiny_mpnet_dir)
    assert (config.model_type, config.pad_token_id, config.max_position_embeddings, config.vocab_size) == (
        "mpnet",
        PAD,
        514,
        len(auto),
    )


def test_head_tail_cut_and_windows_place_s_and_slash_s(tokenizer):
    from ticket_triage.tokenization import encode_texts, encode_windows

    content = tokenizer(LONG, add_special_tokens=False)["input_ids"]
    assert len(content) > 40
    (ids,) = encode_texts(tokenizer, [LONG], max_length=12, truncation="head+tail")
    assert ids == [BOS, *content[:5], *content[-5:], EOS]
    (short,) = encode_texts(tokenizer, ["card"], max_length=12)
    assert short == [BOS, tokenizer.convert_tokens_to_ids("card"), EOS]

    windows, owners = encode_windows(tokenizer, [LONG, "card"], max_length=12, stride=5, max_chunks=50)
    assert owners[-1] == 1 and owners.count(0) > 5
    assert all(w[0] == BOS and w[-1] == EOS and len(w) <= 12 for w in windows)
    assert all(BOS not in w[1:-1] and EOS not in w[1:-1] and PAD not in w for w in windows)
    assert windows[owners.index(0)][1:-1] == content[:10] and windows[owners.count(0) - 1][1:-1] == content[-10:]


def test_special_token_text_in_a_ticket_stays_text(tokenizer):
    """A ticket that says "<pad>" or "<s>" must not put id 1 (which moves every later position in
    MPNet) or a second <s> / </s> inside the sequence."""
    from ticket_triage.tokenization import encode_texts, encode_windows

    text = "my <pad> credit <s> report </s> bank <mask> card"
    (ids,) = encode_texts(tokenizer, [text], max_length=64)
    assert ids[0] == BOS and ids[-1] == EOS
    assert not {BOS, PAD, EOS, tokenizer.mask_token_id} & set(ids[1:-1])
    assert tokenizer.convert_tokens_to_ids("credit") in ids
    windows, _ = encode_windows(tokenizer, [text], max_length=8, stride=3, max_chunks=10)
    assert all(not {BOS, PAD, EOS} & set(w[1:-1]) for w in windows)


def test_512_tokens_fit_mpnets_514_positions(tiny_mpnet_dir, tokenizer):
    import torch

    from ticket_triage.modeling import build_model
    from ticket_triage.tokenization import encode_texts, pad_batch

    model = build_model(str(tiny_mpnet_dir), ["a", "b"]).eval()
    ids = encode_texts(tokenizer, [LONG * 8, "loan"], max_length=512)
    assert len(ids[0]) == 512
    input_ids, mask = pad_batch(ids, tokenizer.pad_token_id)
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=mask).logits
        alone = model(input_ids=input_ids[1:, :3], attention_mask=mask[1:, :3]).logits
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()
    torch.testing.assert_close(logits[1:], alone, atol=1e-5, rtol=0)  # 509 pads change nothing


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------
def test_layer_lr_decay_puts_the_relative_position_bias_with_the_embeddings(tiny_mpnet_dir):
    from ticket_triage.modeling import build_model
    from ticket_triage.training.loop import param_groups

    model = build_model(str(tiny_mpnet_dir), ["a", "b", "c"])
    n = model.config.num_hidden_layers
    lr_of = {id(p): g["lr"] for g in param_groups(model, 0.01, lr=1e-3, layer_lr_decay=0.5) for p in g["params"]}
    by_name = {name: lr_of[id(p)] for name, p in model.named_parameters()}
    bottom = 1e-3 * 0.5 ** (n + 1)
    assert by_name["mpnet.encoder.relative_attention_bias.weight"] == pytest.approx(bottom)
    assert by_name["mpnet.embeddings.word_embeddings.weight"] == pytest.approx(bottom)
    assert by_name["mpnet.encoder.layer.0.attention.attn.q.weight"] == pytest.approx(1e-3 * 0.5**n)
    assert by_name[f"mpnet.encoder.layer.{n - 1}.output.dense.weight"] == pytest.approx(1e-3 * 0.5)
    assert by_name["classifier.dense.weight"] == by_name["classifier.out_proj.bias"] == 1e-3


def test_one_epoch_fine_tunes_and_saves_an_mpnet_folder(cls_run, tiny_mpnet_dir):
    from safetensors.torch import load_file

    from ticket_triage.modeling import load_tokenizer

    result, pads = cls_run
    assert (
        len(result.history) == 1
        and np.isfinite(result.history[0]["train_loss"])
        and np.isfinite(result.history[0]["val_loss"])
    )
    assert pads and set(pads) == {PAD}
    config = json.loads((result.model_dir / "config.json").read_text())
    assert config["model_type"] == "mpnet" and config["architectures"] == ["MPNetForSequenceClassification"]
    assert load_tokenizer(str(result.model_dir)).pad_token_id == PAD
    before, after = (
        load_file(str(tiny_mpnet_dir / "model.safetensors")),
        load_file(str(result.model_dir / "model.safetensors")),
    )
    for name in (
        "encoder.relative_attention_bias.weight",
        "encoder.layer.0.attention.attn.q.weight",
        "embeddings.word_embeddings.weight",
    ):
        assert not np.allclose(before[name].numpy(), after[f"mpnet.{name}"].numpy()), f"{name} did not train"


def test_frozen_encoder_mean_pooling_trains_only_the_head_and_exports(tiny_mpnet_dir, small_prepared, tmp_path):
    from safetensors.torch import load_file

    from ticket_triage import Classifier
    from ticket_triage.export import export_onnx

    result, pads = _train(tiny_mpnet_dir, small_prepared, tmp_path / "run", freeze_encoder=True)  # mean pooling
    assert set(pads) == {PAD} and json.loads((result.model_dir / "triage.json").read_text())["pooling"] == "mean"
    assert (result.model_dir / "head.safetensors").is_file()
    before, after = (
        load_file(str(tiny_mpnet_dir / "model.safetensors")),
        load_file(str(result.model_dir / "model.safetensors")),
    )
    for name in (
        "encoder.relative_attention_bias.weight",
        "encoder.layer.1.output.dense.weight",
        "embeddings.word_embeddings.weight",
    ):
        np.testing.assert_array_equal(after[name].numpy(), before[name].numpy())

    report = export_onnx(result.model_dir, tmp_path / "onnx")
    assert report.parity_ok and report.pooling == "mean" and report.cls_only_ops == 0
    torch_clf, onnx_clf = (
        Classifier.load(result.model_dir, backend="torch", device="cpu"),
        Classifier.load(tmp_path / "onnx"),
    )
    a, b = torch_clf.predict_logits(TEXTS, batch_size=3), onnx_clf.predict_logits(TEXTS, batch_size=4)
    assert a.std(0).max() > 1e-2  # the texts score differently, so agreeing means something
    np.testing.assert_allclose(b, a, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# ONNX export, int8, Classifier backends
# ---------------------------------------------------------------------------------------------
def test_onnx_export_matches_pytorch_and_takes_no_token_type_ids(onnx_dir):
    import onnx

    out, report = onnx_dir
    assert report.parity_ok and report.parity_max_abs_diff < 1e-3 and report.pooling == "cls"
    assert report.cls_only_ops > 0, "the <s> Gather of MPNet's head was found and the last layer runs on that row only"
    graph = onnx.load(str(out / "model.onnx")).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask"]
    assert json.loads((out / "report.json").read_text())["parity_ok"] is True


def test_int8_export_and_its_macro_f1_check(onnx_dir):
    out, report = onnx_dir
    assert (out / "model.int8.onnx").is_file() and report.quantize == "int8"
    assert report.check_rows == 60 and report.macro_f1_fp32 is not None and report.macro_f1_int8 is not None
    assert report.macro_f1_delta_points == pytest.approx(100 * (report.macro_f1_int8 - report.macro_f1_fp32), abs=1e-3)
    assert report.int8_within_target == (report.macro_f1_delta_points >= -1.0)
    assert report.int8_argmax_agreement >= 0.8 and report.int8_max_abs_diff < 0.5


def test_classifier_torch_and_onnx_agree_and_pad_with_1(cls_run, onnx_dir):
    from ticket_triage import Classifier

    torch_clf = Classifier.load(cls_run[0].model_dir, backend="torch", device="cpu")
    onnx_clf = Classifier.load(onnx_dir[0], backend="onnx-fp32")
    int8_clf = Classifier.load(onnx_dir[0])
    assert (onnx_clf.backend, int8_clf.precision) == ("onnx", "int8") and torch_clf._pad_id == onnx_clf._pad_id == PAD
    torch_clf.backend_impl = spy = Spy(torch_clf.backend_impl)
    a = torch_clf.predict_logits(TEXTS, batch_size=3)
    _assert_mpnet_padding(spy.batches)
    assert a.std(0).max() > 1e-2
    np.testing.assert_allclose(onnx_clf.predict_logits(TEXTS, batch_size=5), a, atol=1e-4)
    assert [p.category for p in int8_clf.predict(TEXTS)] == [p.category for p in torch_clf.predict(TEXTS)]
    # Sequences far longer than the one traced: the relative position buckets are not baked in.
    for clf in (torch_clf, onnx_clf):
        clf.meta.max_length = 300
    np.testing.assert_allclose(
        onnx_clf.predict_logits([LONG * 6, "loan"]), torch_clf.predict_logits([LONG * 6, "loan"]), atol=1e-4
    )


def test_long_text_chunks_with_mpnet(cls_run, tmp_path):
    import shutil

    from ticket_triage import Classifier
    from ticket_triage.export import export_onnx
    from ticket_triage.modeling import ModelMeta

    folder = tmp_path / "chunks"
    shutil.copytree(cls_run[0].model_dir, folder)
    meta = ModelMeta.load(folder)
    meta.long_text, meta.max_length, meta.max_chunks, meta.chunk_overlap, meta.chunk_pool = (
        "chunks",
        16,
        4,
        0.25,
        "attention",
    )
    meta.save(folder)
    export_onnx(folder, folder)
    torch_clf, onnx_clf = (
        Classifier.load(folder, backend="torch", device="cpu"),
        Classifier.load(folder, backend="onnx"),
    )
    onnx_clf.backend_impl = spy = Spy(onnx_clf.backend_impl)
    b = onnx_clf.predict_logits(TEXTS, batch_size=4)
    assert sum(len(ids) for ids, _ in spy.batches) > len(TEXTS), "the long texts were read in several windows"
    _assert_mpnet_padding(spy.batches)
    np.testing.assert_allclose(b, torch_clf.predict_logits(TEXTS, batch_size=3), atol=1e-4)
    onnx_clf.meta.long_text = "truncate"
    assert np.abs(onnx_clf.predict_logits(TEXTS) - b)[2].max() > 1e-3  # the windows of LONG were pooled


# ---------------------------------------------------------------------------------------------
# the service
# ---------------------------------------------------------------------------------------------
def test_service_classifies_with_an_mpnet_folder(onnx_dir, cls_run, tmp_path):
    pytest.importorskip("fastapi", reason="the service extra is not installed: pip install -e '.[serve]'")
    from fastapi.testclient import TestClient

    from ticket_triage import Classifier
    from ticket_triage.service import Settings, create_app

    folder = onnx_dir[0]
    app = create_app(Settings(model_dir=folder, database_url=f"sqlite:///{tmp_path / 'triage.db'}", auth=False))
    labels = json.loads((folder / "triage.json").read_text())["labels"]
    direct = Classifier.load(cls_run[0].model_dir, backend="torch", device="cpu").predict(TEXTS)
    with TestClient(app) as client:
        assert app.state.triage.classifier.model_version.endswith("-onnx-int8")
        ticket = client.post(
            "/v1/tickets", json={"subject": "card", "body": "I was charged a late fee on my credit card."}
        )
        assert ticket.status_code == 201, ticket.text
        assert ticket.json()["category"] in labels
        response = client.post("/v1/classify", json={"texts": TEXTS})
        assert response.status_code == 200, response.text
        preds = response.json()["predictions"]
    assert [p["category"] for p in preds] == [p.category for p in direct]
    assert [p["confidence"] for p in preds] == pytest.approx([p.confidence for p in direct], abs=0.02)
    assert all(sum(p["probabilities"].values()) == pytest.approx(1.0, abs=1e-4) for p in preds)
