"""Shared fixtures: a tiny random BERT (fast unit tests) and small real data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Two cores on CI: keep each test process from oversubscribing them.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent
BUNDLED_CSV = REPO / "data" / "cfpb_sample.csv.gz"

CFPB_WORDS = (
    "credit report reporting bureau inaccurate dispute debt collector collection collect owe mortgage "
    "loan payment escrow foreclosure card charge fee account bank checking savings transfer money "
    "student vehicle payday interest late the a i my to and of was is not they have on for"
).split()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide random BERT with a WordPiece vocabulary of complaint words."""
    from ticket_triage.modeling import tiny_bert

    return tiny_bert(tmp_path_factory.mktemp("tiny-bert"), CFPB_WORDS)


@pytest.fixture(scope="session")
def bundled_csv() -> Path:
    return BUNDLED_CSV
