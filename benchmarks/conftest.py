"""Benchmark suite settings: full workloads with --benchmark-enable, tiny ones in quick mode.

The normal test run (``python -m pytest``) collects this folder with benchmarks disabled
(``--benchmark-disable`` in setup.cfg): every benchmark then runs once on a workload shrunk by
``QUICK_DIVISOR`` so CI proves the benchmarks still run and still process their workload,
without measuring speed on a loaded CI machine.
"""

from __future__ import annotations

import os
import platform
import sys

import pytest

from benchmarks import benchutil
from radlogger.pipeline import tune_gc


def pytest_configure(config: pytest.Config) -> None:
    tune_gc()  # as the daemon does at start (radlogger.pipeline.tune_gc)
    config.addinivalue_line("markers", "long: a 60 s acceptance run (issue 18); skipped in the "
                            "quick mode, select with -m long --benchmark-enable")
    disabled = bool(config.getoption("benchmark_disable", False)) and \
        not config.getoption("benchmark_enable", False)
    benchutil.QUICK = disabled or os.environ.get("RADLOGGER_BENCH_QUICK") == "1"


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    machine_info["cpu_count"] = os.cpu_count()
    machine_info["python_impl"] = f"{platform.python_implementation()} {sys.version.split()[0]}"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    machine_info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
