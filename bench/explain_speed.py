"""What one explanation costs: integrated gradients (explain.py) on the embedded MiniLM-L6.

The model is the embedded all-MiniLM-L6-v2 encoder under an untrained 6-class head (speed does
not depend on the head's training); texts are complaints from the bundled sample, cut to exactly
128 and 256 tokens ([CLS] and [SEP] included). Each setting (tokens x n_steps) is timed as the
median of --repeats calls after a warm-up, with the threads PyTorch takes by default (every
core). |delta| is the integral's error: |sum of attributions - (logit - baseline logit)|.

    python bench/explain_speed.py               # writes its section of bench/RESULTS.md
    python bench/explain_speed.py --quick       # one repeat, nothing written
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data" / "cfpb_sample.csv.gz"
SECTION = "explain"
LENGTHS = (128, 256)
STEPS = (20, 50)


def build_model(dest: Path, max_length: int) -> Path:
    """The embedded MiniLM encoder under an untrained 6-class head: real cost, meaningless labels."""
    import torch

    from ticket_triage.modeling import ModelMeta, embedded_model_path, load_tokenizer, save_model_folder
    from ticket_triage.modeling import build_model as build
    from ticket_triage.taxonomy import load_taxonomy

    taxonomy = load_taxonomy("cfpb-6")
    torch.manual_seed(0)
    source = embedded_model_path()
    model = build(source, list(taxonomy.categories))
    meta = ModelMeta(labels=list(taxonomy.categories), max_length=max_length, truncation="head+tail")
    return save_model_folder(model, load_tokenizer(source), dest, meta, taxonomy)


def text_of_tokens(tokenizer, n_tokens: int) -> str:
    """Complaint words, as many as make exactly `n_tokens` ids with [CLS] and [SEP]."""
    import pandas as pd

    narratives = pd.read_csv(DATA, usecols=["Consumer complaint narrative"])["Consumer complaint narrative"].dropna()
    words = " ".join(narratives.head(50)).split()
    for end in range(1, len(words) + 1):
        text = " ".join(words[:end])
        count = len(tokenizer(text, add_special_tokens=True)["input_ids"])
        if count == n_tokens:
            return text
        if count > n_tokens:  # the last word is several pieces: drop pieces by hand
            break
    raise SystemExit(f"could not make a text of exactly {n_tokens} tokens")


def measure(explainer, text: str, n_steps: int, repeats: int) -> dict:
    explainer.explain(text, n_steps=2)  # warm-up: first-call allocations
    times, cpu, result = [], [], None
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = explainer.explain(text, n_steps=n_steps)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    diff = abs(result.logit - result.baseline_logit)
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "cpu_s": statistics.median(cpu),
        "delta": abs(result.delta),
        "relative": abs(result.delta) / diff if diff else float("nan"),
    }


def lscpu_flags() -> str:
    import shutil
    import subprocess

    if not shutil.which("lscpu"):
        return "lscpu not available"
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    fields = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in out.splitlines())}
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8", "fma")
    have = set(fields.get("Flags", "").split())
    return f"{fields.get('Model name', '?')}; vector flags: {', '.join(f for f in wanted if f in have) or 'none of ' + ', '.join(wanted)}"


def load_after() -> str:
    import os

    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one repeat, nothing written")
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats

    import torch

    from ticket_triage.explain import Explainer

    load_before = load_after()
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_model(Path(tmp) / "model", max(LENGTHS))
        explainer = Explainer.load(folder)
        rows = []
        for n_tokens in LENGTHS:
            explainer.meta.max_length = n_tokens
            text = text_of_tokens(explainer.tokenizer, n_tokens)
            for n_steps in STEPS:
                row = {"tokens": n_tokens, "n_steps": n_steps, **measure(explainer, text, n_steps, repeats)}
                rows.append(row)
                print(row, flush=True)

    lines = [
        "## Explanations (integrated gradients, `bench/explain_speed.py`)",
        "",
        f"One ticket explained with `ticket_triage.explain` on the embedded all-MiniLM-L6-v2 (untrained head), "
        f"PyTorch fp32 on the CPU with {torch.get_num_threads()} threads; median of {repeats} calls after a warm-up.",
        f"CPU: {lscpu_flags()}. Load average before and after: {load_before} / {load_after()} "
        "(seconds are wall time; CPU seconds add both threads, and hardly move when other work shares the cores).",
        "",
        "| tokens | n_steps | seconds (median) | seconds (min) | CPU seconds (median) | abs delta | delta / logit change |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['tokens']} | {r['n_steps']} | {r['median_s']:.2f} | {r['min_s']:.2f} | {r['cpu_s']:.2f} | {r['delta']:.1e} | {r['relative']:.1e} |"
        )
    body = "\n".join(lines)
    print(body)
    if not args.quick:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _results import write_section

        print(f"wrote {write_section(SECTION, body)}")


if __name__ == "__main__":
    main()
