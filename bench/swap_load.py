"""Live model swaps under load: `triage serve --registry` takes POST /v1/tickets from 16 concurrent
clients while the active version is switched twice: by `triage models promote v2` (the CLI; the
service notices registry.json change) and by `POST /v1/admin/model/rollback` (the API).

    .venv/bin/python bench/swap_load.py                       # runs/demo/model, else a tiny random BERT
    .venv/bin/python bench/swap_load.py --model DIR --duration 60 --shadow

Counts errors (anything but 201), lost tickets (acknowledged but not in the database), the
versions tickets recorded, and the latency p50/p99 away from and right after the switches.
With --shadow, a third version runs in shadow all along. Writes its section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from serve_load import free_port, load_texts, pick_model

SECTION = "swap"
AFTER_SWITCH_S = 2.0  # latencies within this long after a switch count as "during the switch"


def triage(*args: str) -> str:
    r = subprocess.run([sys.executable, "-m", "ticket_triage", *args], capture_output=True, text=True, check=False)
    if r.returncode:
        raise SystemExit(f"triage {' '.join(args)} failed: {r.stderr.strip()}")
    return r.stdout.strip()


def make_registry(model: Path, root: Path, shadow: bool) -> None:
    """v1 = the model, v2 (and v3) = copies with another temperature, so tickets tell them apart."""
    for version, temperature in (("v1", None), ("v2", 0.5), ("v3", 2.0))[: 3 if shadow else 2]:
        triage("models", "register", str(model), "--registry", str(root), "--note", f"bench {version}")
        if temperature is not None:
            meta_path = root / "versions" / version / "model" / "triage.json"
            meta = json.loads(meta_path.read_text())
            meta["temperature"] = temperature
            meta_path.write_text(json.dumps(meta))
    triage("models", "promote", "v1", "--registry", str(root))
    if shadow:
        triage("models", "shadow", "v3", "--registry", str(root))


async def client_loop(http: httpx.AsyncClient, texts: list[str], start: int, step: int, stop_at: float, out: list):
    i = start
    while time.monotonic() < stop_at:
        sent = time.monotonic()
        try:
            r = await http.post("/v1/tickets", json={"body": texts[i % len(texts)]})
            body = r.json() if r.status_code == 201 else {}
            out.append((sent, time.monotonic() - sent, r.status_code, body.get("id"), body.get("model_version")))
        except httpx.HTTPError as exc:
            out.append((sent, time.monotonic() - sent, type(exc).__name__, None, None))
        i += step


async def run_load(base: str, registry: Path, texts: list[str], clients: int, duration: float) -> tuple[list, list]:
    out: list = []
    switches: list[tuple[str, float]] = []
    start = time.monotonic()
    stop_at = start + duration
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        tasks = [asyncio.create_task(client_loop(http, texts, c, clients, stop_at, out)) for c in range(clients)]
        await asyncio.sleep(duration / 3)
        await asyncio.to_thread(triage, "models", "promote", "v2", "--registry", str(registry))
        switches.append(("CLI promote v2", time.monotonic()))
        await asyncio.sleep(duration / 3)
        r = await http.post("/v1/admin/model/rollback")
        assert r.status_code == 200, r.text
        switches.append(("API rollback to v1", time.monotonic()))
        await asyncio.gather(*tasks)
    return out, switches


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def summarise(out: list, switches: list, db: Path, base: str) -> dict:
    ok = [row for row in out if row[2] == 201]
    with sqlite3.connect(db) as conn:
        stored = dict(conn.execute("select id, model_version from tickets").fetchall())
    near = [row[1] for row in ok if any(0 <= row[0] - t <= AFTER_SWITCH_S for _, t in switches)]
    away = [row[1] for row in ok if not any(0 <= row[0] - t <= AFTER_SWITCH_S for _, t in switches)]
    versions: dict[str, int] = {}
    for row in ok:
        versions[row[4]] = versions.get(row[4], 0) + 1
    metrics = httpx.get(base + "/metrics", timeout=10).text
    shadow = [line for line in metrics.splitlines() if line.startswith("triage_shadow_predictions_total")]
    return {
        "requests": len(out),
        "errors": len(out) - len(ok),
        "lost": sum(1 for row in ok if row[3] not in stored),
        "mislabelled": sum(1 for row in ok if row[3] in stored and stored[row[3]] != row[4]),
        "versions": versions,
        "p50_away_ms": 1000 * percentile(away, 50),
        "p99_away_ms": 1000 * percentile(away, 99),
        "p50_switch_ms": 1000 * percentile(near, 50),
        "p99_switch_ms": 1000 * percentile(near, 99),
        "shadow": shadow,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model folder, or tiny / minilm (default: runs/demo/model, else tiny)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load (switches at 1/3 and 2/3)")
    parser.add_argument("--shadow", action="store_true", help="run a third version in shadow meanwhile")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="swap-load-") as tmp:
        work = Path(tmp)
        model, note = pick_model(args.model, work)
        registry, db, port = work / "registry", work / "triage.db", free_port()
        make_registry(model, registry, args.shadow)
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "TRIAGE_REGISTRY_POLL_S": "0.5"}
        cmd = ["serve", "--registry", str(registry), "--db", f"sqlite:///{db}", "--port", str(port), "--no-auth"]
        log = open(work / "serve.log", "w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "ticket_triage", *cmd, "--log-level", "warning"], stdout=log, stderr=log, env=env
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"triage serve did not start: {(work / 'serve.log').read_text()[-2000:]}")
                time.sleep(0.2)
            out, switches = asyncio.run(run_load(base, registry, load_texts(), args.clients, args.duration))
            result = summarise(out, switches, db, base)
        finally:
            proc.terminate()
            proc.wait(30)
            log.close()

    body = (
        f"## Live model swaps under load (`bench/swap_load.py`)\n\n"
        f"Model: {note}. {args.clients} clients for {args.duration:.0f} s, `triage models promote v2` at 1/3, "
        f"`POST /v1/admin/model/rollback` at 2/3{'; v3 in shadow throughout' if args.shadow else ''}.\n\n"
        "| requests | errors | lost | mislabelled | tickets per version | p50 / p99 away (ms) | p50 / p99 within 2 s of a switch (ms) |\n"
        "|---:|---:|---:|---:|---|---:|---:|\n"
        f"| {result['requests']} | {result['errors']} | {result['lost']} | {result['mislabelled']} | "
        f"{', '.join(f'{k}: {v}' for k, v in sorted(result['versions'].items(), key=lambda kv: str(kv[0])))} | "
        f"{result['p50_away_ms']:.0f} / {result['p99_away_ms']:.0f} | "
        f"{result['p50_switch_ms']:.0f} / {result['p99_switch_ms']:.0f} |\n"
    )
    if result["shadow"]:
        body += "\nShadow: " + "; ".join(f"`{line}`" for line in result["shadow"]) + "\n"
    print(body)
    if not args.no_write:
        sys.path.insert(0, str(Path(__file__).parent))
        from _results import write_section

        write_section(SECTION, body)
    return 0 if result["errors"] == 0 and result["lost"] == 0 and result["mislabelled"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
