"""DistributedDataParallel on CPU with gloo and 2 processes, against one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from _model_support import tiny_train_config

from ticket_triage.training import train_model

WORKER = Path(__file__).with_name("ddp_worker.py")


def common_args(model_dir) -> list[str]:
    return [
        "--model",
        str(model_dir),
        "--epochs",
        "2",
        "--max-length",
        "40",
        "--lr",
        "1e-3",
        "--dropout",
        "0",
        "--precision",
        "fp32",
        "--threads",
        "1",
        "--checkpoint-every",
        "2",
        "--seed",
        "3",
        "--no-baseline",
    ]


def torchrun(
    args: list[str], nproc: int, watch: Path, writes: Path, kill_at_step: int = 0
) -> subprocess.CompletedProcess:
    writes.mkdir(parents=True, exist_ok=True)
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        TRIAGE_TEST_WATCH=str(watch),
        TRIAGE_TEST_WRITES=str(writes),
        TRIAGE_TEST_KILL_AT_STEP=str(kill_at_step),
    )
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        str(WORKER),
        "train",
        *args,
    ]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


def weights(model_dir: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(model_dir / "model.safetensors"))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        np.testing.assert_allclose(wa[name], wb[name], atol=2e-5, rtol=1e-4, err_msg=name)


@pytest.fixture(scope="module")
def single_process_run(tiny_model_dir, small_prepared, tmp_path_factory) -> Path:
    """One process, batch 16: what 2 processes with batch 8 each must reproduce."""
    out = tmp_path_factory.mktemp("single") / "run"
    config = tiny_train_config(
        tiny_model_dir, epochs=2, max_length=40, dropout=0.0, seed=3, calibrate=True, group_by_length=False
    )
    train_model(config, small_prepared, out, log=lambda *_: None)
    return out


def test_two_processes_match_one_process(tiny_model_dir, small_prepared, single_process_run, tmp_path):
    out = tmp_path / "ddp"
    args = [
        "--data",
        str(small_prepared),
        "--out",
        str(out),
        "--batch-size",
        "8",
        "--no-group-by-length",
        *common_args(tiny_model_dir),
    ]
    done = torchrun(args, 2, tmp_path, tmp_path / "writes")
    assert done.returncode == 0, done.stderr[-3000:]

    assert_same_weights(single_process_run / "model", out / "model")
    ddp, single = (
        json.loads((out / "metrics.json").read_text()),
        json.loads((single_process_run / "metrics.json").read_text()),
    )
    # Validation over the whole split (gathered from both shards), so it equals the single run's.
    for a, b in zip(ddp["history"], single["history"]):
        assert a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-4)
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-4)
    assert ddp["test"]["n"] == 60
    run = yaml.safe_load((out / "train_config.yaml").read_text())["run"]
    assert (run["world_size"], run["per_device_batch"], run["effective_batch_size"], run["backend"]) == (
        2,
        8,
        16,
        "gloo",
    )
    assert done.stderr.count("epoch 1: train loss") + done.stdout.count("epoch 1: train loss") == 1, "only rank 0 logs"

    # Only rank 0 writes into the run folder.
    rank0 = (tmp_path / "writes" / "writes-rank0.txt").read_text().split()
    rank1 = (tmp_path / "writes" / "writes-rank1.txt").read_text().split()
    assert any("metrics.json" in p for p in rank0) and any("triage.json" in p for p in rank0)
    assert [p for p in rank1 if str(out) in p] == []


def test_interrupted_under_two_processes_resumes_under_one(
    tiny_model_dir, small_prepared, single_process_run, tmp_path
):
    out = tmp_path / "ddp"
    args = [
        "--data",
        str(small_prepared),
        "--out",
        str(out),
        "--batch-size",
        "8",
        "--no-group-by-length",
        *common_args(tiny_model_dir),
    ]
    crashed = torchrun(args, 2, tmp_path, tmp_path / "writes", kill_at_step=21)  # 15 steps an epoch: mid-epoch 2
    assert crashed.returncode != 0
    assert (out / "checkpoint" / "training_state.pt").is_file()

    from ticket_triage.cli import main

    # One process now: the per-device batch follows the checkpoint's global batch of 16.
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "train",
                "--data",
                str(small_prepared),
                "--out",
                str(out),
                "--batch-size",
                "8",
                "--no-group-by-length",
                "--resume",
                *common_args(tiny_model_dir),
            ]
        )
    assert exit_info.value.code in (0, None)
    assert_same_weights(single_process_run / "model", out / "model")


def test_two_processes_match_one_process_with_chunks(tiny_model_dir, small_prepared, tmp_path):
    """--long-text chunks under DDP: each process pools its own texts' windows, validation is
    sharded by text (all of a text's windows on one process), and the result is one process's."""
    chunks = ["--long-text", "chunks", "--max-chunks", "3", "--chunk-pool", "attention"]
    config = tiny_train_config(
        tiny_model_dir,
        epochs=2,
        max_length=40,
        dropout=0.0,
        seed=3,
        calibrate=True,
        group_by_length=False,
        long_text="chunks",
        max_chunks=3,
        chunk_pool="attention",
    )
    train_model(config, small_prepared, tmp_path / "single", log=lambda *_: None)
    out = tmp_path / "ddp"
    args = [
        "--data",
        str(small_prepared),
        "--out",
        str(out),
        "--batch-size",
        "8",
        "--no-group-by-length",
        *common_args(tiny_model_dir),
        *chunks,
    ]
    done = torchrun(args, 2, tmp_path, tmp_path / "writes")
    assert done.returncode == 0, done.stderr[-3000:]

    assert_same_weights(tmp_path / "single" / "model", out / "model")
    ddp, single = (
        json.loads((out / "metrics.json").read_text()),
        json.loads((tmp_path / "single" / "metrics.json").read_text()),
    )
    for a, b in zip(ddp["history"], single["history"]):
        assert a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-5)
    assert json.loads((out / "model" / "triage.json").read_text())["long_text"] == "chunks"
