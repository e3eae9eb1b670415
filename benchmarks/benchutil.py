"""Helpers shared by the benchmark modules (import as ``from benchmarks.benchutil import ...``)."""

from __future__ import annotations

QUICK_DIVISOR = 100
QUICK = True  # set by benchmarks/conftest.py from --benchmark-disable / RADLOGGER_BENCH_QUICK


def scaled(n: int, minimum: int = 100) -> int:
    """The workload size: ``n`` for real runs, ``n / QUICK_DIVISOR`` in quick mode."""
    return max(minimum, n // QUICK_DIVISOR) if QUICK else n
