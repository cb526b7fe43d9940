"""`triage distill`: train a student model on a teacher's probabilities (ticket_triage.distill)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ._app import app
from .options import train_config_from, train_options


@app.command()
@train_options(flags={"model": "--student"})
def distill(
    teacher: Annotated[
        list[Path],
        typer.Option("--teacher", help="Teacher model folder (a run's model/); repeat to average several teachers."),
    ],
    data: Annotated[Path, typer.Option("--data", help="Folder from `triage data prepare` (train/val/test.parquet).")],
    out: Annotated[
        Path, typer.Option("--out", help="Run folder for the student (model/, reports, cached teacher targets).")
    ],
    unlabeled: Annotated[
        Optional[list[Path]],
        typer.Option(
            "--unlabeled",
            help="File of unlabelled narratives (CSV/JSONL/Parquet), taught by the teacher only; repeatable. E.g. data/cfpb_unlabeled.csv.gz.",
        ),
    ] = None,
    temperature: Annotated[
        float, typer.Option(help="Softening temperature T for teacher and student; the soft loss is scaled by T^2.")
    ] = 2.0,
    alpha: Annotated[
        float, typer.Option(help="Weight of cross-entropy on the gold labels; 1 - alpha goes to KL to the teacher.")
    ] = 0.5,
    max_unlabeled: Annotated[Optional[int], typer.Option(help="Use at most this many unlabelled texts.")] = None,
    train_alone: Annotated[
        bool,
        typer.Option(
            "--train-alone",
            help="Also train the student without a teacher (same settings, in OUT/alone) for the comparison.",
        ),
    ] = False,
    alone: Annotated[
        Optional[Path],
        typer.Option("--alone", help="Or: an existing run of the student trained alone, for the comparison."),
    ] = None,
    teacher_backend: Annotated[
        str, typer.Option(help="Backend that scores the teacher(s): as for `triage predict --backend`.")
    ] = "auto",
    config: Annotated[
        Optional[Path],
        typer.Option(
            "--config",
            help="YAML file of the student's training settings (as for `triage train`); options here override it.",
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue an interrupted distillation in --out (cached teacher targets are reused), with the settings in its checkpoint, as `triage train --resume`.",
        ),
    ] = False,
    train_overrides: dict | None = None,
) -> None:
    """Distil one or more teacher models into a (smaller) student, with unlabelled texts if given.

    The student is an ordinary model folder; OUT/distillation.md sets teacher, student and (with
    --train-alone or --alone) the student trained alone side by side. --student and the training
    options are those of `triage train`; --device also places the teachers."""
    from rich.console import Console

    from ..distill import DistillConfig, distill_model

    given = train_overrides or {}
    train_cfg = train_config_from(config, given, resume_from=out if resume else None)
    distill_cfg = DistillConfig(
        teachers=[str(t) for t in teacher],
        temperature=temperature,
        alpha=alpha,
        unlabeled=[str(u) for u in unlabeled or []],
        max_unlabeled=max_unlabeled,
        train_alone=train_alone,
        alone_run=str(alone) if alone else None,
        teacher_backend=teacher_backend,
        teacher_device=given.get("device") or "auto",
    )
    console = Console(stderr=True, highlight=False)
    distill_model(distill_cfg, train_cfg, data, out, resume=resume, log=console.print)
    console.print(f"[green]done[/]: student in {out / 'model'}, comparison in {out / 'distillation.md'}")
