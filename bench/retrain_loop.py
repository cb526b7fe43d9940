"""The learning loop on the bundled data (issue 17): do agents' corrections make the model better
on newer tickets without costing accuracy on the old ones?

    older rows (undated, or received before 2023) = base: prepare, train the champion
    newer rows (2023 on), in date order            = live: first half, then second half
    an agent corrects every champion mistake on the first half (the export CSV the service gives)
    `retrain` (warm start) on base + those corrections -> the challenger
    `compare` champion vs challenger on the second live half, the old test split and the held-out
    corrections, with paired bootstrap intervals and the shipped gate's verdict

A control run answers "is it the corrections, or just one more epoch?": the same warm start on
the base rows alone, scored on the same sets.

Targets: the challenger's accuracy on the second live half above the champion's, and not more
than 0.5 points below it on the old test split.

    python bench/retrain_loop.py --profile quick [--out runs/retrain_loop]   # a few minutes on 2 cores
    python bench/retrain_loop.py --profile full
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import write_section  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
BUNDLED = [REPO / "data" / "cfpb_sample.csv.gz", REPO / "data" / "cfpb_more.csv.gz"]
LIVE_FROM = "2023-01-01"  # the bundled data's newest era (most rows are 2019 or 2023, see data/README.md)
PROFILES = {
    # encoder settings as the demo's quick profile, on fewer rows so a loop fits in minutes
    "quick": dict(
        train=dict(epochs=2, max_length=128, batch_size=16, lr=1e-4, class_weights="balanced", max_train_rows=1500),
        live_rows=1200,
        resamples=1000,
    ),
    "full": dict(
        train=dict(epochs=4, max_length=256, batch_size=16, lr=8e-5, class_weights="balanced"),
        live_rows=None,
        resamples=1000,
    ),
}
CSV_COLUMNS = ["Date received", "Product", "Consumer complaint narrative", "Complaint ID", "Submitted via"]


def split_eras(out: Path):
    """(base CSV path, live DataFrame[text, label, date_received] in date order, near-copies removed)."""
    import pandas as pd

    frames = [pd.read_csv(p, dtype=str, keep_default_na=False) for p in BUNDLED]
    rows = pd.concat(frames, ignore_index=True)
    when = pd.to_datetime(rows["Date received"].replace("", None), errors="coerce")
    live_mask = when >= pd.Timestamp(LIVE_FROM)
    out.mkdir(parents=True, exist_ok=True)
    base_csv = out / "base.csv"
    rows[~live_mask].to_csv(base_csv, index=False)
    live_csv = out / "live.csv"
    rows[live_mask].assign(_when=when[live_mask]).sort_values("_when", kind="stable").drop(columns="_when").to_csv(
        live_csv, index=False
    )
    return base_csv, live_csv


def live_rows(live_csv: Path, base_dir: Path, n: int | None, seed: int = 0):
    """The live tickets: taxonomy-mapped and cleaned as prepare would, near-copies of base rows or
    of earlier live rows removed (a correction must not teach a copy of a later test ticket), an
    even sample of `n` in date order."""
    import numpy as np
    import pandas as pd

    from ticket_triage.data.io import load_split, read_labelled_file, read_manifest
    from ticket_triage.data.neardup import near_duplicates_of
    from ticket_triage.learning.merge import _components

    manifest = read_manifest(base_dir)
    threshold = manifest["config"]["near_duplicates"]
    frame, _ = read_labelled_file(live_csv, base_dir / "taxonomy.yaml", clean=manifest["config"].get("clean") or ())
    frame = frame[frame["text"].str.split().str.len() >= int(manifest["config"].get("min_words", 5))]
    frame = frame.reset_index(drop=True)
    root = _components(frame["text"].tolist(), threshold)
    frame = frame[root == np.arange(len(frame))]
    base_texts = [t for s in ("train", "val", "test") for t in load_split(base_dir, s, columns=["text"])["text"]]
    frame = frame[~near_duplicates_of(frame["text"].tolist(), base_texts, threshold)]
    if n is not None and len(frame) > n:
        keep = np.sort(np.random.default_rng(seed).choice(len(frame), n, replace=False))
        frame = frame.iloc[keep]
    frame = frame.reset_index(drop=True)
    frame["date_received"] = pd.to_datetime(frame["date_received"]).dt.date.astype(str)
    return frame


def corrections_csv(champion_dir: Path, first_half, path: Path) -> tuple[Path, int, float]:
    """The agent: every champion mistake on the first half, corrected, as the service exports it."""
    import pandas as pd

    from ticket_triage.inference.classifier import Classifier

    clf = Classifier.load(champion_dir, backend="torch")
    pred = clf.predict_proba(first_half["text"].tolist(), 64).argmax(1)
    labels = clf.labels
    wrong = [i for i, p in enumerate(pred) if labels[p] != first_half["label"].iloc[i]]
    rows = first_half.iloc[wrong]
    pd.DataFrame(
        {
            "Date received": rows["date_received"],
            "Product": rows["label"],
            "Consumer complaint narrative": rows["text"],
            "Complaint ID": [f"live-{i}" for i in rows.index],
            "Submitted via": "web",
            "Corrected at": rows["date_received"],
        }
    ).to_csv(path, index=False)
    return path, len(rows), 1 - len(rows) / len(first_half)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=tuple(PROFILES), default="quick")
    parser.add_argument("--out", type=Path, default=Path("runs/retrain_loop"))
    parser.add_argument("--correction-weight", type=float, default=3.0)
    parser.add_argument("--lr", type=float, help="learning rate of the warm start (default: the champion's)")
    parser.add_argument("--no-control", action="store_true", help="skip the control run (base rows only)")
    parser.add_argument("--label", help="names this run's own RESULTS section (e.g. after a code change)")
    parser.add_argument(
        "--reuse-champion",
        action="store_true",
        help="keep --out's prepared base and champion from an earlier run; redo the corrections, retrain and compare",
    )
    args = parser.parse_args()
    profile = PROFILES[args.profile]
    out = args.out
    import shutil

    from ticket_triage.data import DataConfig, prepare_dataset
    from ticket_triage.learning.compare import CompareConfig, compare_models
    from ticket_triage.learning.retrain import RetrainConfig, retrain
    from ticket_triage.training import TrainConfig, train_model

    reuse = args.reuse_champion and (out / "champion" / "metrics.json").is_file()
    if reuse:
        for name in ("challenger", "control", "compare", "compare_control"):
            shutil.rmtree(out / name, ignore_errors=True)
    elif out.exists():
        shutil.rmtree(out)
    clock: dict[str, float] = {}
    t = time.perf_counter()
    base_csv, live_csv = split_eras(out)
    if not reuse:
        prepare_dataset(DataConfig(input=[base_csv], out_dir=out / "base"))
    live = live_rows(live_csv, out / "base", profile["live_rows"])
    half = len(live) // 2
    first, second = live.iloc[:half], live.iloc[half:]
    second.to_parquet(out / "live_second_half.parquet", index=False)
    clock["data"] = time.perf_counter() - t

    t = time.perf_counter()
    if reuse:
        from types import SimpleNamespace

        champion = SimpleNamespace(model_dir=out / "champion" / "model")
    else:
        champion = train_model(TrainConfig(**profile["train"]), out / "base", out / "champion", progress=False)
        clock["champion"] = time.perf_counter() - t

    feedback, n_corr, first_acc = corrections_csv(champion.model_dir, first, out / "feedback.csv")
    t = time.perf_counter()
    overrides = {"lr": args.lr}
    challenger = retrain(
        RetrainConfig(
            base=out / "base",
            model=champion.model_dir,
            feedback=str(feedback),
            out=out / "challenger",
            correction_weight=args.correction_weight,
            train_overrides=overrides,
        ),
        progress=False,
    )
    clock["retrain"] = time.perf_counter() - t

    control = None
    if not args.no_control:
        t = time.perf_counter()
        settings = {**champion_config(champion.model_dir), "model": str(champion.model_dir), "epochs": 1}
        settings.update({k: v for k, v in overrides.items() if v is not None})
        control = train_model(TrainConfig.from_dict(settings), out / "base", out / "control", progress=False)
        clock["control"] = time.perf_counter() - t

    t = time.perf_counter()
    sets = dict(base_test=out / "base" / "test.parquet", data=[out / "live_second_half.parquet"])
    if challenger.holdout:
        sets["data"].append(challenger.holdout)
    cfg = CompareConfig(resamples=profile["resamples"], backend="torch")
    report = compare_models(champion.model_dir, challenger.model_dir, out_dir=out / "compare", config=cfg, **sets)
    control_report = (
        compare_models(champion.model_dir, control.model_dir, out_dir=out / "compare_control", config=cfg, **sets)
        if control
        else None
    )
    clock["compare"] = time.perf_counter() - t
    body = results(args, profile, live, first_acc, n_corr, challenger.summary, report, control_report, clock)
    # a run with another warm-start lr gets a section of its own: the default's result stays on record
    variant = (f"-lr{args.lr:g}" if args.lr else "") + (
        f"-w{args.correction_weight:g}" if args.correction_weight != 3.0 else ""
    )
    if args.label:
        variant += "-" + "".join(c if c.isalnum() else "-" for c in args.label.lower())
    write_section(f"retrain-loop-{args.profile}{variant}", body)
    print(body)


def champion_config(model_dir: Path) -> dict:
    from ticket_triage.training import TrainConfig

    return TrainConfig.read_yaml(model_dir / "train_config.yaml")


def _pt(entry: dict, key: str) -> str:
    lo, hi = entry[f"{key}_ci"]
    return f"{entry[key] * 100:.2f} [{lo * 100:.2f}, {hi * 100:.2f}]"


def results(args, profile, live, first_acc, n_corr, summary, report, control, clock) -> str:
    sets = report["sets"]
    live_name = "live_second_half"
    lines = [
        f"## The learning loop, `{args.profile}` profile{f', warm-start lr {args.lr:g}' if args.lr else ''}"
        f"{f', correction weight {args.correction_weight:g}' if args.correction_weight != 3.0 else ''}"
        f"{f', {args.label}' if args.label else ''} (`bench/retrain_loop.py`)",
        "",
        f"Base: the bundled rows received before {LIVE_FROM} or undated, prepared as usual; the champion trains on them "
        f"({', '.join(f'{k}={v}' for k, v in profile['train'].items())}). Live: {len(live)} rows from {LIVE_FROM} on "
        f"(near-copies of base rows and of earlier live rows removed), in date order: the first half "
        f"({live['date_received'].iloc[0]} to {live['date_received'].iloc[len(live) // 2 - 1]}) is corrected, the second "
        f"({live['date_received'].iloc[len(live) // 2]} to {live['date_received'].iloc[-1]}) is scored.",
        "",
        f"The champion got {first_acc * 100:.1f}% of the first half right; the agent corrected the other {n_corr}. "
        f"`retrain` (warm start, 1 epoch, lr {summary['config']['train']['lr']:g}, correction weight {args.correction_weight:g}) trained on "
        f"{summary['counts']['train_base_rows']} base rows + {summary['counts']['train_corrections']} corrections and held out the "
        f"{summary['counts']['corrections_held_out']} newest."
        + (" The control is the same warm start on the base rows alone." if control else " (No control run.)"),
        "",
        "Accuracy and macro-F1 in points, with 95% paired-bootstrap intervals "
        f"({report['bootstrap']['resamples']} resamples):",
        "",
        "| set (rows) | metric | champion | challenger | challenger - champion |"
        + (" control | control - champion |" if control else ""),
        "|---|---|---:|---:|---:|" + ("---:|---:|" if control else ""),
    ]
    for name, result in sets.items():
        for metric in ("accuracy", "macro_f1"):
            e = result["metrics"][metric]
            row = f"| {name} ({result['n']}) | {metric} | {_pt(e, 'champion')} | {_pt(e, 'challenger')} | {_pt(e, 'delta')} |"
            if control:
                c = control["sets"][name]["metrics"][metric]
                row += f" {_pt(c, 'challenger')} | {_pt(c, 'delta')} |"
            lines.append(row)
    new = sets[live_name]["metrics"]["accuracy"]["delta"] * 100
    old = sets["base_test"]["metrics"]["accuracy"]["delta"] * 100
    lines += [
        "",
        f"- accuracy on the second live half: **{new:+.2f} points** (target: above 0): **{'met' if new > 0 else 'NOT met'}**.",
        f"- accuracy on the old test split: **{old:+.2f} points** (target: not below -0.5): **{'met' if old >= -0.5 else 'NOT met'}**.",
    ]
    if control:
        cnew = control["sets"][live_name]["metrics"]["accuracy"]["delta"] * 100
        cold = control["sets"]["base_test"]["metrics"]["accuracy"]["delta"] * 100
        lines.append(
            f"- the control (one more epoch, no corrections): {cnew:+.2f} points on the second live half, {cold:+.2f} on the old test split; "
            f"the corrections' own share of the gain on newer tickets: {new - cnew:+.2f} points."
        )
    failed = [c for c in report["verdict"]["checks"] if not c["passed"]]
    lines.append(
        f"- the shipped gate's verdict: **{'PASS' if report['verdict']['passed'] else 'FAIL'}**"
        + (
            " ("
            + "; ".join(
                f"{c['rule']}: {c['set']}{' / ' + c['category'] if c['category'] else ''} {c['detail']}" for c in failed
            )
            + ")"
            if failed
            else ""
        )
        + f"; {report['routing_changes']['count']} tickets would change queue."
    )
    lines += [
        "",
        "Minutes: " + ", ".join(f"{k} {v / 60:.1f}" for k, v in clock.items()) + ".",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
