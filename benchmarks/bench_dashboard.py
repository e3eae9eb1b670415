"""What watching a run costs: CPU of the daemon with and without two browsers attached (issue 17).

The daemon runs the packaged default configuration plus a 28,000 packet/s instrument (a
synthetic device sending 256-sample float32 arrays, as a streaming WSA4000 sends I/Q packets,
into a null endpoint) and its control port.  Its CPU (user + system, psutil, over a window) is
measured in three situations:

* ``no_control``: control_port = 0, no viewer tap at all;
* ``idle``: the control port and the viewer tap, nobody watching;
* ``two_browsers``: two headless Chromium pages on the dashboard (skipped without Chromium
  and Playwright).

The figures are in ``extra_info`` (percent of one core); the benchmark's time is the window.

Run: ``python -m pytest benchmarks/bench_dashboard.py --benchmark-enable --benchmark-only -s``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from benchmarks import benchutil

DEFAULT_INI = Path(__file__).resolve().parent.parent / "radlogger" / "default.ini"
CHROMIUM = "/usr/bin/chromium"
RATE = 28_000

STREAM = f"""
[device:stream]
driver = synthetic
rate = {RATE}
array_size = 256
chunk = 700

[endpoint:sink]
type = null
subscribe = stream
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def daemon(control: bool) -> Iterator[tuple[Any, int]]:
    psutil = pytest.importorskip("psutil")
    port = _free_port() if control else 0
    with tempfile.TemporaryDirectory() as tmp:
        text = DEFAULT_INI.read_text(encoding="utf-8").replace(
            "[radlogger]\n", f"[radlogger]\ncontrol_port = {port}\n", 1) + STREAM
        ini = Path(tmp, "bench.ini")
        ini.write_text(text, encoding="utf-8")
        proc = subprocess.Popen([sys.executable, "-m", "radlogger.cli", "run", "-c", str(ini)],
                                cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while control:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)  # noqa: S310
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError("daemon did not start") from None
                    time.sleep(0.2)
            yield psutil.Process(proc.pid), port
        finally:
            proc.terminate()
            proc.wait(30)


def cpu_percent(p: Any, window: float) -> float:
    before = p.cpu_times()
    t0 = time.monotonic()
    time.sleep(window)  # a measurement window, not a wait for a condition
    after = p.cpu_times()
    used = (after.user - before.user) + (after.system - before.system)
    return round(100 * used / (time.monotonic() - t0), 1)


WINDOW = 2.0 if benchutil.QUICK else 15.0
WARMUP = 1.0 if benchutil.QUICK else 5.0


@pytest.mark.parametrize("situation", ["no_control", "idle", "two_browsers"])
def test_daemon_cpu_while_watched(benchmark, situation: str) -> None:  # type: ignore[no-untyped-def]
    browsers: list[Any] = []
    if situation == "two_browsers":
        if not Path(CHROMIUM).exists():
            pytest.skip("chromium missing: etc/install-system-deps.sh")
        sync_api = pytest.importorskip("playwright.sync_api")
    with daemon(situation != "no_control") as (proc, port):
        pw = None
        try:
            if situation == "two_browsers":
                pw = sync_api.sync_playwright().start()
                b = pw.chromium.launch(executable_path=CHROMIUM, args=[
                    "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run"])
                browsers.append(b)
                for _ in range(2):
                    page = b.new_context().new_page()
                    page.goto(f"http://127.0.0.1:{port}/")
                    page.wait_for_selector("#conn[data-state=live]", timeout=20_000)
            time.sleep(WARMUP)  # let the pipeline and the pages settle before measuring
            result = benchmark.pedantic(cpu_percent, args=(proc, WINDOW), rounds=1,
                                        iterations=1)
        finally:
            for b in browsers:
                b.close()
            if pw is not None:
                pw.stop()
    benchmark.extra_info.update(cpu_percent=result, rate=RATE, window_s=WINDOW,
                                cores=os.cpu_count())
    print(f"\n{situation}: daemon CPU {result} % of one core at {RATE:,} packets/s")
    assert result >= 0
