"""Distillation on the bundled data: teacher, distilled student and the student trained alone.

Targets (issue 14): the distilled MiniLM student's test macro-F1 within 1 point of its teacher's,
and at least 1 point above MiniLM trained alone with the same settings.

    python bench/distill.py --teacher runs/demo/model --data runs/demo/data --alone runs/demo \
        [--unlabeled data/cfpb_unlabeled.csv.gz] [--profile quick] [--out runs/distill]
    python bench/distill.py --run runs/distill        # report on a finished distillation

The student uses the `triage demo` profile's settings (`--profile`), so a `triage demo` run of the
same profile is the student trained alone; its folder is also the natural teacher (the
transformer + TF-IDF hybrid) until a larger encoder beats it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import write_section  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def distill(args) -> Path:
    from ticket_triage.demo import PROFILES
    from ticket_triage.distill import DistillConfig, distill_model
    from ticket_triage.training import TrainConfig

    config = DistillConfig(
        teachers=[str(t) for t in args.teacher],
        temperature=args.temperature,
        alpha=args.alpha,
        unlabeled=[str(u) for u in args.unlabeled],
        alone_run=str(args.alone) if args.alone else None,
        train_alone=args.alone is None,
        max_unlabeled=args.max_unlabeled,
    )
    settings = {
        **PROFILES[args.profile],
        **{k: v for k, v in (("epochs", args.epochs), ("max_train_rows", args.max_train_rows)) if v},
    }
    distill_model(config, TrainConfig(**settings), args.data, args.out, resume=(args.out / "checkpoint").exists())
    return args.out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", type=Path, action="append", default=[])
    parser.add_argument("--data", type=Path)
    parser.add_argument(
        "--alone",
        type=Path,
        help="run folder of the student trained alone (e.g. a `triage demo` run); without it the student is also trained alone here",
    )
    parser.add_argument("--unlabeled", type=Path, action="append", default=None)
    parser.add_argument("--profile", choices=("quick", "full"), default="quick")
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--out", type=Path, default=Path("runs/distill"))
    parser.add_argument("--epochs", type=int, help="override the profile's epochs (smoke runs)")
    parser.add_argument("--max-train-rows", type=int, help="override the profile's training rows (smoke runs)")
    parser.add_argument("--max-unlabeled", type=int, help="use at most this many unlabelled texts")
    parser.add_argument("--run", type=Path, help="report on this finished distillation instead of running one")
    parser.add_argument(
        "--section", default="distill", help="the RESULTS.md section to (re)write, e.g. one per teacher"
    )
    args = parser.parse_args()
    if args.unlabeled is None:
        args.unlabeled = [REPO / "data" / "cfpb_unlabeled.csv.gz"]
    if not args.run and not (args.teacher and args.data):
        parser.error("give --teacher and --data (or --run for a finished distillation)")
    run = args.run or distill(args)
    body = report(run)
    write_section(args.section, body)
    print(body)


def report(run: Path) -> str:
    metrics = json.loads((run / "metrics.json").read_text())
    d = metrics["distillation"]
    teacher, student = d["models"]["teacher"], d["models"]["student"]
    alone = d["models"].get("student_alone")
    rows = [
        ("teacher: " + ", ".join(Path(t).parent.name or t for t in d["teachers"]), teacher),
        ("student, distilled (as shipped)", student),
    ]
    ensemble = metrics.get("ensemble")
    if ensemble:
        rows.append(
            (
                "student, distilled: transformer alone",
                {
                    "val": ensemble["scores"]["validation"]["transformer"],
                    "test": ensemble["scores"]["test"]["transformer"],
                },
            )
        )
    alone_t = None
    if alone:
        rows.append((f"student trained alone ({alone.get('scored', 'as shipped')})", alone))
        alone_t = _alone_transformer(run)
        if alone_t:
            rows.append(("student trained alone: transformer alone", alone_t))
    lines = [
        "## Distillation (`bench/distill.py`)",
        "",
        f"Teacher(s) {', '.join(d['teachers'])} distilled into {metrics['config']['model']} ({metrics['config']['max_length']} tokens, {metrics['config']['epochs']} epochs, "
        f"{metrics['train_rows']} training rows of which {d['unlabeled_texts']} unlabelled; temperature {d['temperature']:g}, alpha {d['alpha']:g}).",
        "",
        "| model | validation macro-F1 | test macro-F1 | test accuracy |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {name} | {row['val']['macro_f1']:.4f} | {row['test']['macro_f1']:.4f} | {row['test'].get('accuracy', float('nan')):.4f} |"
        for name, row in rows
    ]
    if d.get("baseline_test_macro_f1") is not None:
        lines.append(f"| TF-IDF + linear SVM | | {d['baseline_test_macro_f1']:.4f} | |")
    gap = 100 * (student["test"]["macro_f1"] - teacher["test"]["macro_f1"])
    lines += [
        "",
        f"- Student as shipped vs teacher: {gap:+.1f} points (target: within 1): {'met' if gap >= -1 else 'MISSED'}.",
    ]
    if alone:
        gain = 100 * (student["test"]["macro_f1"] - alone["test"]["macro_f1"])
        lines.append(
            f"- Student vs the same student trained alone, both as shipped: {gain:+.1f} points (target: at least +1): {'met' if gain >= 1 else 'MISSED'}."
        )
    if ensemble and alone_t:
        gain_t = 100 * (ensemble["scores"]["test"]["transformer"]["macro_f1"] - alone_t["test"]["macro_f1"])
        lines.append(f"- Transformers alone (no TF-IDF half on either side): {gain_t:+.1f} points.")
    lines.append(
        f"- Student vs teacher on validation: KL {student['val_kl_to_teacher']:.3f} nats, same category on {student['val_agreement_with_teacher']:.1%} of texts."
    )
    return "\n".join(lines)


def _alone_transformer(run: Path) -> dict | None:
    config = run / "distill_config.yaml"
    if not config.is_file():
        return None
    import yaml

    alone_run = (yaml.safe_load(config.read_text()) or {}).get("alone_run")
    path = Path(alone_run or run / "alone") / "metrics.json"
    if not path.is_file():
        return None
    ens = json.loads(path.read_text()).get("ensemble")
    return (
        {"val": ens["scores"]["validation"]["transformer"], "test": ens["scores"]["test"]["transformer"]}
        if ens
        else None
    )


if __name__ == "__main__":
    main()
