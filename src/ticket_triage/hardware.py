"""What the CPU can do fast: the instruction-set flags that decide training precision and the
inference backend, read once from /proc/cpuinfo.

Which path is fastest depends on the chip, not on the software: with AMX-BF16 (Intel Xeon 4th
gen and later) torch's bf16 matmuls beat ONNX Runtime's int8 ones; without it the int8 graph wins;
AVX-512 BF16 without AMX (AMD EPYC) still makes bf16 faster than fp32 in torch. Nothing is read at
import; tests name the CPU they assume with `set_cpu_info`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
# The flags that pick a kernel path in torch / ONNX Runtime, in the order a summary names them
# (after every amx_* flag the CPU has).
RELEVANT_FLAGS = ("avx512_bf16", "avx512_vnni", "avx_vnni", "avx512f", "avx2")


@dataclass(frozen=True)
class CpuInfo:
    model: str
    flags: frozenset[str]


_cached: CpuInfo | None = None


def parse_cpuinfo(text: str) -> CpuInfo:
    """The first processor's model name and flags from /proc/cpuinfo text (all cores match)."""
    model, flags = "", frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
    return CpuInfo(model, flags)


def cpu_info() -> CpuInfo:
    """This machine's CPU, read once per process; empty where there is no /proc/cpuinfo (macOS,
    Windows), so every check there says "no" and the portable paths are taken."""
    global _cached
    if _cached is None:
        try:
            _cached = parse_cpuinfo(CPUINFO.read_text())
        except OSError:
            _cached = CpuInfo("", frozenset())
    return _cached


def set_cpu_info(info: CpuInfo | None) -> CpuInfo | None:
    """Replace the cached CPU (tests, or a benchmark asking "what would auto do on X") and return
    the one it replaces, to put back later; None forgets it, so /proc/cpuinfo is read again."""
    global _cached
    previous, _cached = _cached, info
    return previous


def cpu_flags() -> frozenset[str]:
    return cpu_info().flags


def has_native_bf16() -> bool:
    """bf16 matmuls run in hardware (AVX-512 BF16 or AMX), so bf16 autocast beats fp32."""
    flags = cpu_flags()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def has_amx() -> bool:
    """AMX bf16 tiles: torch's bf16 inference outruns ONNX Runtime int8 (measured, README)."""
    return "amx_bf16" in cpu_flags()


def has_vnni() -> bool:
    """int8 dot products in hardware (AVX-512 VNNI or AVX-VNNI): what makes the int8 graph fast."""
    flags = cpu_flags()
    return "avx512_vnni" in flags or "avx_vnni" in flags or "amx_int8" in flags


def cpu_summary() -> str:
    """'model; flag flag ...' for benchmark tables and logs ('unknown CPU' where unreadable)."""
    info = cpu_info()
    wanted = sorted(f for f in info.flags if f.startswith("amx_")) + [f for f in RELEVANT_FLAGS if f in info.flags]
    return f"{info.model or 'unknown CPU'}; {' '.join(wanted) or 'no AVX2'}"
