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
def cfpb_words() -> list[str]:
    """The tiny vocabulary's words (every one a single token); a fixture, since test folders
    with a conftest of their own make `from conftest import` ambiguous."""
    return list(CFPB_WORDS)


@pytest.fixture(scope="session")
def bundled_csv() -> Path:
    return BUNDLED_CSV


def write_prepared(folder: Path, n_train: int, n_eval: int, seed: int = 0) -> Path:
    """A small prepared-data folder (train/val/test.parquet + manifest) from the bundled rows.

    Written directly rather than through `triage data prepare`, so training tests do not
    depend on the data pipeline's own behaviour.
    """
    import json

    import pandas as pd

    from ticket_triage.data.io import FORMAT_VERSION
    from ticket_triage.taxonomy import load_taxonomy

    taxonomy = load_taxonomy("cfpb-6")
    frame = pd.read_csv(BUNDLED_CSV, usecols=["Product", "Consumer complaint narrative"])
    frame["label"] = frame["Product"].map(taxonomy.category_of)
    frame = frame.dropna(subset=["label"]).rename(columns={"Consumer complaint narrative": "text"})
    # Equal rows per class (as far as each class allows), so a few hundred rows cover every category.
    per_class = (n_train + 2 * n_eval) // len(taxonomy.categories) + 1
    frame = frame.sample(frac=1.0, random_state=seed)
    frame = frame.groupby("label").head(per_class)[["text", "label"]]
    frame = frame.sample(frac=1.0, random_state=seed + 1).reset_index(drop=True)  # mix the classes again
    folder.mkdir(parents=True, exist_ok=True)
    frame.iloc[:n_train].to_parquet(folder / "train.parquet")
    frame.iloc[n_train : n_train + n_eval].to_parquet(folder / "val.parquet")
    frame.iloc[n_train + n_eval : n_train + 2 * n_eval].to_parquet(folder / "test.parquet")
    (folder / "manifest.json").write_text(
        json.dumps({"format_version": FORMAT_VERSION, "labels": list(taxonomy.categories)})
    )
    taxonomy.save(folder / "taxonomy.yaml")
    return folder


@pytest.fixture(scope="session")
def make_prepared():
    """`write_prepared` itself, for tests that need data of another size."""
    return write_prepared


@pytest.fixture(scope="session")
def small_prepared(tmp_path_factory) -> Path:
    """240 training rows, 60 validation and 60 test rows of real complaints."""
    return write_prepared(tmp_path_factory.mktemp("prepared"), 240, 60)
