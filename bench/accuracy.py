"""Accuracy on the bundled data: the fine-tuned transformer against the TF-IDF + SVM baseline.

Targets (issue 13), on both bundled files: the `quick` profile's transformer alone reaches a
test macro-F1 at least 3 points above TF-IDF + linear SVM trained on the same split (the
hybrid is reported beside it); the `full` profile reaches a test macro-F1 of 0.85.

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
    parser.add_argument(
        "--label", help="with --run: a run of other settings than a profile's; names its own RESULTS section"
    )
    args = parser.parse_args()

    if args.label and not args.run:
        parser.error("--label names a finished run: give --run too")
    run = args.run or train(args.profile, args.out)
    what = f"run `{run.name}`: {args.label}" if args.label else f"`{args.profile}` profile"
    section = "accuracy-" + (
        "".join(c if c.isalnum() else "-" for c in args.label.lower()) if args.label else args.profile
    )
    metrics = json.loads((run / "metrics.json").read_text())
    body = report(metrics, what, args.profile if not args.label else None)
    write_section(section, body)
    print(body)


def _encoder_name(model: str) -> str:
    """The encoder a run fine-tuned, as `triage models` names it where it is one of those."""
    from ticket_triage.modeling import EMBEDDED_MODEL

    known = {
        EMBEDDED_MODEL: "all-MiniLM-L6-v2 (embedded)",
        "minilm": "all-MiniLM-L6-v2 (embedded)",
        "mpnet": "all-mpnet-base-v2",
    }
    return known.get(model, model)


def report(metrics: dict, what: str, profile: str | None) -> str:
    """The RESULTS section: the transformer alone against the baseline, the hybrid beside them."""
    test, baseline, config = metrics["test"], metrics["baseline"], metrics["config"]
    ensemble = metrics.get("ensemble") or None
    # `test` scores the folder as shipped (the hybrid where it is on); the target is the transformer's alone
    alone = (
        ensemble["scores"]["test"]["transformer"]
        if ensemble
        else {
            "macro_f1": test["macro_f1"],
            "accuracy": test["accuracy"],
            "recall": {c: r["recall"] for c, r in test["per_class"].items()},
        }
    )
    gain = 100 * (alone["macro_f1"] - baseline["macro_f1"])
    worst = min(alone["recall"].items(), key=lambda kv: kv[1])
    models = [
        ("transformer", alone),
        (
            "TF-IDF + linear SVM (baseline)",
            {
                "macro_f1": baseline["macro_f1"],
                "accuracy": baseline["accuracy"],
                "recall": {c: r["recall"] for c, r in baseline["per_class"].items()},
            },
        ),
    ]
    if ensemble:
        models += [
            ("TF-IDF + logistic regression", ensemble["scores"]["test"]["tfidf"]),
            (
                f"hybrid (w={ensemble['weight']:.2f}, {'on' if ensemble['enabled'] else 'off'})",
                ensemble["scores"]["test"]["hybrid"],
            ),
        ]
    settings = ", ".join(
        f"{k}={config[k]}"
        for k in (
            "epochs",
            "max_length",
            "truncation",
            "long_text",
            "batch_size",
            "lr",
            "layer_lr_decay",
            "warmup_ratio",
            "class_weights",
            "max_train_rows",
            "ensemble",
            "seed",
        )
        if k in config
    )
    lines = [
        f"## Accuracy on the bundled data, {what} (`bench/accuracy.py`)",
        "",
        f"Encoder {_encoder_name(config['model'])}, full fine-tuning; settings: {settings}; best epoch {metrics['best_epoch']} of {len(metrics['history'])}; "
        f"{metrics['train_rows']} training rows, {test['n']} test rows; {metrics['precision']} on {metrics['device']}, {metrics['train_samples_per_s']} train samples/s, "
        f"{metrics['wall_time_s'] / 60:.1f} min training.",
        "",
        "| test split | " + " | ".join(name for name, _ in models) + " |",
        "|---|" + "---:|" * len(models),
        "| macro-F1 | " + " | ".join(f"{m['macro_f1']:.4f}" for _, m in models) + " |",
        "| accuracy | " + " | ".join(f"{m['accuracy']:.4f}" for _, m in models) + " |",
        *(
            f"| recall {c} ({test['per_class'][c]['support']}) | "
            + " | ".join(f"{m['recall'][c]:.3f}" for _, m in models)
            + " |"
            for c in test["per_class"]
        ),
    ]
    if ensemble:
        val = ensemble["val_macro_f1"]
        lines += [
            "",
            f"Validation macro-F1 (where the hybrid's weight and switch are chosen): transformer {val['transformer']:.4f}, "
            f"TF-IDF {val['tfidf']:.4f}, hybrid {val['hybrid']:.4f}.",
        ]
    for key, title in (("by_source", "input file"), ("by_year", "year received")):
        table = test.get(key)
        if table:
            lines += [
                "",
                f"By {title}, the model as shipped: "
                + "; ".join(f"{name} macro-F1 {row['macro_f1']:.3f} (n={row['n']})" for name, row in table.items())
                + ".",
            ]
    lines += [
        "",
        f"- transformer macro-F1 over the baseline: **{gain:+.1f} points** (target >= +3): **{'met' if gain >= 3 else 'NOT met'}**.",
    ]
    if profile == "full":
        lines.append(
            f"- test macro-F1 as shipped {test['macro_f1']:.4f} (target >= 0.85): **{'met' if test['macro_f1'] >= 0.85 else 'NOT met'}**."
        )
    lines.append(
        f"- lowest transformer recall: {worst[0]} {worst[1]:.3f} (the per-category floor of 0.80 is judged by 5-fold cross-validation, `bench/accuracy_cv.py`)."
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
