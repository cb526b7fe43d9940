"""`triage predict` (classify a file) and `triage calibrate` (fit the temperature)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from ._app import app

_out = Console()


@app.command("predict")
def predict(
    model: Annotated[
        Path, typer.Option("--model", help="Model folder (from `triage train`, or an `triage export` folder).")
    ],
    input: Annotated[
        Path, typer.Option("--input", help="CSV (.csv/.csv.gz), JSONL or Parquet file; CFPB exports are recognised.")
    ],
    out: Annotated[
        Path, typer.Option("--out", help="Output file; its extension (.csv, .jsonl, .parquet) picks the format.")
    ],
    text_column: Annotated[
        Optional[str],
        typer.Option(
            "--text-column", help="Column with the ticket text (default: 'Consumer complaint narrative', else 'text')."
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Texts per model call.")] = 32,
    abstain_below: Annotated[
        Optional[float],
        typer.Option("--abstain-below", help="Mark predictions with confidence below this as needs_review."),
    ] = None,
    backend: Annotated[
        str,
        typer.Option(
            "--backend",
            help="auto | torch | torch-bf16 | onnx | onnx-fp32 | onnx-int8; auto: the fastest on this machine (torch on a CUDA GPU; torch-bf16 on a CPU with AMX; else the ONNX export, int8 first; else torch, bf16 where the CPU has it).",
        ),
    ] = "auto",
    threads: Annotated[
        Optional[int], typer.Option("--threads", help="CPU threads (default: the backend's choice).")
    ] = None,
    device: Annotated[
        str,
        typer.Option(
            "--device",
            help="Where PyTorch runs: auto (CUDA, MPS, CPU), cpu, cuda, cuda:N, mps; with a CUDA GPU, backend auto picks PyTorch on it.",
        ),
    ] = "auto",
    chunk_rows: Annotated[
        int, typer.Option("--chunk-rows", min=1, help="Rows read, scored and written at a time (bounds memory).")
    ] = 8192,
    ensemble: Annotated[
        Optional[bool],
        typer.Option(
            "--ensemble/--no-ensemble",
            help="Mix in the folder's TF-IDF model (--ensemble tfidf at training). Default: as its triage.json says; --no-ensemble scores with the transformer alone.",
        ),
    ] = None,
    nproc: Annotated[
        int,
        typer.Option(
            "--nproc",
            min=1,
            help="Score with N local processes (torchrun): one per GPU, or the CPU cores divided among them; each takes a contiguous share of the input.",
        ),
    ] = 1,
    work_dir: Annotated[
        Optional[Path],
        typer.Option(
            "--work-dir",
            help="With several processes: folder for the parts, shared by every machine (default: OUT.parts); a rerun keeps the finished parts.",
        ),
    ] = None,
) -> None:
    """Classify every row of a file: adds category, confidence, prob_<category>, error (and needs_review).

    Also runs under torchrun: `torchrun --nproc-per-node N -m ticket_triage predict ...`.
    """
    import os
    import sys

    from ..inference import PredictOptions
    from ..training.distributed import launch_local, launched_by_torchrun

    if nproc > 1 and not launched_by_torchrun():
        raise typer.Exit(launch_local(nproc, sys.argv[1:]))
    from ..inference.distributed_predict import PLAN_FILE, work_dir_for

    options = PredictOptions(
        text_column=text_column,
        batch_size=batch_size,
        abstain_below=abstain_below,
        backend=backend,
        threads=threads,
        device=device,
        chunk_rows=chunk_rows,
        ensemble=ensemble,
    )
    unfinished = (work_dir or work_dir_for(out)).joinpath(PLAN_FILE).is_file()  # an interrupted --nproc run: resume it
    if launched_by_torchrun() or work_dir is not None or unfinished or input.suffix.lower() == ".zip":
        from ..inference.distributed_predict import predict_distributed

        err = Console(stderr=True, highlight=False)
        main = os.environ.get("RANK", "0") == "0"
        report = predict_distributed(
            model,
            input,
            out,
            options,
            work_dir=work_dir,
            progress=main and err.is_terminal,
            log=err.print if main else lambda _m: None,
        )
    else:
        from ..inference import predict_file

        report = predict_file(model, input, out, options, progress=_out.is_terminal)
    if report is not None:  # None on the ranks other than 0
        _print_report(report)


def _print_report(report) -> None:
    """One summary for both paths; a sharded run adds its processes and shares."""
    review = f", {report.needs_review} need review" if report.needs_review is not None else ""
    auto_reason = getattr(report, "auto_reason", "")
    chosen = f"{report.backend}, auto: {auto_reason}" if auto_reason else report.backend
    world = getattr(report, "world_size", None)
    processes = f" with {world} process(es)" if world is not None else ""
    _out.print(
        f"[green]wrote[/] {report.output}: {report.rows} rows ({report.predicted} predicted, {report.errors} errors{review}) "
        f"in {report.seconds:.1f} s = {report.rows_per_s:.0f} rows/s{processes} [dim]({chosen}; model {report.model_version})[/]",
        highlight=False,
        soft_wrap=True,
    )
    for part in getattr(report, "parts", []):
        how = "kept from an earlier run" if part["kept"] else f"{part['rows_per_s']:.0f} rows/s"
        _out.print(
            f"  share {part['share']} (rank {part['rank']}, {part['host']}): {part['rows']} rows in {part['seconds']:.1f} s, {how}",
            highlight=False,
        )
    if world is not None:
        _out.print(f"  manifest: {report.manifest}", highlight=False, soft_wrap=True)


@app.command("calibrate")
def calibrate(
    model: Annotated[
        Path, typer.Option("--model", help="Model folder to calibrate (its triage.json gets the temperature).")
    ],
    data: Annotated[Path, typer.Option("--data", help="Labelled validation file (text,label: parquet/CSV/JSONL).")],
    out: Annotated[
        Optional[Path],
        typer.Option("--out", help="Where to write calibration.json and plots (default: the model folder)."),
    ] = None,
    text_column: Annotated[Optional[str], typer.Option("--text-column", help="Column with the ticket text.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 32,
) -> None:
    """Fit the softmax temperature on a validation split so confidence means what it says."""
    from ..calibration import calibrate_model

    report = calibrate_model(model, data, out, text_column=text_column, batch_size=batch_size)
    _out.print(
        f"temperature [bold]{report.temperature:.3f}[/] (was {report.previous_temperature:.3f}) on {report.n} rows; "
        f"ECE {report.ece_before:.4f} -> {report.ece_after:.4f}, NLL {report.nll_before:.4f} -> {report.nll_after:.4f}",
        highlight=False,
        soft_wrap=True,
    )
    if report.ensemble:
        e = report.ensemble
        _out.print(
            f"TF-IDF hybrid: weight {e['weight']:.2f} (was {e['previous_weight']:.2f}), {'on' if e['enabled'] else 'off'}; macro-F1 here: "
            + ", ".join(f"{k} {v:.4f}" for k, v in e["val_macro_f1"].items()),
            highlight=False,
            soft_wrap=True,
        )
    for row in report.coverage:
        if row["threshold"] in (0.5, 0.8, 0.9, 0.95):
            acc = f"{row['accuracy_on_routed']:.3f}" if row["accuracy_on_routed"] is not None else "-"
            _out.print(
                f"  abstain below {row['threshold']:.2f}: {row['auto_routed_share']:.1%} auto-routed, accuracy {acc}",
                highlight=False,
            )
    _out.print(f"[green]wrote[/] {report.files['calibration']}", highlight=False, soft_wrap=True)
