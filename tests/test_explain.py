"""Token attributions (explain.py): completeness, offsets, targets, reading like inference, CLI."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("captum", reason="captum is not installed: pip install -e '.[serve]'")

from _model_support import cli_error, cli_ok, make_model_folder  # noqa: E402

from ticket_triage.errors import ConfigError, DataError, ModelError  # noqa: E402
from ticket_triage.explain import Explainer, explain, ticket_text, top_words  # noqa: E402

TEXT = "my credit report shows a debt i do not owe"
TOL = 1e-3  # |sum - (logit - baseline logit)| with 50 Gauss-Legendre steps on the tiny model is ~1e-6


@pytest.fixture(scope="module")
def mean_folder(tiny_model_dir, tmp_path_factory):
    # Mean pooling over a random tiny encoder: logits that move with the words (a random
    # [CLS] head hardly does), so completeness is checked on differences of whole logits.
    return make_model_folder(tmp_path_factory.mktemp("explain-mean") / "model", tiny_model_dir, pooling="mean")


@pytest.fixture(scope="module")
def explainer(mean_folder):
    return Explainer.load(mean_folder)


def _transformer_logits(folder, text):
    from ticket_triage.inference import Classifier

    return Classifier.load(folder, backend="torch", device="cpu", ensemble=False).predict_logits([text])[0]


def assert_complete(result):
    total = sum(w.attribution for w in result.tokens)
    assert abs(total - (result.logit - result.baseline_logit)) < TOL
    assert abs(result.delta) < TOL


def test_attributions_sum_to_the_logit_difference(explainer, mean_folder):
    result = explainer.explain(TEXT, n_steps=50)
    assert abs(result.logit - result.baseline_logit) > 0.5, "the check needs a logit that depends on the text"
    assert_complete(result)
    # The logit explained is the one inference computes for this text, and the top class by default.
    logits = _transformer_logits(mean_folder, TEXT)
    assert result.target_index == int(logits.argmax())
    assert result.logit == pytest.approx(float(logits[result.target_index]), abs=1e-4)
    assert result.method == "integrated_gradients" and result.explains == "transformer" and not result.truncated


def test_fewer_steps_converge_less(explainer):
    coarse, fine = explainer.explain(TEXT, n_steps=2), explainer.explain(TEXT, n_steps=100)
    assert abs(fine.delta) <= abs(coarse.delta) + 1e-9
    assert_complete(fine)


def test_offsets_map_back_to_the_words(explainer):
    text = "  My Credit-report shows a DEBT\ti do not owe!"
    result = explainer.explain(text)
    for word in result.tokens:
        assert text[word.start : word.end] == word.text
    # BERT's pre-tokenizer splits at spaces and punctuation; pieces of a word are merged into it.
    assert [w.text for w in result.tokens] == [
        "My",
        "Credit",
        "-",
        "report",
        "shows",
        "a",
        "DEBT",
        "i",
        "do",
        "not",
        "owe",
        "!",
    ]


def test_pieces_are_merged_into_words(explainer):
    # "zqx" is not in the tiny vocabulary: it is read as z ##q ##x, shown as one word.
    result = explainer.explain("zqx debt")
    assert [(w.text, w.start, w.end) for w in result.tokens] == [("zqx", 0, 3), ("debt", 4, 8)]
    assert_complete(result)


def test_target_override(explainer):
    default = explainer.explain(TEXT)
    other = next(label for label in explainer.labels if label != default.target)
    result = explainer.explain(TEXT, target=other)
    assert result.target == other and result.target_index == explainer.labels.index(other)
    assert_complete(result)
    assert [w.attribution for w in result.tokens] != [w.attribution for w in default.tokens]
    assert explainer.explain(TEXT, target=explainer.labels.index(other)).target == other
    with pytest.raises(ConfigError, match="unknown target"):
        explainer.explain(TEXT, target="Pets")


def test_subject_and_body(explainer):
    text = ticket_text("Card charge", "the bank charged a fee")
    assert text == "Card charge\n\nthe bank charged a fee"
    result = explainer.explain(text)
    assert (result.tokens[0].text, result.tokens[0].start) == ("Card", 0)
    assert result.tokens[2].text == "the" and result.tokens[2].start == text.index("the")


def test_long_text_is_cut_like_inference(tiny_model_dir, tmp_path):
    folder = make_model_folder(tmp_path / "model", tiny_model_dir, pooling="mean", max_length=12)
    text = " ".join(["debt"] * 3 + ["mortgage"] * 30 + ["loan"] * 3)
    result = Explainer.load(folder).explain(text)
    assert result.truncated
    seen = [w.text for w in result.tokens]
    # head+tail: 10 content tokens, the first 5 and the last 5.
    assert seen == ["debt"] * 3 + ["mortgage"] * 4 + ["loan"] * 3
    assert result.tokens[-1].end == len(text)
    assert result.logit == pytest.approx(float(_transformer_logits(folder, text)[result.target_index]), abs=1e-4)
    assert_complete(result)


def test_chunked_model_is_explained_over_all_windows(tiny_model_dir, tmp_path):
    folder = make_model_folder(
        tmp_path / "model", tiny_model_dir, pooling="mean", max_length=12, long_text="chunks", max_chunks=4
    )
    text = " ".join(["debt", "collector", "mortgage", "escrow", "loan", "card", "bank", "fee"] * 3)
    result = Explainer.load(folder).explain(text)
    assert result.windows > 1 and not result.truncated
    assert [w.text for w in result.tokens] == text.split()
    assert result.logit == pytest.approx(float(_transformer_logits(folder, text)[result.target_index]), abs=1e-4)
    assert_complete(result)


def test_ensemble_folder_explains_the_transformer(tiny_model_dir, tmp_path):
    folder = make_model_folder(
        tmp_path / "model",
        tiny_model_dir,
        pooling="mean",
        ensemble={"kind": "tfidf", "weight": 0.3, "enabled": True},
    )
    result = explain(folder, TEXT)
    assert result.explains == "transformer" and "transformer only" in result.note and "0.3" in result.note


def test_cls_model_and_mask_baseline(tiny_model_dir, tmp_path):
    folder = make_model_folder(tmp_path / "model", tiny_model_dir)
    explainer = Explainer.load(folder)
    result = explainer.explain(TEXT, baseline="mask")
    assert result.baseline == "mask"
    # A random tiny [CLS] head moves little with the words: completeness is checked relative to that move.
    diff = result.logit - result.baseline_logit
    assert abs(diff) > 1e-3
    assert abs(sum(w.attribution for w in result.tokens) - diff) < 0.01 * abs(diff)
    assert explainer.explain(TEXT).baseline == "pad"  # BERT numbers positions by index: [PAD] is fine


def test_bad_input(explainer, tmp_path):
    with pytest.raises(DataError, match="empty"):
        explainer.explain("   ")
    with pytest.raises(ConfigError, match="n_steps"):
        explainer.explain(TEXT, n_steps=0)
    with pytest.raises(ConfigError, match="baseline"):
        explainer.explain(TEXT, baseline="zeros")
    with pytest.raises(ModelError, match="does not exist"):
        Explainer.load(tmp_path / "nowhere")
    (tmp_path / "onnx-only").mkdir()
    with pytest.raises(ModelError, match="PyTorch weights"):
        Explainer.load(tmp_path / "onnx-only")


def test_top_words_and_dict(explainer):
    result = explainer.explain(TEXT)
    best = top_words(result, 3)
    assert len(best) == 3 and best[0].attribution == max(w.attribution for w in result.tokens)
    payload = result.to_dict()
    assert payload["tokens"][0] == {"text": "my", "start": 0, "end": 2, "attribution": result.tokens[0].attribution}
    json.dumps(payload)


def test_cli(mean_folder, capsys):
    cli_ok(["explain", "--model", str(mean_folder), "--text", "the debt collector", "--subject", "Card", "--json"])
    payload = json.loads(capsys.readouterr().out)
    assert [t["text"] for t in payload["tokens"]] == ["Card", "the", "debt", "collector"]
    cli_ok(["explain", "--model", str(mean_folder), "--text", TEXT, "--steps", "20"])
    out = capsys.readouterr().out
    assert "words by attribution" in out and "convergence delta" in out and "owe" in out
    err = cli_error(capsys, ["explain", "--model", str(mean_folder), "--text", TEXT, "--target", "Pets"])
    assert "unknown target" in err


def test_mpnet_uses_a_mask_baseline(cfpb_words, tmp_path):
    from ticket_triage.modeling import tiny_mpnet

    encoder = tiny_mpnet(tmp_path / "mpnet", cfpb_words)
    folder = make_model_folder(tmp_path / "model", encoder, pooling="mean")
    explainer = Explainer.load(folder)
    result = explainer.explain(TEXT)
    # MPNet numbers positions from its pad id: a [PAD] baseline would move the positions too.
    assert result.baseline == "mask"
    assert [w.text for w in result.tokens] == TEXT.split()
    assert_complete(result)


def test_threads_share_an_explainer(explainer):
    from concurrent.futures import ThreadPoolExecutor

    texts = [TEXT, "the bank charged a fee on my checking account"]
    alone = [[w.attribution for w in explainer.explain(t).tokens] for t in texts]
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(lambda t: [w.attribution for w in explainer.explain(t).tokens], texts * 2))
    assert together == alone * 2
