"""`triage predict --nproc N` / under torchrun: the same rows and predictions as one process,
in input order, resumable after a killed process, with a manifest."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _model_support import TEXTS, make_model_folder

from ticket_triage.inference import distributed_predict as dp
from ticket_triage.inference.sharding import plan_shares

WORKER = Path(__file__).with_name("predict_worker.py")
SRC = Path(__file__).resolve().parent.parent / "src"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_model_dir):
    return make_model_folder(tmp_path_factory.mktemp("dist") / "model", tiny_model_dir)


@pytest.fixture(scope="module")
def clf(model_dir):
    from ticket_triage import Classifier

    return Classifier.load(model_dir, backend="torch")


def write_tickets(path: Path, n: int = 203) -> list[str]:
    """n rows; every third text holds a quoted newline and quotes, a few are empty."""
    ids = [f"t{i:04d}" for i in range(n)]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "text"])
        for i, key in enumerate(ids):
            text = TEXTS[i % len(TEXTS)] + (f'\nsecond line, "quoted" {i}' if i % 3 == 0 else f" {i}")
            writer.writerow([key, "" if i % 41 == 7 else text])
    return ids


def env() -> dict:
    return dict(
        os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])
    )


def predict_args(model_dir, src, dest) -> list[str]:
    return [
        "predict",
        "--model",
        str(model_dir),
        "--input",
        str(src),
        "--out",
        str(dest),
        "--backend",
        "torch",
        "--chunk-rows",
        "16",
        "--batch-size",
        "8",
    ]


def assert_same_predictions(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert a["id"].tolist() == b["id"].tolist(), "input order"
    assert a["category"].fillna("-").tolist() == b["category"].fillna("-").tolist()
    np.testing.assert_allclose(a["confidence"].to_numpy(float), b["confidence"].to_numpy(float), atol=1e-6)


def test_two_processes_under_torchrun_match_one_process(tmp_path, model_dir, clf):
    from ticket_triage.inference import predict_file

    src = tmp_path / "in.csv"
    ids = write_tickets(src)
    predict_file(clf, src, tmp_path / "one.parquet", chunk_rows=16, batch_size=8, progress=False)
    dest = tmp_path / "two.parquet"
    done = subprocess.run(
        [sys.executable, "-m", "ticket_triage", *predict_args(model_dir, src, dest), "--nproc", "2"],
        env=env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    two, one = pd.read_parquet(dest), pd.read_parquet(tmp_path / "one.parquet")
    assert two["id"].tolist() == ids
    assert_same_predictions(two, one)
    assert two.drop(columns=[c for c in two if c.startswith(("prob_", "confidence"))]).equals(
        one.drop(columns=[c for c in one if c.startswith(("prob_", "confidence"))])
    )
    manifest = json.loads(dp.manifest_path(dest).read_text())
    assert (manifest["rows"], manifest["world_size"], manifest["process_group"]) == (203, 2, "gloo")
    assert [p["share"] for p in manifest["parts"]] == [0, 1] and [p["rank"] for p in manifest["parts"]] == [0, 1]
    assert sum(p["rows"] for p in manifest["parts"]) == 203 and min(p["rows"] for p in manifest["parts"]) > 50
    assert manifest["model_version"] == clf.model_version and all(p["seconds"] > 0 for p in manifest["parts"])
    assert done.stdout.count("rows/s") == 3, "the job's rows/s, then one line per process"
    assert not dp.work_dir_for(dest).exists(), "the parts are removed once merged"


def test_a_killed_process_leaves_no_output_and_the_rerun_scores_only_its_share(tmp_path, model_dir, clf, monkeypatch):
    src, dest = tmp_path / "in.csv", tmp_path / "out.csv"
    ids = write_tickets(src)
    work = dp.work_dir_for(dest)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        str(WORKER),
        *predict_args(model_dir, src, dest),
    ]
    kill = {"TRIAGE_TEST_KILL_RANK": "1", "TRIAGE_TEST_KILL_AFTER": str(dp.part_path(work, 0, "json"))}
    crashed = subprocess.run(command, env={**env(), **kill}, capture_output=True, text=True, timeout=600)
    assert crashed.returncode != 0
    assert not dest.exists() and not list(tmp_path.glob("out.csv.partial")), "no half-written output"
    assert dp.part_path(work, 0, "json").is_file() and not dp.part_path(work, 1, "json").exists()
    kept_sha = json.loads(dp.part_path(work, 0, "json").read_text())["sha256"]

    scored = []
    real = dp._score_share
    monkeypatch.setattr(
        dp, "_score_share", lambda clf, plan, share, *a: scored.append(share.index) or real(clf, plan, share, *a)
    )
    from ticket_triage.cli import main

    with pytest.raises(SystemExit) as exit_info:  # the same command, now in one process: it resumes
        main(predict_args(model_dir, src, dest))
    assert exit_info.value.code in (0, None)
    assert scored == [1], "only the killed process's share is scored again"
    out = pd.read_csv(dest, keep_default_na=False, na_values=[""])
    assert out["id"].tolist() == ids
    manifest = json.loads(dp.manifest_path(dest).read_text())
    assert [(p["share"], p["kept"]) for p in manifest["parts"]] == [(0, True), (1, False)] and manifest["parts"][0][
        "sha256"
    ] == kept_sha
    single = tmp_path / "single.csv"
    from ticket_triage.inference import predict_file

    predict_file(clf, src, single, chunk_rows=16, batch_size=8, progress=False)
    assert_same_predictions(out, pd.read_csv(single, keep_default_na=False, na_values=[""]))


def scored_part(tmp_path, clf, n_shares=3):
    from ticket_triage.training.distributed import DistContext

    src = tmp_path / "in.csv"
    write_tickets(src, 60)
    work = tmp_path / "work"
    work.mkdir()
    plan = plan_shares(src, n_shares)
    settings = {"input": str(src), "text_column": None, "abstain_below": None}
    receipt = dp._score_share(clf, plan, plan.shares[1], work, settings, DistContext(), 8, 16)
    return work, plan, settings, receipt


def test_a_kept_part_must_match_its_receipt(tmp_path, clf):
    work, plan, settings, receipt = scored_part(tmp_path, clf)
    share = plan.shares[1]
    assert receipt.rows == 20 and dp.verified_receipt(work, share, clf.model_version, settings, plan.unit) == receipt
    assert dp.verified_receipt(work, share, "another-version", settings, plan.unit) is None
    assert dp.verified_receipt(work, share, clf.model_version, {**settings, "abstain_below": 0.5}, plan.unit) is None
    assert dp.verified_receipt(work, plan.shares[2], clf.model_version, settings, plan.unit) is None

    receipt_file = dp.part_path(work, 1, "json")
    good = receipt_file.read_text()
    receipt_file.write_text(json.dumps({**json.loads(good), "rows": 19}))
    assert dp.verified_receipt(work, share, clf.model_version, settings, plan.unit) is None, "row count"
    receipt_file.write_text(good)
    data = dp.part_path(work, 1)
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    assert dp.verified_receipt(work, share, clf.model_version, settings, plan.unit) is None, "checksum"


def test_one_progress_bar_sums_every_process(tmp_path, clf):
    work, plan, _, receipt = scored_part(tmp_path, clf)
    poller = dp._ProgressPoller.__new__(dp._ProgressPoller)
    poller.work, poller.plan = work, plan
    assert poller.totals() == (plan.shares[1].size, 20)
    dp.write_json_atomic(dp.progress_path(work, 0), {"units": 5, "rows": 2})
    assert poller.totals() == (plan.shares[1].size + 5, 22)


def test_one_process_writes_what_predict_file_writes_and_reads_a_zip(tmp_path, clf):
    from ticket_triage.inference import predict_file

    src = tmp_path / "complaints.csv"
    ids = write_tickets(src, 70)
    zipped = tmp_path / "complaints.csv.zip"
    with zipfile.ZipFile(zipped, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.write(src, "complaints.csv")
    report = dp.predict_distributed(clf, zipped, tmp_path / "out.parquet", chunk_rows=16, batch_size=8, progress=False)
    predict_file(clf, src, tmp_path / "one.parquet", chunk_rows=16, batch_size=8, progress=False)
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert out["id"].tolist() == ids and report.rows == 70 and report.world_size == 1
    assert_same_predictions(out, pd.read_parquet(tmp_path / "one.parquet"))
    assert json.loads(dp.manifest_path(tmp_path / "out.parquet").read_text())["plan"]["staged_because"]
    assert not dp.work_dir_for(tmp_path / "out.parquet").exists()


def test_devices_and_threads_per_process(monkeypatch):
    import torch

    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(16)), raising=False)
    assert dp.rank_threads(None) == 8 and dp.rank_threads(3) == 3
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "32")
    assert dp.rank_threads(None) == 1
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert dp.rank_device("auto", 1) == "auto" and dp.rank_device("cpu", 1) == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert (
        dp.rank_device("auto", 1) == "cuda:1"
        and dp.rank_device("cuda", 5) == "cuda:1"
        and dp.rank_device("cpu", 1) == "cpu"
    )


def test_nproc_is_taken_out_before_torchrun_sees_it():
    from ticket_triage.training.distributed import without_nproc as _without_nproc

    assert _without_nproc(["predict", "--nproc", "2", "--input", "a.csv", "--nproc=3"]) == [
        "predict",
        "--input",
        "a.csv",
    ]


def test_bad_input_is_one_line_error(tmp_path, model_dir):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ticket_triage",
            *predict_args(model_dir, tmp_path / "missing.csv", tmp_path / "o.csv"),
            "--work-dir",
            str(tmp_path / "w"),
        ],
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1 and "does not exist" in done.stderr and "Traceback" not in done.stderr
