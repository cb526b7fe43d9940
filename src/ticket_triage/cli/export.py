"""`triage export`: ONNX (optionally int8) export of a model folder, with parity checks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from ..errors import ConfigError
from ._app import app

_out = Console()


@app.command("export")
def export(
    model: Annotated[Path, typer.Option("--model", help="Model folder written by `triage train`.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the exported model (may be the model folder itself).")],
    format: Annotated[str, typer.Option("--format", help="Export format (only onnx).")] = "onnx",
    quantize: Annotated[
        Optional[str], typer.Option("--quantize", help="int8: also write a dynamically quantised model.int8.onnx.")
    ] = None,
    check_data: Annotated[
        Optional[Path], typer.Option("--check-data", help="Labelled file (text,label) to report int8 vs fp32 macro-F1.")
    ] = None,
    check_rows: Annotated[
        int, typer.Option("--check-rows", min=1, help="At most this many rows of --check-data are scored.")
    ] = 5000,
) -> None:
    """Export to ONNX for fast CPU inference; `triage predict` and `Classifier.load` use the folder directly."""
    if format != "onnx":
        raise ConfigError(f"unknown export format {format!r}: only onnx is supported")
    from ..export import export_onnx

    report = export_onnx(model, out, quantize=quantize, check_data=check_data, check_rows=check_rows)
    table = Table(title=f"ONNX export -> {report.out_dir}", show_header=False)
    table.add_row(
        "graph",
        f"opset {report.opset}, pooling {report.pooling}, "
        + (
            "ORT-optimised (" + ", ".join(f"{k}x{v}" for k, v in report.fused_operators.items()) + ")"
            if report.optimized
            else "not optimised"
        ),
    )
    table.add_row(
        "fp32 parity",
        f"max |diff| {report.parity_max_abs_diff:.2e} (tolerance {report.parity_tolerance:g}) "
        + ("[green]ok[/]" if report.parity_ok else "[red]FAILED[/]"),
    )
    if report.quantize:
        table.add_row(
            "int8 drift",
            f"max |diff| {report.int8_max_abs_diff:.3g}, argmax agreement {report.int8_argmax_agreement:.1%}"
            + (", per-channel scales" if report.int8_per_channel else ", per-tensor scales"),
        )
    if report.macro_f1_fp32 is not None:
        line = f"fp32 {report.macro_f1_fp32:.4f}"
        if report.macro_f1_int8 is not None:
            verdict = (
                "[green]no more than 1 point lost[/]"
                if report.int8_within_target
                else "[red]loses more than 1 point[/]"
            )
            line += f", int8 {report.macro_f1_int8:.4f} ({report.macro_f1_delta_points:+.2f} points, {verdict}); same prediction on {report.check_argmax_agreement:.1%}"
        table.add_row(f"macro-F1 ({report.check_rows} rows)", line)
    table.add_row(
        "files",
        ", ".join(f"{name} ({size / 1e6:.1f} MB)" if size > 1e5 else name for name, size in report.files.items()),
    )
    table.add_row("time", f"{report.seconds:.1f} s")
    _out.print(table)
