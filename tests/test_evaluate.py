"""`triage evaluate`, `triage baseline` and `triage train` through the CLI; the evaluation report."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from ticket_triage.cli import main
from ticket_triage.evaluation.metrics import classification_metrics


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    return exit_info.value.code or 0, captured.out + captured.err


@pytest.fixture(scope="module")
def trained_run(tiny_model_dir, small_prepared, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli-run") / "run"
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "train",
                "--data",
                str(small_prepared),
                "--out",
                str(out),
                "--model",
                str(tiny_model_dir),
                "--epochs",
                "1",
                "--max-length",
                "32",
                "--precision",
                "fp32",
                "--threads",
                "1",
            ]
        )
    assert exit_info.value.code in (0, None)
    return out


def test_train_cli_writes_run_folder(trained_run):
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["config"]["max_length"] == 32 and metrics["test"]["n"] == 60
    assert metrics["baseline"]["model"].startswith("tfidf")


def test_model_from_train_loads_in_evaluate_on_prepared_split(trained_run, small_prepared, tmp_path, capsys):
    code, output = run_cli(
        [
            "evaluate",
            "--model",
            str(trained_run / "model"),
            "--data",
            str(small_prepared / "test.parquet"),
            "--out",
            str(tmp_path / "eval"),
        ],
        capsys,
    )
    assert code == 0, output
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    trained = json.loads((trained_run / "metrics.json").read_text())["test"]
    # Same model, same rows: evaluate reproduces training's own test report.
    assert evaluated["confusion_matrix"] == trained["confusion_matrix"]
    assert (tmp_path / "eval" / "confusion_matrix.png").stat().st_size > 0
    assert "Banking Services" in (tmp_path / "eval" / "classification_report.md").read_text()


def test_evaluate_raw_cfpb_file_maps_products_and_reports_unknown(trained_run, tmp_path, capsys):
    raw = tmp_path / "complaints.csv"
    pd.DataFrame(
        {
            "Product": ["Mortgage", "Credit card", "Debt collection", "Hoverboard lease", "Other financial service"],
            "Consumer complaint narrative": [
                "my mortgage escrow payment was wrong",
                "a late fee on my card",
                "the collector calls me",
                "my hoverboard lease is bad",
                "something else",
            ],
            "Complaint ID": ["1", "2", "3", "4", "5"],
        }
    ).to_csv(raw, index=False)
    code, output = run_cli(
        ["evaluate", "--model", str(trained_run / "model"), "--data", str(raw), "--out", str(tmp_path / "eval")], capsys
    )
    assert code == 0, output
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["n"] == 3
    assert metrics["input"]["unknown_products"] == {"Hoverboard lease": 1}
    assert "Hoverboard lease" in (tmp_path / "eval" / "classification_report.md").read_text()


def test_baseline_cli(small_prepared, tmp_path, capsys):
    code, output = run_cli(["baseline", "--data", str(small_prepared), "--out", str(tmp_path / "bl")], capsys)
    assert code == 0, output
    metrics = json.loads((tmp_path / "bl" / "metrics.json").read_text())
    assert metrics["macro_f1"] > 0.4, "TF-IDF + SVM separates these categories well above chance (1/6)"


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--data", "/nonexistent/data", "--out", "/tmp/x"], "triage data prepare"),
        (["evaluate", "--model", "/nonexistent/model", "--data", "x.csv", "--out", "/tmp/x"], "does not exist"),
        (["train", "--data", "/tmp", "--out", "/tmp/x", "--max-length", "2048"], "512"),
    ],
)
def test_bad_input_is_one_line_without_traceback(args, message, capsys):
    code, output = run_cli(args, capsys)
    assert code == 1
    assert message in output and "Traceback" not in output


def test_missing_model_folder_is_one_line(small_prepared, tmp_path, capsys):
    code, output = run_cli(
        ["train", "--data", str(small_prepared), "--out", str(tmp_path / "x"), "--model", "./no-such-folder"], capsys
    )
    assert code == 1 and "no-such-folder does not exist" in output and "Traceback" not in output


def test_metrics_match_hand_count():
    metrics = classification_metrics([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], ["a", "b", "c"])
    assert metrics["accuracy"] == pytest.approx(0.6)
    assert metrics["per_class"]["b"] == {
        "precision": pytest.approx(2 / 3),
        "recall": 1.0,
        "f1": pytest.approx(0.8),
        "support": 2,
    }
    assert metrics["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]


def test_training_report_has_slices_for_an_old_folder_without_source(trained_run, small_prepared):
    test = json.loads((trained_run / "metrics.json").read_text())["test"]
    # write_prepared makes no `source` or `date_received` column: one source, the folder, of unknown year.
    assert (
        list(test["by_source"]) == [small_prepared.resolve().name]
        and test["by_source"][small_prepared.resolve().name]["n"] == 60
    )
    assert list(test["by_year"]) == ["unknown"] and test["by_year"]["unknown"]["macro_f1"] == pytest.approx(
        test["macro_f1"]
    )
    report = (trained_run / "classification_report.md").read_text()
    assert "## By input file (source)" in report and "## By year received" in report


def test_evaluate_raw_csv_reports_by_year_and_source(trained_run, tmp_path, capsys):
    raw = tmp_path / "complaints.csv"
    pd.DataFrame(
        {
            "Product": ["Mortgage", "Credit card", "Debt collection", "Mortgage", "Checking or savings account"],
            "Consumer complaint narrative": [
                "my mortgage escrow payment was wrong",
                "a late fee on my card",
                "the collector calls me",
                "foreclosure on my loan",
                "the bank closed my account",
            ],
            "Date received": ["2019-05-01", "2019-12-31", "03/15/2021", None, "2021-01-02"],
        }
    ).to_csv(raw, index=False)
    code, output = run_cli(
        ["evaluate", "--model", str(trained_run / "model"), "--data", str(raw), "--out", str(tmp_path / "eval")], capsys
    )
    assert code == 0, output
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert {k: v["n"] for k, v in metrics["by_year"].items()} == {"2019": 2, "2021": 2, "unknown": 1}
    assert list(metrics["by_source"]) == ["complaints.csv"] and metrics["by_source"]["complaints.csv"]["n"] == 5
    assert "| 2021 | 2* |" in (tmp_path / "eval" / "classification_report.md").read_text()


def test_evaluate_split_with_a_source_column(trained_run, small_prepared, tmp_path):
    from ticket_triage.evaluation.evaluate import evaluate_model

    frame = pd.read_parquet(small_prepared / "test.parquet")
    frame["source"] = ["a.csv" if i % 3 else "b.json" for i in range(len(frame))]
    frame["date_received"] = "2022-06-01"
    frame.to_parquet(tmp_path / "test.parquet")
    metrics = evaluate_model(trained_run / "model", tmp_path / "test.parquet", tmp_path / "eval")
    assert {k: v["n"] for k, v in metrics["by_source"].items()} == {"a.csv": 40, "b.json": 20}
    assert list(metrics["by_year"]) == ["2022"]


def test_evaluate_an_exported_onnx_folder(trained_run, small_prepared, tmp_path, capsys):
    """`triage evaluate` scores through Classifier, so an ONNX export (no PyTorch weights) evaluates like its source."""
    pytest.importorskip("onnxruntime")
    from ticket_triage.export import export_onnx

    onnx_dir = tmp_path / "onnx"
    export_onnx(trained_run / "model", onnx_dir)
    assert not (onnx_dir / "model.safetensors").exists()
    code, out = run_cli(
        [
            "evaluate",
            "--model",
            str(onnx_dir),
            "--data",
            str(small_prepared / "test.parquet"),
            "--out",
            str(tmp_path / "ev"),
        ],
        capsys,
    )
    assert code == 0, out
    onnx_metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert onnx_metrics["model"]["backend"] == "onnx" and onnx_metrics["n"] == 60
    code, _ = run_cli(
        [
            "evaluate",
            "--model",
            str(trained_run / "model"),
            "--data",
            str(small_prepared / "test.parquet"),
            "--out",
            str(tmp_path / "ev-torch"),
            "--backend",
            "torch",
        ],
        capsys,
    )
    torch_metrics = json.loads((tmp_path / "ev-torch" / "metrics.json").read_text())
    assert onnx_metrics["confusion_matrix"] == torch_metrics["confusion_matrix"]
