"""Inference speed: the Hugging Face pipeline against every `Classifier` backend, and `auto`.

One run, one model, the same labelled texts for every contender:

* `pipeline("text-classification")` in fp32: what a user would write (truncation=True and the
  model's max_length; batches padded to their longest member, in input order, head truncation);
* `Classifier` with PyTorch fp32 (length-sorted batches, head+tail truncation as trained): the
  reference every other contender's agreement, macro-F1 and log-loss are compared with;
* `Classifier` with PyTorch in bf16 (`torch-bf16`: bf16 weights and activations);
* `Classifier` with ONNX Runtime, fp32 and int8 (exported here unless the folder has them);
* `Classifier` with backend="auto" on a folder holding both the PyTorch weights and the export:
  what `triage predict` and `triage serve` run on this machine.

Throughput is texts/s at batch 32 over all texts, and its ratio to the pipeline's in the same
run; latency is p50/p99 of single-text calls; macro-F1 and log-loss (of the calibrated
probabilities) are on the labels of the same texts. Targets (issue 14): auto >= 4x the
pipeline's texts/s with macro-F1 within 1 point of fp32; single-text p50 < 15 ms on 2 cores.
The CPU model and the flags that decide the fastest path (AMX, AVX-512 BF16/VNNI) are printed
with the table and written with it.

    python bench/infer_speed.py --model runs/demo/model [--data data/cfpb_sample.csv.gz] [--rows 2000]
    python bench/infer_speed.py --model runs/demo/model --quick     # a smoke run: 200 texts, nothing written
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO / "data" / "cfpb_sample.csv.gz"
SECTION = "infer"
# backend name -> contender label; "auto" runs on the model and its export side by side.
CLASSIFIER_BACKENDS = {
    "torch": "Classifier, torch fp32",
    "torch-bf16": "Classifier, torch bf16",
    "onnx-fp32": "Classifier, ONNX fp32",
    "onnx-int8": "Classifier, ONNX int8",
    "auto": "Classifier, auto",
}


def write_results(body: str) -> Path:
    """Our section of bench/RESULTS.md, between <!-- infer:start --> and <!-- infer:end -->."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _results import write_section  # shared by every benchmark

    return write_section(SECTION, body)


def default_data(model_dir: Path) -> Path:
    """The held-out test split of the run that made the model (demo layout: out/data, out/run/model), if any."""
    for parent in list(Path(model_dir).resolve().parents)[:3]:
        candidate = parent / "data" / "test.parquet"
        if candidate.is_file():
            return candidate
    return DEFAULT_DATA


def macro_f1(y_true, y_pred) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(y_true, y_pred, average="macro", zero_division=0))


def log_loss(y_true, probs) -> float:
    """Mean negative log-probability of the true label (clipped: one sure mistake is not infinite)."""
    p = np.clip(probs[np.arange(len(y_true)), y_true], 1e-12, 1.0)
    return float(-np.log(p).mean())


def percentile(values, q) -> float:
    return float(np.percentile(np.asarray(values) * 1000.0, q))


def time_contender(name, batch_fn, single_fn, texts, y, singles, batch_size, repeat=1):
    """Warm up, then time all texts at `batch_size` (the best of `repeat` passes) and `singles`
    one-text calls. `batch_fn` returns probabilities (texts x labels, in the model's label order).
    The best pass, not the first: oneDNN builds a kernel per new input shape and caches it for
    the process, so a first pass over many lengths also times that one-off work (and whichever
    contender ran before with the same kernels would be flattered); a long-running service and a
    large file see the warm figure."""
    batch_fn(texts[: batch_size * 2])
    for t in singles[:5]:
        single_fn(t)
    seconds = float("inf")
    for _ in range(max(1, repeat)):
        start = time.perf_counter()
        probs = batch_fn(texts)
        seconds = min(seconds, time.perf_counter() - start)
    latencies = []
    for t in singles:
        s = time.perf_counter()
        single_fn(t)
        latencies.append(time.perf_counter() - s)
    y_pred = probs.argmax(1)
    return {
        "name": name,
        "texts_per_s": len(texts) / seconds,
        "seconds": seconds,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "macro_f1": macro_f1(y, y_pred),
        "accuracy": float(np.mean(y_pred == y)),
        "log_loss": log_loss(y, probs),
        "pred": y_pred,
    }


def pipeline_contender(model_dir: Path, meta, batch_size: int):
    """The baseline: transformers' text-classification pipeline on the PyTorch weights, fp32.
    It returns every label's raw logit (top_k=None, no softmax; the same work as its default
    call, whose softmax is negligible) so the folder's temperature gives comparable log-loss."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    from ticket_triage.inference import softmax

    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    pipe = pipeline("text-classification", model=model, tokenizer=tokenizer, device=-1)
    kwargs = {"truncation": True, "max_length": meta.max_length, "top_k": None, "function_to_apply": "none"}
    index = {name: i for i, name in enumerate(meta.labels)}

    def to_probs(results):
        logits = np.zeros((len(results), len(index)))
        for row, scores in enumerate(results):
            for s in scores:
                logits[row, index[s["label"]]] = s["score"]
        return softmax(logits, meta.temperature)

    def batch(texts):
        return to_probs(pipe(list(texts), batch_size=batch_size, **kwargs))

    def single(text):
        return pipe([text], **kwargs)[0]

    return batch, single


def classifier_contender(clf, batch_size: int):
    def batch(texts):
        return clf.predict_proba(list(texts), batch_size=batch_size)

    def single(text):
        return clf.predict([text])[0].category

    return batch, single


def combined_folder(model_dir: Path, onnx_dir: Path) -> Path:
    """A folder holding the model's files and the ONNX export side by side (links, no copies):
    what `backend="auto"` sees in a folder exported in place."""
    folder = Path(tempfile.mkdtemp(prefix="infer-bench-auto-"))
    for src in list(model_dir.iterdir()) + [onnx_dir / "model.onnx", onnx_dir / "model.int8.onnx"]:
        if src.is_file() and not (folder / src.name).exists():
            (folder / src.name).symlink_to(src.resolve())
    return folder


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, type=Path, help="trained model folder (with PyTorch weights)")
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="labelled texts: text,label parquet/csv or a CFPB csv(.gz); default: "
        "the run's held-out data/test.parquet if found next to the model, else the bundled CFPB sample",
    )
    parser.add_argument("--rows", type=int, default=2000, help="texts to classify (default 2000)")
    parser.add_argument(
        "--skip-rows", type=int, default=0, help="leave out the first N rows of --data (e.g. rows used in training)"
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--single", type=int, default=200, help="single-text calls for latency")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads for every contender")
    parser.add_argument(
        "--onnx-dir",
        type=Path,
        default=None,
        help="exported ONNX folder to use if it has model.onnx and model.int8.onnx, "
        "else where to export them when the model folder has none (default: a temp folder)",
    )
    parser.add_argument("--no-pipeline", action="store_true", help="skip the transformers pipeline baseline")
    parser.add_argument("--no-write", action="store_true", help="do not write bench/RESULTS.md")
    parser.add_argument("--note", default="", help="a line added to the RESULTS.md section (e.g. what the model is)")
    parser.add_argument(
        "--backends",
        default=",".join(CLASSIFIER_BACKENDS),
        help=f"Classifier backends to time, comma-separated (default all: {','.join(CLASSIFIER_BACKENDS)}); torch is always run: it is the reference",
    )
    parser.add_argument(
        "--repeat", type=int, default=2, help="timed passes over all texts per contender; the best counts (default 2)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 200 texts, 20 single calls, one pass, RESULTS.md left alone"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.single, args.repeat, args.no_write = min(args.rows, 200), min(args.single, 20), 1, True
    wanted = ["torch"] + [b for b in args.backends.split(",") if b and b != "torch"]
    unknown = sorted(set(wanted) - set(CLASSIFIER_BACKENDS))
    if unknown:
        parser.error(f"unknown backend(s) {', '.join(unknown)}: use {', '.join(CLASSIFIER_BACKENDS)}")
    args.data = args.data or default_data(args.model)

    import torch
    from rich.console import Console
    from rich.table import Table

    from ticket_triage import Classifier
    from ticket_triage.export import export_onnx
    from ticket_triage.hardware import cpu_summary
    from ticket_triage.inference.files import read_labelled
    from ticket_triage.modeling import ModelMeta, load_folder_taxonomy, quiet_transformers

    console = Console(width=None if sys.stdout.isatty() else 200)  # a log file gets the whole table
    quiet_transformers()
    torch.set_num_threads(args.threads)
    meta = ModelMeta.load(args.model)
    texts, y, skipped = read_labelled(
        args.data, list(meta.labels), load_folder_taxonomy(args.model), max_rows=args.rows + args.skip_rows
    )
    texts, y = texts[args.skip_rows :], y[args.skip_rows :]
    texts, y = texts[: args.rows], y[: args.rows]
    rng = np.random.default_rng(0)
    singles = [texts[i] for i in rng.choice(len(texts), size=min(args.single, len(texts)), replace=False)]
    console.print(
        f"{len(texts)} texts from {args.data} ({skipped} rows without text/label skipped), max_length {meta.max_length}, "
        f"{args.threads} threads, batch {args.batch_size}, {len(singles)} single calls",
        highlight=False,
    )
    console.print(f"CPU: {cpu_summary()}", highlight=False)

    def has_onnx(folder):
        return folder is not None and (folder / "model.onnx").is_file() and (folder / "model.int8.onnx").is_file()

    onnx_dir = args.model if has_onnx(args.model) else args.onnx_dir
    needs_onnx = any(b.startswith("onnx") or b == "auto" for b in wanted)
    if needs_onnx and not has_onnx(
        onnx_dir
    ):  # an existing export (e.g. `triage export --check-data ...`) is used as it is
        onnx_dir = args.onnx_dir or Path(tempfile.mkdtemp(prefix="infer-bench-"))
        with console.status("exporting ONNX fp32 + int8 ..."):
            report = export_onnx(args.model, onnx_dir, quantize="int8")
        console.print(
            f"exported to {onnx_dir} (parity {report.parity_max_abs_diff:.1e}, optimised: {report.optimized})",
            highlight=False,
        )

    results = []
    contenders = []
    if not args.no_pipeline and meta.pooling == "cls":
        contenders.append(("HF pipeline, torch fp32", lambda: pipeline_contender(args.model, meta, args.batch_size)))
    auto_reason = ""

    def load(backend):
        nonlocal auto_reason
        folder = (
            combined_folder(args.model, onnx_dir)
            if backend == "auto"
            else onnx_dir
            if backend.startswith("onnx")
            else args.model
        )
        # The transformer alone: a folder's TF-IDF mix would hide the backends' differences.
        clf = Classifier.load(folder, backend=backend, threads=args.threads, ensemble=False)
        if backend == "auto":
            auto_reason = f"{clf.backend}-{clf.precision}, {clf.backend_impl.auto_reason}"
        return classifier_contender(clf, args.batch_size)

    contenders += [(CLASSIFIER_BACKENDS[b], lambda b=b: load(b)) for b in CLASSIFIER_BACKENDS if b in wanted]
    for name, make in contenders:
        with console.status(f"{name} ..."):
            batch_fn, single_fn = make()
            results.append(time_contender(name, batch_fn, single_fn, texts, y, singles, args.batch_size, args.repeat))
        r = results[-1]
        console.print(
            f"  {name}: {r['texts_per_s']:.1f} texts/s, p50 {r['p50_ms']:.1f} ms, macro-F1 {r['macro_f1']:.4f}",
            highlight=False,
        )

    base = results[0]
    ref = next(r for r in results if r["name"] == CLASSIFIER_BACKENDS["torch"])
    cpu = cpu_summary()
    columns = (
        "contender",
        "texts/s",
        "vs pipeline" if base["name"].startswith("HF") else "vs torch fp32",
        "p50 ms",
        "p99 ms",
        "macro-F1",
        "Δ F1 vs fp32 (points)",
        "agree with fp32",
        "log-loss",
        "Δ log-loss vs fp32",
        "accuracy",
    )
    table = Table(title=f"Inference on {len(texts)} texts, {args.threads} threads; CPU {cpu}")
    for col in columns:
        table.add_column(col, justify="left" if col == "contender" else "right")
    rows_md = []
    for r in results:
        name = r["name"] + (f" ({auto_reason.split(',')[0]})" if r["name"] == CLASSIFIER_BACKENDS["auto"] else "")
        cells = [
            name,
            f"{r['texts_per_s']:.1f}",
            f"{r['texts_per_s'] / base['texts_per_s']:.2f}x",
            f"{r['p50_ms']:.1f}",
            f"{r['p99_ms']:.1f}",
            f"{r['macro_f1']:.4f}",
            f"{100 * (r['macro_f1'] - ref['macro_f1']):+.2f}",
            f"{np.mean(r['pred'] == ref['pred']):.4f}",
            f"{r['log_loss']:.4f}",
            f"{r['log_loss'] - ref['log_loss']:+.4f}",
            f"{r['accuracy']:.4f}",
        ]
        table.add_row(*cells)
        rows_md.append("| " + " | ".join(cells) + " |")
    console.print(table)

    verdict = verdict_lines(results, base, ref, auto_reason)
    for line in verdict:
        console.print(line.replace("**", ""), highlight=False)
    if not args.no_write:
        body = "\n".join(
            [
                "## Inference speed (`bench/infer_speed.py`)",
                "",
                f"Model `{args.model}` ({meta.pooling} pooling, max_length {meta.max_length}, {meta.truncation} truncation); "
                f"{len(texts)} labelled texts from `{args.data.name}`"
                + (f" (after skipping {args.skip_rows})" if args.skip_rows else "")
                + f"; batch {args.batch_size}; {args.threads} threads; texts/s: the best of {args.repeat} pass(es); latency over {len(singles)} single-text calls. CPU: {cpu}.",
                *(["", f"Note: {args.note}"] if args.note else []),
                "",
                "| " + " | ".join(columns) + " |",
                "|---|" + "---:|" * (len(columns) - 1),
                *rows_md,
                "",
                *verdict,
                "",
                "Δ F1, agreement (same argmax) and Δ log-loss compare each contender with `Classifier, torch fp32`: the same model, "
                "truncation and temperature, so they measure precision alone. The pipeline truncates at the head (its only option); "
                "`Classifier` cuts head+tail as the model was trained, so the pipeline's differences also hold truncation. "
                "Every `Classifier` scores the transformer alone (no TF-IDF mix).",
            ]
        )
        path = write_results(body)
        console.print(f"wrote {path}", highlight=False)
    return 0


def verdict_lines(results, base, ref, auto_reason: str) -> list[str]:
    """The issue's targets, for auto when it ran (else the fastest contender)."""
    by_name = {r["name"]: r for r in results}
    judged = by_name.get(CLASSIFIER_BACKENDS["auto"]) or max(results, key=lambda r: r["texts_per_s"])
    label = f"auto ({auto_reason})" if judged["name"] == CLASSIFIER_BACKENDS["auto"] else judged["name"]
    speedup = judged["texts_per_s"] / base["texts_per_s"]
    f1_loss = 100 * (ref["macro_f1"] - judged["macro_f1"])
    return [
        f"- {label} vs {base['name']}: **{speedup:.1f}x** texts/s (target >= 4x: {'met' if speedup >= 4 else 'NOT met'}).",
        f"- {label} macro-F1 vs the same model in fp32 (Classifier, torch): {-f1_loss:+.2f} points (target >= -1: {'met' if f1_loss <= 1 else 'NOT met'}); "
        f"log-loss {judged['log_loss'] - ref['log_loss']:+.4f}; vs {base['name']}: {100 * (judged['macro_f1'] - base['macro_f1']):+.2f} points.",
        f"- Single-text p50 of {label}: **{judged['p50_ms']:.1f} ms** (target < 15 ms: {'met' if judged['p50_ms'] < 15 else 'NOT met'}).",
    ]


if __name__ == "__main__":
    sys.exit(main())
