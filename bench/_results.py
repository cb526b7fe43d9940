"""Shared by the benchmarks: write one section of bench/RESULTS.md, leaving the others alone."""

from __future__ import annotations

import platform
import re
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = "# Benchmark results\n\nEach section is rewritten by the script named in it; numbers are from one run on the machine stated.\n"


def machine() -> str:
    import os
    import sys

    gpu = ""
    torch = sys.modules.get("torch")  # only where the benchmark already loaded it
    if torch is not None and torch.cuda.is_available():
        gpu = f", GPU {torch.cuda.get_device_name(0)}"
    return f"{platform.processor() or platform.machine()}{cpu_description()}, {os.cpu_count()} cores{gpu}, Python {platform.python_version()}"


def cpu_description() -> str:
    """' (model; the flags that pick the fastest inference path)': which kernels torch and ONNX
    Runtime use depends on AMX, AVX-512 bf16/VNNI and AVX2 (read by ticket_triage.hardware)."""
    from ticket_triage.hardware import cpu_info, cpu_summary

    return f" ({cpu_summary()})" if cpu_info().model or cpu_info().flags else ""


def write_section(name: str, body: str) -> Path:
    """Replace the text between `<!-- name:start -->` and `<!-- name:end -->` (append if absent)."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    block = f"<!-- {name}:start -->\n{body.rstrip()}\n\n_Run {stamp} on {machine()}._\n<!-- {name}:end -->"
    text = RESULTS.read_text() if RESULTS.exists() else HEADER
    pattern = re.compile(rf"<!-- {re.escape(name)}:start -->.*?<!-- {re.escape(name)}:end -->", re.S)
    text = pattern.sub(lambda _m: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(text)
    return RESULTS
