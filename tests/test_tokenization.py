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
    assert len(ids) == 64 and ids[1] == tokenizer.convert_tokens_to_ids("credit") and ids[-2] == tokenizer.convert_tokens_to_ids("mortgage")


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
