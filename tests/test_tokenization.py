"""Truncation strategies and batching: what the model sees of a long ticket."""

from __future__ import annotations

import pytest

from ticket_triage.modeling import load_tokenizer
from ticket_triage.tokenization import encode_texts, length_grouped_batches, pad_batch, split_budget


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(str(tiny_model_dir))


def test_head_tail_keeps_both_ends(tokenizer):
    text = "credit " + "loan " * 300 + "mortgage"
    ids = encode_texts(tokenizer, [text], max_length=32, truncation="head+tail")[0]
    credit, mortgage = tokenizer.convert_tokens_to_ids(["credit", "mortgage"])
    assert len(ids) == 32
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    assert ids[1] == credit, "the head keeps the first words"
    assert ids[-2] == mortgage, "the tail keeps the last words"
    head_only = encode_texts(tokenizer, [text], 32, "head")[0]
    tail_only = encode_texts(tokenizer, [text], 32, "tail")[0]
    assert head_only[1] == credit and mortgage not in head_only
    assert tail_only[-2] == mortgage and credit not in tail_only


def test_short_text_is_not_truncated(tokenizer):
    ids = encode_texts(tokenizer, ["credit loan"], 32)[0]
    assert ids == tokenizer("credit loan")["input_ids"]


def test_budget_split_keeps_start_and_end():
    assert split_budget(510, "head+tail") == (255, 255)
    assert split_budget(125, "head+tail") == (62, 63)
    assert split_budget(100, "head") == (100, 0)
    with pytest.raises(ValueError, match="head\\+tail"):
        split_budget(10, "middle")


def test_huge_text_is_cut_cheaply_and_correctly(tokenizer):
    text = "credit " + "bank " * 200_000 + "mortgage"  # about 1 MB
    ids = encode_texts(tokenizer, [text], 64)[0]
    assert (
        len(ids) == 64
        and ids[1] == tokenizer.convert_tokens_to_ids("credit")
        and ids[-2] == tokenizer.convert_tokens_to_ids("mortgage")
    )


def test_max_length_above_512_rejected(tokenizer):
    with pytest.raises(ValueError, match="512"):
        encode_texts(tokenizer, ["x"], 600)


def test_dynamic_padding_and_length_groups():
    input_ids, mask = pad_batch([[1, 2, 3], [4]], pad_id=0)
    assert input_ids.tolist() == [[1, 2, 3], [4, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    import torch

    lengths = [i % 97 for i in range(1000)]
    batches = length_grouped_batches(lengths, 10, generator=torch.Generator().manual_seed(0))
    assert sorted(i for b in batches for i in b) == list(range(1000))
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    assert spread < 20, "batches group similar lengths"
    again = length_grouped_batches(lengths, 10, generator=torch.Generator().manual_seed(0))
    assert again == batches


# -- whole-text reading: windows and pooling ------------------------------------------------------
def test_windows_cover_the_whole_text_with_the_configured_overlap(tokenizer, cfpb_words):
    import numpy as np

    from ticket_triage.tokenization import chunk_stride, encode_windows, window_starts

    words = np.random.default_rng(0).choice(cfpb_words, size=100).tolist()
    content = tokenizer(" ".join(words), add_special_tokens=False)["input_ids"]
    assert len(content) == 100  # every word is one token in the tiny vocabulary
    stride = chunk_stride(32, 0.25)  # 30 content tokens per window, a quarter repeated
    assert stride == 22
    windows, owners = encode_windows(tokenizer, [" ".join(words)], max_length=32, stride=stride, max_chunks=8)
    starts = window_starts(100, 30, stride, 8)
    assert starts == [0, 22, 44, 66, 70], "every 22 tokens, the last window flush with the end"
    assert owners == [0] * 5 and len(windows) == 5
    for start, ids in zip(starts, windows):
        assert len(ids) == 32 and ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
        assert ids[1:-1] == content[start : start + 30]
    covered = set().union(*(range(s, s + 30) for s in starts))
    assert covered == set(range(100)), "no token is left out"
    assert all(a + 30 - b >= 30 - stride for a, b in zip(starts, starts[1:])), "neighbours share at least the overlap"


def test_short_text_is_one_window_identical_to_encode_texts(tokenizer):
    from ticket_triage.tokenization import encode_for, encode_windows

    texts = ["credit loan", "my mortgage payment was late " * 3, "card"]
    windows, owners = encode_windows(tokenizer, texts, max_length=48, stride=10, max_chunks=8)
    assert windows == encode_texts(tokenizer, texts, 48) and owners == [0, 1, 2]

    class Truncate:  # an old model folder: no long_text setting at all
        max_length, truncation = 48, "head"

    assert encode_for(tokenizer, texts, Truncate()) == (encode_texts(tokenizer, texts, 48, "head"), [0, 1, 2])


def test_too_many_windows_are_spread_over_the_text_keeping_first_and_last(tokenizer):
    from ticket_triage.tokenization import encode_windows, window_starts

    # 1000 tokens want 45 windows of 30 every 22; 4 are kept, evenly from the first token to the last.
    assert window_starts(1000, 30, 22, 4) == [0, 323, 647, 970]
    text = "credit " + "bank " * 200_000 + "mortgage"  # about 1 MB: cut at both ends before tokenizing
    windows, owners = encode_windows(tokenizer, [text, "loan"], max_length=32, stride=22, max_chunks=4)
    assert owners == [0, 0, 0, 0, 1] and all(len(ids) == 32 for ids in windows[:4])
    credit, mortgage = tokenizer.convert_tokens_to_ids(["credit", "mortgage"])
    assert windows[0][1] == credit and windows[3][-2] == mortgage


def test_pooling_mean_max_attention_by_hand():
    import numpy as np
    import torch

    from ticket_triage.tokenization import pool_window_logits, pool_windows

    logits = np.array([[1.0, 0.0, 0.0], [3.0, -1.0, 0.5], [0.0, 2.0, 0.0], [0.2, 0.1, 0.3]], dtype=np.float32)
    owners = [0, 0, 1, 2]  # text 0 has two windows, texts 1 and 2 one each
    mean = pool_window_logits(logits, owners, 3, "mean")
    np.testing.assert_allclose(mean, [[2.0, -0.5, 0.25], logits[2], logits[3]], rtol=1e-6)
    np.testing.assert_allclose(
        pool_window_logits(logits, owners, 3, "max"), [[3.0, 0.0, 0.5], logits[2], logits[3]], rtol=1e-6
    )

    def top_log_prob(row):
        return row.max() - np.log(np.exp(row).sum())

    w = np.exp([top_log_prob(logits[0]), top_log_prob(logits[1])])
    w /= w.sum()
    assert w[1] > w[0], "the surer window (3 vs -1, 0.5) weighs more"
    attention = pool_window_logits(logits, owners, 3, "attention")
    np.testing.assert_allclose(attention, [w[0] * logits[0] + w[1] * logits[1], logits[2], logits[3]], rtol=1e-5)

    same = np.eye(3, dtype=np.float32)
    np.testing.assert_array_equal(pool_window_logits(same, [0, 1, 2], 3, "max"), same)  # one window each: unchanged

    for how in ("mean", "max", "attention"):  # the training loss backpropagates through every pool
        x = torch.tensor(logits, requires_grad=True)
        pool_windows(x, torch.tensor(owners), 3, how).sum().backward()
        assert torch.isfinite(x.grad).all() and x.grad[:2].abs().sum() > 0, how
    with pytest.raises(ValueError, match="mean, max, attention"):
        pool_window_logits(logits, owners, 3, "sum")
