"""CPU flags for tests: `backend="auto"` and bf16 training pick their path from the CPU, so tests
that expect one path name the CPU they assume instead of depending on the machine they run on.

    from _hardware_support import plain_cpu  # noqa: F401  (autouse: the whole module sees it)
"""

from __future__ import annotations

from contextlib import contextmanager

import pytest

from ticket_triage import hardware
from ticket_triage.hardware import CpuInfo

# AVX-512 with VNNI but no bf16 of any kind (Intel Cascade Lake): auto takes ONNX if exported,
# else PyTorch fp32, the paths the older tests were written for.
PLAIN = CpuInfo("Test CPU (VNNI, no bf16)", frozenset({"avx2", "avx512f", "avx512_vnni"}))
# AVX-512 BF16 without AMX (AMD Zen 4).
BF16_NO_AMX = CpuInfo("Test CPU (AVX-512 BF16, no AMX)", frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16"}))
# Intel Sapphire Rapids and later.
AMX = CpuInfo(
    "Test CPU (AMX)", frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"})
)


@contextmanager
def assume_cpu(info: CpuInfo):
    """Run with `info` as this machine's CPU; the previous one (read or assumed) comes back after."""
    saved = hardware.set_cpu_info(info)
    try:
        yield info
    finally:
        hardware.set_cpu_info(saved)


@pytest.fixture(scope="module", autouse=True)
def plain_cpu():
    """The module runs as on a CPU without bf16 (imported into a test module, it applies to all
    of it, module-scoped fixtures included)."""
    with assume_cpu(PLAIN) as info:
        yield info
