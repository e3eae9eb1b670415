"""WIDAR input stage and lag processing.

* decode + assembly of 1064-byte frames (128 lags, 8 frames per 1024-lag set), the workloads
  of the VLA's typical aggregate (42,000 frames/s) and one board at gigabit rate (117,000);
* the same rates received over loopback UDP by the driver in a Pipeline (the simulator in
  its own process), checking that every frame was received (or counted as a kernel drop);
* lag sets/s through normalize -> FFT -> integrate, in-process vs in an isolated process
  (the cost of the process boundary);
* the full chain (issue 18b): UDP -> driver -> lag_normalize -> lag_fft -> integrate -> hdf5
  at one board's line rate (117,000 frames/s) and above, in-process and with the lag stages
  in an isolated child process, asserting zero kernel drops and every integration stored.
  ``test_full_chain_long`` is the 60 s run (``-m long``; skipped in the quick mode).

Run: ``python -m pytest benchmarks/bench_widar.py --benchmark-enable --benchmark-only``.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from typing import Any

import numpy as np
import pytest

from benchmarks import benchutil
from benchmarks.benchutil import scaled
from radlogger.device import DeviceState
from radlogger.devices.widar import frames as F
from radlogger.devices.widar.assembler import Assembler
from radlogger.devices.widar.driver import WidarDevice
from radlogger.devices.widar.simulator import WidarSimulator
from radlogger.endpoints.lag.fft import LagFFTEndpoint
from radlogger.endpoints.lag.integrate import IntegrateEndpoint
from radlogger.endpoints.lag.isolated import IsolatedEndpoint
from radlogger.endpoints.lag.normalize import LagNormalizeEndpoint
from radlogger.endpoints.null import NullEndpoint
from radlogger.endpoints.storage.hdf5 import HDF5Endpoint
from radlogger.measurement import Measurement
from radlogger.pipeline import Pipeline

LAGS, LPF = 1024, 128  # 1064-byte frames, 8 per lag set


def _wait(predicate, timeout: float = 120.0,  # type: ignore[no-untyped-def]
          poll: float = 0.01) -> None:
    """Poll every 10 ms: at 1 ms this thread's own checks were ~1 us a frame of the CPU the
    benchmark reports as the daemon's."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("benchmark workload did not finish")
        time.sleep(poll)


def _sim(**kw: Any) -> WidarSimulator:
    return WidarSimulator(baselines=10, polarizations=("AA", "AB", "BA", "BB"), lags=LAGS,
                          lags_per_frame=LPF, seed=1, **kw)  # 40 products, 320 frames


@pytest.mark.parametrize("frames_per_s", [42_000, 117_000])
def test_decode_and_assemble(benchmark, frames_per_s: int) -> None:  # type: ignore[no-untyped-def]
    """One second's worth of frames (disordered within 64-frame windows), batches of 256."""
    sim = _sim(disorder=64)
    n = scaled(frames_per_s, 3200) // 320 * 320
    datagrams = list(sim.datagrams(n // 320))
    width = F.frame_bytes(LPF)
    buf = np.frombuffer(b"".join(datagrams), np.uint8).reshape(n, width)
    lengths = np.full(n, width)

    def run() -> tuple[int, int]:
        asm = Assembler(LAGS, LPF, timeout=1.0)
        sets = 0
        for lo in range(0, n, 256):
            batch, _ = F.decode(buf[lo:lo + 256], lengths[lo:lo + 256], LPF)
            sets += sum(ls.complete for ls in asm.add(batch))
        return sets, asm.placed

    sets, placed = benchmark.pedantic(run, rounds=1 if benchutil.QUICK else 5, iterations=1)
    assert placed == n and sets == n // 8, "every frame placed, every lag set complete"
    benchmark.extra_info.update(frames=n, lag_sets=sets)


def _send_frames(port: int, rate: float, total: int,
                 timeout: float) -> subprocess.CompletedProcess[str]:
    """The WIDAR simulator in its own process: ``total`` frames of 10 baselines x 4 products."""
    return subprocess.run(
        [sys.executable, "-c", "from radlogger.devices.widar.simulator import cli; cli()",
         "--port", str(port), "--rate", str(rate), "--frames", str(total),
         "--baselines", "10", "--products", "AA,AB,BA,BB", "--lags", str(LAGS),
         "--lags-per-frame", str(LPF)], capture_output=True, text=True, timeout=timeout,
        check=True)


def run_udp(rate: int, seconds: float) -> dict[str, float]:
    """The simulator runs as its own process (``simulate widar``) so it does not share
    this interpreter's GIL with the receiver."""
    p = Pipeline(queue_size=65536)
    dev = WidarDevice("widar", port=_free_udp_port(), lags=LAGS, lags_per_frame=LPF,
                      timeout=0.5, batch=256)
    sink = NullEndpoint("sink")
    p.add_device(dev)
    p.add_endpoint(sink, subscribe=["widar.lagset"])
    p.start()
    try:
        _wait(lambda: dev.state is DeviceState.RUNNING)
        total = int(rate * seconds) // 320 * 320
        sender = _send_frames(dev.bound_port, rate, total, 600)
        report = re.search(r"sent (\d+) frames in ([\d.]+) s", sender.stderr)
        assert report is not None, sender.stderr
        sent, send_s = int(report.group(1)), float(report.group(2))
        _wait(lambda: dev.datagrams + max(0, dev.kernel_drops()) >= sent
              and not dev.assembler.pending, timeout=30)
        drops = max(0, dev.kernel_drops())
        assert dev.datagrams + drops == sent, "every frame received or counted"
        _wait(lambda: sink.count == dev.lagsets)
    finally:
        p.stop(10)
    return {"sent": sent, "received": dev.datagrams, "kernel_drops": drops,
            "sent_per_s": sent / send_s, "received_per_s": dev.datagrams / send_s,
            "complete_lag_sets": dev.assembler.complete, "loss": drops / max(1, sent)}


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("rate", [42_000, 117_000])
def test_udp_receive_through_pipeline(benchmark, rate: int) -> None:  # type: ignore[no-untyped-def]
    seconds = 0.2 if benchutil.QUICK else 5.0
    stats = benchmark.pedantic(run_udp, args=(rate, seconds), rounds=1, iterations=1)
    benchmark.extra_info.update(stats)


def _lagsets(n: int, products: int) -> list[Measurement]:
    rng = np.random.default_rng(0)
    lags = (rng.standard_normal((products, LAGS)) * 1000).astype(np.complex64)
    counts = np.full(LAGS // LPF, 1000, np.uint32)
    out = []
    for i in range(n):
        k = i % products
        meta = {"station_x": 1 + k, "station_y": 40, "baseband": 0, "subband": 0,
                "polarization": "AA", "phase_bin": 0, "complete": True,
                "dv_centre": counts, "dv_edge": counts}
        out.append(Measurement("widar", "widar.lagset", lags[k], device_time=i // products,
                               meta=meta))
    return out


def run_chain(mode: str, n: int, products: int = 10, k: int = 10) -> tuple[int, float]:
    p = Pipeline(queue_size=1 << 17, overflow="block", block_timeout=60)
    if mode == "in_process":
        p.add_endpoint(LagNormalizeEndpoint("norm"), subscribe=["widar.lagset"])
        p.add_endpoint(LagFFTEndpoint("fft"), subscribe=["widar.lagset_norm"])
        p.add_endpoint(IntegrateEndpoint("integ", count=k), subscribe=["widar.spectrum"])
    else:
        p.add_endpoint(IsolatedEndpoint("iso", stages=["lag_normalize", "lag_fft",
                                                       "integrate"],
                                        stage_options=[f"integrate.count={k}"],
                                        send_wait=1.0, inbox_size=1 << 17),
                       subscribe=["widar.lagset"])
    sink = NullEndpoint("sink")
    p.add_endpoint(sink, subscribe=["widar.spectrum_int"])
    items = _lagsets(n, products)
    p.start()
    try:
        out = p.outlet("widar")
        t0 = time.perf_counter()
        for m in items:
            out.push(m)
        _wait(lambda: sink.count >= n // k)
        elapsed = time.perf_counter() - t0
    finally:
        p.stop(30)
    assert sink.count == n // k, f"{sink.count} integrations of {n // k}"
    return n, elapsed


@pytest.mark.parametrize("mode", ["in_process", "isolated"])
def test_lag_chain_lag_sets_per_s(benchmark, mode: str) -> None:  # type: ignore[no-untyped-def]
    n = scaled(20_000, 200) // 100 * 100
    count, elapsed = benchmark.pedantic(run_chain, args=(mode, n),
                                        rounds=1 if benchutil.QUICK else 3,
                                        iterations=1)
    benchmark.extra_info.update(lag_sets=count, lag_sets_per_s=count / elapsed, mode=mode)


def run_full_chain(rate: int, seconds: float, mode: str, directory: Any,
                   k: int = 10) -> dict[str, Any]:
    """UDP frames from the simulator process -> driver -> lag chain -> hdf5."""
    p = Pipeline(queue_size=65536)
    dev = WidarDevice("widar", port=_free_udp_port(), lags=LAGS, lags_per_frame=LPF,
                      timeout=0.5, batch=256)
    p.add_device(dev)
    if mode == "in_process":
        p.add_endpoint(LagNormalizeEndpoint("norm", inbox_size=1 << 15),
                       subscribe=["widar.lagset"])
        p.add_endpoint(LagFFTEndpoint("fft", inbox_size=1 << 15),
                       subscribe=["widar.lagset_norm"])
        p.add_endpoint(IntegrateEndpoint("integ", count=k, inbox_size=1 << 15),
                       subscribe=["widar.spectrum"])
    elif mode == "isolated":
        p.add_endpoint(IsolatedEndpoint(
            "iso", stages=["lag_normalize", "lag_fft", "integrate"],
            stage_options=[f"integrate.count={k}"], inbox_size=1 << 15),
            subscribe=["widar.lagset"])
    path = directory / f"lags-{mode}-{rate}.h5"
    if mode == "isolated_store":  # the store too in the child: the input stage's GIL is spared
        p.add_endpoint(IsolatedEndpoint(
            "iso", stages=["lag_normalize", "lag_fft", "integrate", "hdf5"],
            stage_options=[f"integrate.count={k}", f"hdf5.path={path}",
                           "hdf5.compression=none"], forward=["none"], inbox_size=1 << 15),
            subscribe=["widar.lagset"])
    else:
        p.add_endpoint(HDF5Endpoint("h5", path=str(path), compression="none"),
                       subscribe=["widar.spectrum_int"])
    p.start()
    cpu0 = time.process_time()
    try:
        _wait(lambda: dev.state is DeviceState.RUNNING)
        total = int(rate * seconds) // 320 * 320
        sender = _send_frames(dev.bound_port, rate, total, seconds * 10 + 60)
        report = re.search(r"sent (\d+) frames in ([\d.]+) s", sender.stderr)
        assert report is not None, sender.stderr
        sent, send_s = int(report.group(1)), float(report.group(2))
        _wait(lambda: dev.datagrams + max(0, dev.kernel_drops()) >= sent
              and not dev.assembler.pending, timeout=60)
        drops = max(0, dev.kernel_drops())
        assert dev.datagrams + drops == sent, "every frame received or counted"
        _wait(lambda: p.quiescent(), timeout=300)
    finally:
        assert p.stop(60)
    cpu = time.process_time() - cpu0
    snap = p.snapshot()
    lost = {n: e["dropped_by_reason"] for n, e in snap["endpoints"].items() if e["dropped"]}
    assert p.balanced()
    chain = snap["endpoints"]["norm" if mode == "in_process" else "iso"]
    assert chain["received"] == dev.lagsets  # every lag set reached the chain: handled or lost
    stored = _rows_stored(path)
    if not lost:  # every product integrates on its own: this many integrations at least
        assert stored >= max(1, dev.lagsets // k - 40)
    return {"mode": mode, "offered_frames_per_s": rate, "sent": sent, "received": dev.datagrams,
            "kernel_drops": drops, "sent_per_s": sent / send_s,
            "frames_per_s": dev.datagrams / send_s, "lag_sets": dev.lagsets,
            "integrations_stored": stored, "drops": lost,
            "daemon_cpu_us_per_frame": cpu / max(1, sent) * 1e6,
            "zero_kernel_drops": drops == 0}


def _rows_stored(path: Any) -> int:
    """Integrations in the HDF5 file, read back (the store may run in the child)."""
    from radlogger.store.hdf5 import complete_rows, open_readonly, segments

    with open_readonly(path) as f:
        return sum(complete_rows(g) for _, g in segments(f))


@pytest.mark.parametrize("mode", ["in_process", "isolated", "isolated_store"])
@pytest.mark.parametrize("rate", [117_000, 160_000, 200_000])
def test_full_chain_to_hdf5(benchmark, tmp_path, rate: int,  # type: ignore[no-untyped-def]
                            mode: str) -> None:
    pytest.importorskip("h5py")
    seconds = 0.1 if benchutil.QUICK else 5.0
    stats = benchmark.pedantic(run_full_chain, args=(rate, seconds, mode, tmp_path),
                               rounds=1, iterations=1)
    benchmark.extra_info.update(stats)


@pytest.mark.long
@pytest.mark.parametrize("mode", ["in_process", "isolated", "isolated_store"])
def test_full_chain_long(benchmark, tmp_path, mode: str) -> None:  # type: ignore[no-untyped-def]
    """The issue's acceptance run: 60 s at 117,000 frames/s, zero kernel drops."""
    if benchutil.QUICK:
        pytest.skip("60 s run: benchmarks enabled only (-m long --benchmark-enable)")
    pytest.importorskip("h5py")
    stats = benchmark.pedantic(run_full_chain, args=(117_000, 60.0, mode, tmp_path),
                               rounds=1, iterations=1)
    benchmark.extra_info.update(stats)
    assert stats["kernel_drops"] == 0 and not stats["drops"]
