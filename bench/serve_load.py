"""Load test of `triage serve`: POST /v1/tickets from 32 concurrent clients, with micro-batching
on and off (max batch size 1 = the baseline). Bounded in requests and time; 127.0.0.1 only.

    .venv/bin/python bench/serve_load.py                      # runs/demo/model, else a tiny random BERT
    .venv/bin/python bench/serve_load.py --model minilm       # untrained head on the embedded MiniLM-L6
    .venv/bin/python bench/serve_load.py --model DIR --requests 2000 --duration 60

For each setting it starts the service in a subprocess (fresh SQLite file, WAL mode, commit
per ticket), warms it up, then measures throughput, p50/p99 latency, errors, and checks that
every acknowledged ticket (201) is stored. Writes its section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import gzip
import multiprocessing
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
LABELS = ["Credit Reporting", "Debt Collection", "Mortgage", "Card Services", "Loans", "Banking Services"]
SECTION = "serve"


# -- the model ----------------------------------------------------------------------------------
def pick_model(arg: str | None, workdir: Path) -> tuple[Path, str]:
    """(model folder, how it was chosen)."""
    if arg and arg not in {"tiny", "minilm"}:
        return Path(arg), f"`{arg}`"
    demo = ROOT / "runs" / "demo" / "model"
    if arg is None and demo.is_dir():
        return demo, "`runs/demo/model` (trained by `triage demo`)"
    from ticket_triage.modeling import (
        ModelMeta,
        build_model,
        embedded_model_path,
        load_tokenizer,
        save_model_folder,
        tiny_bert,
    )

    if arg == "minilm":
        source, note = (
            embedded_model_path(),
            "untrained 6-class head on the embedded all-MiniLM-L6-v2 (same compute as a trained one)",
        )
        max_length = 256
    else:
        words = "credit report debt collector mortgage loan card bank account payment fee the my i to and".split()
        source = str(tiny_bert(workdir / "tiny-encoder", words))
        note = (
            "a tiny random BERT (2 layers, 32 wide"
            + ("" if arg == "tiny" else "; made because runs/demo/model does not exist")
            + "): model compute is negligible, so this measures the service's own overhead"
        )
        max_length = 128
    folder = workdir / "model"
    model = build_model(source, LABELS)
    save_model_folder(model, load_tokenizer(source), folder, ModelMeta(labels=LABELS, max_length=max_length))
    return folder, note


def load_texts(n: int = 400) -> list[str]:
    path = ROOT / "data" / "cfpb_sample.csv.gz"
    texts: list[str] = []
    if path.is_file():
        with gzip.open(path, "rt", newline="") as fh:
            for row in csv.DictReader(fh):
                text = (row.get("Consumer complaint narrative") or "").strip()
                if text:
                    texts.append(text[:4000])
                if len(texts) >= n:
                    break
    return texts or [f"My credit card was charged a fee twice, case {i}." for i in range(n)]


# -- the server ---------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, model: Path, db: Path, max_batch_size: int, max_wait_ms: float, log: Path):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        cmd = [
            sys.executable,
            "-m",
            "ticket_triage",
            "serve",
            "--model",
            str(model),
            "--db",
            f"sqlite:///{db}",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--no-auth",
            "--max-batch-size",
            str(max_batch_size),
            "--max-wait-ms",
            str(max_wait_ms),
            "--log-level",
            "warning",
        ]
        self.log = open(log, "w")
        self.proc = subprocess.Popen(
            cmd, stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"}
        )

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.flush()
                tail = "".join(Path(self.log.name).read_text(errors="replace").splitlines(keepends=True)[-25:])
                raise SystemExit(
                    f"triage serve exited with {self.proc.returncode}; the end of its log ({self.log.name}):\n{tail}"
                )
            try:
                if httpx.get(self.base + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise SystemExit("triage serve did not become ready in time")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


# -- the load -------------------------------------------------------------------------------------
# The clients can run in several processes: one Python process with httpx tops out near a
# thousand requests/s, and a load test must measure the server, not its own client.
def send_part(
    base: str, texts: list[str], clients: int, requests: int, duration: float, run: str, part: int, parts: int
) -> dict:
    """One process's share: `clients` concurrent clients sending request numbers part, part+parts, ..."""
    return asyncio.run(_send(base, texts, clients, requests, duration, run, part, parts))


async def _send(
    base: str, texts: list[str], clients: int, requests: int, duration: float, run: str, part: int, parts: int
) -> dict:
    latencies: list[float] = []
    acked: list[int] = []
    errors: dict[str, int] = {}
    numbers = iter(range(part, requests, parts))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as http:
        started = time.time()  # wall clock: comparable across processes
        stop_at = time.perf_counter() + duration

        async def worker() -> None:
            for i in numbers:
                if time.perf_counter() >= stop_at:
                    return
                body = {
                    "subject": f"ticket {i}",
                    "body": texts[i % len(texts)],
                    "channel": "web",
                    "customer_ref": f"C-{i}",
                }
                t0 = time.perf_counter()
                try:
                    r = await http.post("/v1/tickets", json=body, headers={"Idempotency-Key": f"{run}-{i}"})
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    continue
                latencies.append(time.perf_counter() - t0)
                if r.status_code == 201:
                    acked.append(r.json()["id"])
                else:
                    errors[str(r.status_code)] = errors.get(str(r.status_code), 0) + 1

        await asyncio.gather(*(worker() for _ in range(clients)))
        return {
            "latencies": latencies,
            "acked": acked,
            "errors": errors,
            "sent": len(latencies) + sum(errors.values()),
            "started": started,
            "ended": time.time(),
        }


def load(base: str, texts: list[str], clients: int, requests: int, duration: float, run: str, procs: int = 1) -> dict:
    """`clients` concurrent clients over `procs` processes, then a check that every acknowledged
    ticket is stored."""
    procs = max(1, min(procs, clients))
    shares = [clients // procs + (k < clients % procs) for k in range(procs)]
    if procs == 1:
        parts = [send_part(base, texts, clients, requests, duration, run, 0, 1)]
    else:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(procs, mp_context=ctx) as pool:
            futures = [
                pool.submit(send_part, base, texts, n, requests, duration, run, k, procs) for k, n in enumerate(shares)
            ]
            parts = [f.result() for f in futures]
    latencies = [x for p in parts for x in p["latencies"]]
    acked = [x for p in parts for x in p["acked"]]
    errors: dict[str, int] = {}
    for p in parts:
        for k, v in p["errors"].items():
            errors[k] = errors.get(k, 0) + v
    elapsed = max(p["ended"] for p in parts) - min(p["started"] for p in parts)
    with httpx.Client(base_url=base, timeout=60) as http:
        stored = http.get("/v1/tickets", params={"limit": 1}).json()["count"]
        ids: set[int] = set()  # every acknowledged id must be in the database (all pages of the listing)
        while True:
            page = http.get("/v1/tickets", params={"limit": 500, "offset": len(ids)}).json()["items"]
            if not page:
                break
            ids.update(t["id"] for t in page)
        metrics = http.get("/metrics").text
    missing = len(set(acked) - ids)
    q = statistics.quantiles(latencies, n=100) if len(latencies) >= 2 else [float("nan")] * 99
    return {
        "requests": sum(p["sent"] for p in parts),
        "acked": len(acked),
        "stored": stored,
        "missing": missing,
        "errors": errors,
        "seconds": elapsed,
        "throughput": len(acked) / elapsed if elapsed else 0.0,
        "p50": q[49] * 1000,
        "p99": q[98] * 1000,
        "mean_batch": mean_batch(metrics),
    }


def mean_batch(metrics: str) -> float:
    total = re.search(r"^triage_batch_size_sum ([0-9.e+]+)$", metrics, re.M)
    count = re.search(r"^triage_batch_size_count ([0-9.e+]+)$", metrics, re.M)
    return float(total.group(1)) / float(count.group(1)) if total and count and float(count.group(1)) else float("nan")


def run_setting(name: str, model: Path, workdir: Path, args, texts: list[str], max_batch_size: int) -> dict:
    db = workdir / f"{name}.db"
    server = Server(model, db, max_batch_size, args.max_wait_ms, workdir / f"{name}.log")
    try:
        server.wait_ready()
        load(server.base, texts, min(8, args.clients), args.warmup, 60, f"warm-{name}")  # warm-up (also stored)
        warm = httpx.get(server.base + "/v1/tickets", params={"limit": 1}).json()["count"]
        result = load(server.base, texts, args.clients, args.requests, args.duration, name, args.client_procs)
        result["stored"] -= warm
    finally:
        server.stop()
    result["name"], result["max_batch_size"] = name, max_batch_size
    return result


def model_only(model: Path, texts: list[str], max_batch_size: int, n: int = 192) -> dict:
    """The model alone, in this process, on the texts the service gets: texts/s at batch 1 and at
    the max batch size. No HTTP, no database: the most micro-batching could ever give the service."""
    from ticket_triage import Classifier

    clf = Classifier.load(model)  # the same "auto" backend `triage serve` picks
    sample = [f"ticket {i}\n\n{texts[i % len(texts)]}" for i in range(n)]
    clf.predict(sample[:8], batch_size=8)  # warm-up
    started = time.perf_counter()
    for text in sample:
        clf.predict([text], batch_size=1)
    single = n / (time.perf_counter() - started)
    started = time.perf_counter()
    for i in range(0, n, max_batch_size):  # the batcher hands over one full batch at a time
        clf.predict(sample[i : i + max_batch_size], batch_size=max_batch_size)
    batched = n / (time.perf_counter() - started)
    return {"backend": f"{clf.backend} {clf.precision}", "single": single, "batched": batched}


# -- report ---------------------------------------------------------------------------------------
def table(results: list[dict]) -> str:
    lines = [
        "| setting | max batch | requests | acknowledged | stored | errors | throughput (tickets/s) | p50 ms | p99 ms | mean batch |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        errs = sum(r["errors"].values())
        lines.append(
            f"| {r['name']} | {r['max_batch_size']} | {r['requests']} | {r['acked']} | {r['stored']} | {errs} | "
            f"{r['throughput']:.1f} | {r['p50']:.0f} | {r['p99']:.0f} | {r['mean_batch']:.1f} |"
        )
    return "\n".join(lines)


def write_section(body: str, section: str = SECTION) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _results import write_section as write  # shared by every benchmark

    write(section, body)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--model",
        action="append",
        help="model folder; 'minilm' (untrained head on the embedded MiniLM) or 'tiny'; default runs/demo/model, else tiny; repeat to compare models",
    )
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--requests", type=int, default=1500, help="most requests per setting")
    p.add_argument("--duration", type=float, default=45.0, help="most seconds of load per setting")
    p.add_argument("--warmup", type=int, default=32)
    p.add_argument(
        "--client-procs",
        type=int,
        default=max(1, min(4, (os.cpu_count() or 2) // 4)),
        help="processes the clients are spread over (default: a quarter of the cores, at most 4)",
    )
    p.add_argument("--max-batch-size", type=int, default=32)
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--no-write", action="store_true", help="do not update bench/RESULTS.md")
    p.add_argument(
        "--section",
        default=SECTION,
        help="section of bench/RESULTS.md to write (e.g. serve-gpu for a GPU machine's run)",
    )
    args = p.parse_args(argv)

    sections, ok = [], True
    for model_arg in args.model or [None]:
        with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
            workdir = Path(tmp)
            model, note = pick_model(model_arg, workdir)
            print(f"model: {note}")
            texts = load_texts()
            alone = model_only(model, texts, args.max_batch_size)
            results = []
            for name, size in [("batching on", args.max_batch_size), ("baseline (batching off)", 1)]:
                print(f"running {name} (max batch size {size}) ...", flush=True)
                results.append(run_setting(name.split()[0], model, workdir, args, texts, size))
                results[-1]["name"] = name
        out = table(results)
        on, off = results
        speedup = on["throughput"] / off["throughput"] if off["throughput"] else float("nan")
        errors = sum(sum(r["errors"].values()) for r in results)
        all_stored = all(r["stored"] == r["acked"] and r["missing"] == 0 for r in results)
        ok = ok and errors == 0 and all_stored
        verdict = (
            f"Speed-up with micro-batching: **{speedup:.2f}x** (target 3x). Errors: {errors}; "
            f"every acknowledged ticket stored: {'yes' if all_stored else 'NO'}."
        )
        ceiling = alone["batched"] / off["throughput"] if off["throughput"] else float("nan")
        bound = (
            f"Model alone ({alone['backend']}, in this process, same texts, no HTTP or database): "
            f"{alone['single']:.1f} texts/s at batch 1, {alone['batched']:.1f} texts/s at batch {args.max_batch_size} "
            f"({alone['batched'] / alone['single']:.2f}x). Even with zero HTTP and database cost, micro-batching could "
            f"serve at most {alone['batched']:.0f} tickets/s here: **{ceiling:.1f}x** the baseline is the ceiling on this machine."
        )
        print(out)
        print(verdict)
        print(bound)
        sections.append(f"Model: {note}.\n\n{out}\n\n{verdict}\n\n{bound}")
    if args.no_write:
        return 0 if ok else 1
    body = (
        "## Serving: `bench/serve_load.py`\n\n"
        f"`POST /v1/tickets` from {args.clients} concurrent clients (httpx.AsyncClient, in {args.client_procs} process(es)), at most {args.requests} requests or "
        f"{args.duration:.0f} s per setting, CFPB narratives (up to 4000 chars), `triage serve --no-auth` in a subprocess on "
        f"127.0.0.1 with a fresh SQLite file (WAL; new tickets group-committed, a transaction per batch of queued writes), max wait {args.max_wait_ms:g} ms. "
        "Client and server share the machine's cores.\n\n" + "\n\n".join(sections)
    )
    write_section(body, args.section)
    print(f"wrote {RESULTS}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
