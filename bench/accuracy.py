"""Accuracy on the bundled data: the fine-tuned transformer against the TF-IDF + SVM baseline.

Target (issue 3): full fine-tuning of the embedded model reaches a test macro-F1 at least 3
points above the baseline's, with every category's recall at least 0.80.

    python bench/accuracy.py [--profile quick|full] [--out runs/accuracy]   # prepare + train + report
    python bench/accuracy.py --run runs/demo --profile quick                # report on a finished run
    python bench/accuracy.py --run runs/x --label "512 tokens"              # report on any run, in a section of its own
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import write_section  # noqa: E402


def train(profile: str, out: Path) -> Path:
    from ticket_triage.demo import run_demo

    run_demo(out, full=profile == "full")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=("quick", "full"), default="full")
    parser.add_argument("--out", type=Path, default=Path("runs/accuracy"))
    parser.add_argument("--run", type=Path, help="report on this finished run folder instead of training")
    parser.add_argument("--label", help="with --run: a run of other settings than a profile's; names its own RESULTS section")
    args = parser.parse_args()

    if args.label and not args.run:
        parser.error("--label names a finished run: give --run too")
    run = args.run or train(args.profile, args.out)
    what = f"run `{run.name}`: {args.label}" if args.label else f"`{args.profile}` profile"
    section = "accuracy-" + ("".join(c if c.isalnum() else "-" for c in args.label.lower()) if args.label else args.profile)
    metrics = json.loads((run / "metrics.json").read_text())
    test, baseline, config = metrics["test"], metrics["baseline"], metrics["config"]
    gain = 100 * (test["macro_f1"] - baseline["macro_f1"])
    worst = min(test["per_class"].items(), key=lambda kv: kv[1]["recall"])
    f1_met, recall_met = gain >= 3, worst[1]["recall"] >= 0.80

    rows = [
        f"| {name} | {row['support']} | {row['recall']:.3f} | {baseline['per_class'][name]['recall']:.3f} | {row['f1']:.3f} | {baseline['per_class'][name]['f1']:.3f} |"
        for name, row in test["per_class"].items()
    ]
    settings = ", ".join(f"{k}={config[k]}" for k in ("epochs", "max_length", "truncation", "batch_size", "lr", "warmup_ratio", "weight_decay", "class_weights", "seed"))
    body = "\n".join([
        f"## Accuracy on the bundled data, {what} (`bench/accuracy.py`)",
        "",
        f"Embedded all-MiniLM-L6-v2, full fine-tuning; settings: {settings}; best epoch {metrics['best_epoch']} of {len(metrics['history'])}; "
        f"{metrics['train_rows']} training rows, {test['n']} test rows; {metrics['precision']} on {metrics['device']}, {metrics['train_samples_per_s']} train samples/s, {metrics['wall_time_s'] / 60:.1f} min training.",
        "",
        "| | transformer | TF-IDF + linear SVM |",
        "|---|---:|---:|",
        f"| test macro-F1 | {test['macro_f1']:.4f} | {baseline['macro_f1']:.4f} |",
        f"| test accuracy | {test['accuracy']:.4f} | {baseline['accuracy']:.4f} |",
        f"| test weighted-F1 | {test['weighted_f1']:.4f} | {baseline['weighted_f1']:.4f} |",
        "",
        "| category | test support | recall | baseline recall | F1 | baseline F1 |",
        "|---|---:|---:|---:|---:|---:|",
        *rows,
        "",
        f"- macro-F1 gain over the baseline: **{gain:+.1f} points** (target >= +3): **{'met' if f1_met else 'NOT met'}**.",
        f"- lowest recall: {worst[0]} {worst[1]['recall']:.3f} on {worst[1]['support']} test rows (target: every category >= 0.80): **{'met' if recall_met else 'NOT met'}**.",
    ])
    write_section(section, body)
    print(body)


if __name__ == "__main__":
    main()
