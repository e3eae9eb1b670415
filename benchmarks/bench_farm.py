"""The farm through the real iCEFARM client: a control and two workers as processes.

32 simulated boards (16 per worker) evaluate bitstreams sent by ``PulseCountClient``
(``icefarm`` 0.1.16 in its own virtualenv, tests/farm_support.py) with iCEFARM's defaults
(batches of 5, two batches ahead).  Each bitstream goes to every reserved board, as
``evaluateBitstreams`` does.  Two count windows: the real 1 s (a board can do at most one
evaluation per window: the ideal is ``boards / window`` evaluations/s) and a shortened one,
where upload, Socket.IO and the client dominate.  Reported in ``extra_info``:
evaluations/s, upload MB/s (104,090 bytes per evaluation) and the fraction of the ideal.

    python -m pytest benchmarks/bench_farm.py --benchmark-enable --benchmark-json=out.json
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from farm_support import Farmd, driver, icefarm_python  # noqa: E402

from benchmarks import benchutil  # noqa: E402
from conftest import wait_for  # noqa: E402
from radlogger.devices.pico.protocol import BITSTREAM_SIZE  # noqa: E402


@pytest.mark.parametrize("window", [1.0, 0.05])
def test_farm_icefarm_client(benchmark: Any, window: float) -> None:
    per_worker, n_bits = (16, 20 if window < 0.5 else 8) if not benchutil.QUICK else (2, 2)
    boards = 2 * per_worker
    python = icefarm_python()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        control = Farmd(root, "control", "control")
        workers: list[Farmd] = []
        try:
            control.wait_up()
            workers = [Farmd(root, f"w{i}", "worker", boards=per_worker,
                             control_url=control.url, count_window=window)
                       for i in range(2)]
            wait_for(lambda: control.available() == boards, 60, message="boards registered")
            runs: list[tuple[int, float]] = []

            def run() -> None:
                t0 = time.perf_counter()
                out = driver(python, "evaluate", control.url, "bench", "pulsecount",
                             str(boards), str(n_bits), "7", timeout=600)
                elapsed = time.perf_counter() - t0
                results = out[-1]["results"]
                assert len(results) == boards * n_bits
                assert all(v is not None for _, _, v in results)
                runs.append((len(results), out[-1]["seconds"]))
                wait_for(lambda: control.available() == boards, 60, message="boards back")
                assert elapsed > 0

            benchmark.pedantic(run, rounds=1, iterations=1)
        finally:
            for w in workers:
                w.stop()
            control.stop()
    evaluations, seconds = runs[-1]
    rate = evaluations / seconds
    benchmark.extra_info.update(
        boards=boards, window_s=window, evaluations=evaluations, seconds=seconds,
        evaluations_per_s=rate, upload_MB_per_s=rate * BITSTREAM_SIZE / 1e6,
        ideal_evaluations_per_s=boards / window, fraction_of_ideal=rate * window / boards)
