"""`triage distill`: train a student model on a teacher's probabilities (ticket_triage.distill)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._app import app


@app.command()
def distill(
    teacher: list[Path] = typer.Option(..., "--teacher", help="Teacher model folder (a run's model/); repeat to average several teachers."),
    data: Path = typer.Option(..., "--data", help="Folder from `triage data prepare` (train/val/test.parquet)."),
    out: Path = typer.Option(..., "--out", help="Run folder for the student (model/, reports, cached teacher targets)."),
    student: Optional[str] = typer.Option(None, "--student", help="Student encoder: minilm (default), mpnet, a local Hugging Face folder or a hub id."),
    unlabeled: Optional[list[Path]] = typer.Option(None, "--unlabeled", help="File of unlabelled narratives (CSV/JSONL/Parquet), taught by the teacher only; repeatable. E.g. data/cfpb_unlabeled.csv.gz."),
    temperature: float = typer.Option(2.0, help="Softening temperature T for teacher and student; the soft loss is scaled by T^2."),
    alpha: float = typer.Option(0.5, help="Weight of cross-entropy on the gold labels; 1 - alpha goes to KL to the teacher."),
    max_unlabeled: Optional[int] = typer.Option(None, help="Use at most this many unlabelled texts."),
    train_alone: bool = typer.Option(False, "--train-alone", help="Also train the student without a teacher (same settings, in OUT/alone) for the comparison."),
    alone: Optional[Path] = typer.Option(None, "--alone", help="Or: an existing run of the student trained alone, for the comparison."),
    teacher_backend: str = typer.Option("auto", help="Backend that scores the teacher(s): as for `triage predict --backend`."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file of the student's training settings (as for `triage train`); options here override it."),
    epochs: Optional[int] = typer.Option(None, help="Maximum epochs. [default: 3]"),
    batch_size: Optional[int] = typer.Option(None, help="Batch size per device. [default: 16]"),
    lr: Optional[float] = typer.Option(None, help="Peak learning rate. [default: 8e-5]"),
    max_length: Optional[int] = typer.Option(None, help="Tokens per text, at most 512. [default: 256]"),
    long_text: Optional[str] = typer.Option(None, help="truncate | chunks, as for `triage train`. [default: truncate]"),
    class_weights: Optional[str] = typer.Option(None, help="none | balanced: weights of the gold-label loss. [default: none]"),
    max_train_rows: Optional[int] = typer.Option(None, help="Train on a stratified subset of this many labelled rows (the unlabelled ones are added)."),
    patience: Optional[int] = typer.Option(None, help="Early-stopping patience in epochs. [default: 2]"),
    ensemble: Optional[str] = typer.Option(None, "--ensemble", help="none | tfidf, as for `triage train`. [default: none]"),
    seed: Optional[int] = typer.Option(None, help="Random seed. [default: 42]"),
    precision: Optional[str] = typer.Option(None, help="auto | bf16 | fp16 | fp32. [default: auto]"),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda | cuda:N | mps. [default: auto]"),
    no_baseline: bool = typer.Option(False, "--no-baseline", help="Skip the TF-IDF + SVM baseline in the report."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted distillation in --out (cached teacher targets are reused)."),
) -> None:
    """Distil one or more teacher models into a (smaller) student, with unlabelled texts if given.

    The student is an ordinary model folder; OUT/distillation.md sets teacher, student and (with
    --train-alone or --alone) the student trained alone side by side."""
    from rich.console import Console

    from ..distill import DistillConfig, distill_model
    from ..training import TrainConfig

    overrides = {
        "model": student, "epochs": epochs, "batch_size": batch_size, "lr": lr, "max_length": max_length, "long_text": long_text,
        "class_weights": class_weights, "max_train_rows": max_train_rows, "patience": patience, "ensemble": ensemble, "seed": seed,
        "precision": precision, "device": device, "baseline": False if no_baseline else None,
    }
    train_cfg = TrainConfig.from_yaml(config, **overrides) if config else TrainConfig.from_dict({k: v for k, v in overrides.items() if v is not None})
    distill_cfg = DistillConfig(
        teachers=[str(t) for t in teacher], temperature=temperature, alpha=alpha, unlabeled=[str(u) for u in unlabeled or []],
        max_unlabeled=max_unlabeled, train_alone=train_alone, alone_run=str(alone) if alone else None, teacher_backend=teacher_backend,
        teacher_device=device or "auto",
    )
    console = Console(stderr=True, highlight=False)
    distill_model(distill_cfg, train_cfg, data, out, resume=resume, log=console.print)
    console.print(f"[green]done[/]: student in {out / 'model'}, comparison in {out / 'distillation.md'}")
