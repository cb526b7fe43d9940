"""Turning ticket text into model inputs: truncation strategies and dynamic padding.

Training, evaluation, prediction and the service all go through `encode_texts`, so a model
sees text cut the same way in production as it did in training (the strategy and length are
stored in the model folder).
"""

from __future__ import annotations

from typing import Literal, Sequence

TruncationStrategy = Literal["head", "tail", "head+tail"]
TRUNCATION_STRATEGIES: tuple[str, ...] = ("head", "tail", "head+tail")

# BERT-family models have 512 learned positions; nothing longer can be encoded.
MAX_POSITIONS = 512
# Sun et al. 2019 ("How to Fine-Tune BERT for Text Classification?") kept the first 128 and
# last 382 tokens of 510 on reviews. Complaints state their subject early ("my student loan
# servicer..."): on the bundled CFPB data a quarter-head split scored 0.46 validation
# macro-F1 where head-only scored 0.60 (800 rows, 3 epochs, 256 tokens), so we keep
# the start and the end in equal parts.
HEAD_SHARE = 0.5
# No WordPiece token is longer than this many characters in practice, so cutting a huge text
# to this many characters per token of budget, at each end, never changes the result but
# keeps a 1 MB ticket from being tokenized in full.
CHARS_PER_TOKEN_BOUND = 24


def split_budget(budget: int, strategy: str) -> tuple[int, int]:
    """How many content tokens to keep from the start and from the end of a long text."""
    if strategy == "head":
        return budget, 0
    if strategy == "tail":
        return 0, budget
    if strategy == "head+tail":
        head = int(round(budget * HEAD_SHARE))
        return head, budget - head
    raise ValueError(f"unknown truncation {strategy!r}: use one of {', '.join(TRUNCATION_STRATEGIES)}")


def _pre_cut(text: str, max_chars: int) -> str:
    if len(text) <= 2 * max_chars:
        return text
    return text[:max_chars] + " " + text[-max_chars:]


def encode_texts(tokenizer, texts: Sequence[str], max_length: int, truncation: str = "head+tail") -> list[list[int]]:
    """Token ids for each text, with [CLS] ... [SEP], at most `max_length` ids, not padded."""
    if not 3 <= max_length <= MAX_POSITIONS:
        raise ValueError(f"max_length must be between 3 and {MAX_POSITIONS}, got {max_length}")
    # BERT-family layout: [CLS] content [SEP]. (transformers 5 dropped the generic
    # build_inputs_with_special_tokens, so the two ids are placed here.)
    first = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    last = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    if first is None or last is None:
        raise ValueError("the tokenizer has no [CLS]/[SEP] (or BOS/EOS) token: use a BERT-family model")
    budget = max_length - 2
    head, tail = split_budget(budget, truncation)
    cut = [_pre_cut(t, CHARS_PER_TOKEN_BOUND * max_length) for t in texts]
    pieces = tokenizer(cut, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
    out = []
    for ids in pieces:
        if len(ids) > budget:
            ids = ids[:head] + (ids[len(ids) - tail:] if tail else [])
        out.append([first, *ids, last])
    return out


def pad_batch(batch_ids: Sequence[Sequence[int]], pad_id: int):
    """Pad a batch to its own longest member (dynamic padding): (input_ids, attention_mask) tensors."""
    import torch

    width = max(len(ids) for ids in batch_ids)
    input_ids = torch.full((len(batch_ids), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(batch_ids), width), dtype=torch.long)
    for row, ids in enumerate(batch_ids):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
    return input_ids, attention_mask


def length_grouped_batches(lengths: Sequence[int], batch_size: int, generator=None, shuffle: bool = True, mega_batches: int = 8) -> list[list[int]]:
    """Batches of indices whose members have similar lengths, so little compute goes to padding.

    Shuffle, cut into mega-chunks of `mega_batches` batches, sort each chunk by length, slice
    into batches, then shuffle the batch order: similar lengths together, yet a different mix
    every epoch. Small chunks (8) keep most of the padding saved while keeping batches mixed:
    with 50 (the Hugging Face default) the near-uniform batches cost validation macro-F1 on
    the bundled data at a few hundred steps.
    """
    import torch

    n = len(lengths)
    order = torch.randperm(n, generator=generator).tolist() if shuffle else list(range(n))
    chunk = batch_size * mega_batches
    batches: list[list[int]] = []
    for start in range(0, n, chunk):
        part = sorted(order[start : start + chunk], key=lambda i: -lengths[i])
        batches.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
    if shuffle:
        perm = torch.randperm(len(batches), generator=generator).tolist()
        batches = [batches[i] for i in perm]
    return batches
