"""`triage retrain` (learn from agents' corrections) and `triage compare` (the champion/challenger gate)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

import typer

from ._app import app

RulesOption = Annotated[
    Optional[Path],
    typer.Option("--rules", help="Gate rules YAML (default: the shipped gate_rules.yaml; see the README)."),
]
RoutingOption = Annotated[
    Optional[Path],
    typer.Option(
        "--routing", help="Routing YAML whose review thresholds give the review rate (default: the shipped one)."
    ),
]
ThresholdOption = Annotated[
    Optional[float],
    typer.Option("--threshold", help="One review threshold for every category, instead of the routing YAML's."),
]
ResamplesOption = Annotated[int, typer.Option("--resamples", help="Paired bootstrap resamples.")]


def _console(stderr: bool = True):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


@app.command()
def compare(
    champion: Annotated[Path, typer.Option("--champion", help="The model folder in service now.")],
    challenger: Annotated[Path, typer.Option("--challenger", help="The candidate model folder.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for compare.json, compare.md, routing_changes.csv.")],
    data: Annotated[
        Optional[list[Path]],
        typer.Option(
            "--data",
            help="Labelled file to score both on, repeatable: a retrain's corrections_holdout.parquet (set `corrections`), a prepared split or a CFPB-format file.",
        ),
    ] = None,
    base_test: Annotated[
        Optional[Path], typer.Option("--base-test", help="The base data's test split (PREPARED/test.parquet).")
    ] = None,
    rules: RulesOption = None,
    routing: RoutingOption = None,
    threshold: ThresholdOption = None,
    resamples: ResamplesOption = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap resamples.")] = 0,
    batch_size: Annotated[int, typer.Option(help="Texts per inference batch.")] = 64,
    device: Annotated[str, typer.Option(help="Where PyTorch runs: auto | cpu | cuda | cuda:N | mps.")] = "auto",
) -> None:
    """Score champion and challenger on the same sets, with paired bootstrap intervals, and judge the challenger."""
    from ..learning.compare import CompareConfig, compare_models

    report = compare_models(
        champion,
        challenger,
        data=data or [],
        base_test=base_test,
        rules_path=rules,
        routing_path=routing,
        threshold=threshold,
        out_dir=out,
        config=CompareConfig(resamples=resamples, seed=seed, batch_size=batch_size, device=device),
    )
    print_report(report, out)
    if not report["verdict"]["passed"]:
        raise typer.Exit(2)  # scripts can gate on it; 1 stays "bad input"


def print_report(report: dict, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    from ..learning.compare import metric_rows

    console = Console(highlight=False)
    for name, result in report["sets"].items():
        table = Table(title=f"{name}: {result['n']} rows, {result['routing_changes']} routing changes (points, 95% CI)")
        for column in ("metric", "champion", "challenger", "challenger - champion"):
            table.add_column(column, justify="left" if column == "metric" else "right")
        for row in metric_rows(result):
            table.add_row(*row)
        console.print(table)
    verdict = report["verdict"]
    for check in verdict["checks"]:
        if not check["passed"]:
            where = check["set"] + (f" / {check['category']}" if check["category"] else "")
            console.print(f"[red]failed[/]: {check['rule']} ({where}: {check['detail']})")
    state = "[green]PASS[/]" if verdict["passed"] else "[red]FAIL[/]"
    console.print(f"verdict {state}; report in {out / 'compare.md'}")


@app.command()
def retrain(
    base: Annotated[Path, typer.Option("--base", help="The prepared folder the current model was trained on.")],
    model: Annotated[Path, typer.Option("--model", help="The current model folder (CURRENT/model).")],
    feedback: Annotated[
        str,
        typer.Option(
            "--feedback",
            help="The service's database URL (e.g. sqlite:///triage.db) or the CSV of GET /v1/feedback/export?escape_formulas=false.",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Run folder to write (model/, data/, retrain.json, ...).")],
    since: Annotated[
        Optional[datetime],
        typer.Option(
            "--since", help="Only corrections made on or after this date.", formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]
        ),
    ] = None,
    correction_weight: Annotated[
        float, typer.Option("--correction-weight", help="Loss weight of a corrected ticket (a base row weighs 1).")
    ] = 3.0,
    holdout_frac: Annotated[
        float, typer.Option("--holdout-frac", help="Share of the corrections, the newest, held out for the gate.")
    ] = 0.2,
    epochs: Annotated[
        Optional[int],
        typer.Option("--epochs", help="Epochs. Default: 1 for a warm start, the model's own from scratch."),
    ] = None,
    from_scratch: Annotated[
        bool, typer.Option("--from-scratch", help="Fine-tune the base encoder again instead of the current model.")
    ] = False,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Peak learning rate. Default: the model's own.")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Default: the model's own.")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Default: the model's own.")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="auto | cpu | cuda | cuda:N | mps.")] = None,
    threads: Annotated[Optional[int], typer.Option("--threads", help="CPU threads for torch.")] = None,
    promote_if_better: Annotated[
        bool,
        typer.Option(
            "--promote-if-better",
            help="Then compare with the current model (base test split + held-out corrections) and, if the verdict passes, register and promote the new model in --registry.",
        ),
    ] = False,
    registry: Annotated[
        Optional[Path], typer.Option("--registry", help="Model registry folder (with --promote-if-better).")
    ] = None,
    rules: RulesOption = None,
    routing: RoutingOption = None,
    threshold: ThresholdOption = None,
    resamples: ResamplesOption = 1000,
) -> None:
    """Fine-tune on the base data plus agents' corrections (they win, and weigh more); hold the newest out."""
    from ..errors import ConfigError
    from ..learning.retrain import RetrainConfig
    from ..learning.retrain import retrain as run_retrain

    if promote_if_better and registry is None:
        raise ConfigError("--promote-if-better needs --registry DIR (the model registry to register the new model in)")
    console = _console()
    cfg = RetrainConfig(
        base=base,
        model=model,
        feedback=feedback,
        out=out,
        since=since,
        correction_weight=correction_weight,
        holdout_frac=holdout_frac,
        epochs=epochs,
        from_scratch=from_scratch,
        train_overrides={"lr": lr, "batch_size": batch_size, "seed": seed, "device": device, "threads": threads},
    )
    store = None
    if promote_if_better:
        from ..learning.gate import open_registry

        store = open_registry(registry)  # opened before training: a bad --registry stops it early
    result = run_retrain(cfg, log=console.print)
    console.print(f"[green]done[/]: model in {result.model_dir}; {out / 'retrain.json'}")
    if not promote_if_better:
        return
    from ..learning.compare import CompareConfig, compare_models
    from ..learning.gate import promote_if_better as promote

    report = compare_models(
        model,
        result.model_dir,
        base_test=base / "test.parquet",
        data=[result.holdout] if result.holdout else [],
        rules_path=rules,
        routing_path=routing,
        threshold=threshold,
        out_dir=out / "compare",
        config=CompareConfig(resamples=resamples, device=device or "auto"),
    )
    print_report(report, out / "compare")
    version = promote(report, champion=model, challenger=result.model_dir, registry=store, note=f"retrain {out}")
    if version is None:
        console.print("[yellow]not promoted[/]: the challenger failed the gate (see compare/compare.md)")
        raise typer.Exit(2)
    console.print(f"[green]promoted[/]: {version.version} is active in {registry}")
