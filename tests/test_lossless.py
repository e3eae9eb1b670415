"""Lossless where the user expects it: finite sources are throttled, never dropped; block mode
is backpressure end to end; processing chains at saturation deliver everything and stop cleanly;
a live overload still drops, warns and exits 3."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
from daemon_helpers import run_cli, write_ini
from test_lag_chain import _lagset

from conftest import Collector, wait_for
from radlogger.daemon import EXIT_LOSS
from radlogger.device import Device, DeviceDone
from radlogger.endpoints.lag.fft import LagFFTEndpoint
from radlogger.endpoints.lag.integrate import IntegrateEndpoint
from radlogger.endpoints.null import NullEndpoint
from radlogger.endpoints.spectrum.calibrate import CalibrateEndpoint
from radlogger.endpoints.spectrum.fft import FFTEndpoint
from radlogger.measurement import Measurement
from radlogger.options import Option
from radlogger.pipeline import Pipeline


class Burst(Device):
    """A finite source that pushes as fast as the pipeline lets it: ``make(i)`` each."""

    kind = "burst"
    options = (Option("count", int, 1000, "measurements"),)

    def __init__(self, name: str, make: object, **kw: object) -> None:
        super().__init__(name, **kw)
        self.make = make
        self.sent = 0

    @property
    def finite(self) -> bool:
        return True

    def poll(self) -> None:
        if self.sent >= self.settings.count:
            raise DeviceDone
        k = min(64, self.settings.count - self.sent)
        self.outlet.push_many([self.make(self.sent + i) for i in range(k)])  # type: ignore[operator]
        self.sent += k


class SlowCollector(Collector):
    """A store on a slow disk: ``delay`` (2 ms) of simulated work a batch."""

    delay = 0.002

    def handle_batch(self, batch: list[Measurement]) -> None:
        time.sleep(self.delay)  # the slow disk, not a wait for a condition
        super().handle_batch(batch)


def _no_drops(p: Pipeline) -> None:
    snap = p.snapshot()
    for name, s in snap["producers"].items():
        assert s["dropped"] == 0, (name, s)
    for name, s in snap["endpoints"].items():
        assert s["dropped"] == 0, (name, s)
    assert p.balanced()


@pytest.mark.parametrize("policy", ["drop_newest", "block"])
def test_finite_source_through_a_tiny_queue_and_inbox_loses_nothing(policy: str) -> None:
    p = Pipeline(queue_size=16, overflow=policy, block_timeout=0.0001)
    dev = p.add_device(Burst("b", lambda i: Measurement("b", "b.v", i), count=20_000))
    sink = p.add_endpoint(SlowCollector("sink", inbox_size=8, batch_max=8), subscribe=["b"])
    p.start()
    wait_for(lambda: len(sink.items) == 20_000, 60, message="every measurement stored")
    assert p.stop(10)
    assert [m.value for m in sink.items] == list(range(20_000))
    assert dev.outlet.stats.produced == 20_000  # type: ignore[union-attr]
    _no_drops(p)
    assert p.queue.waiting_producers == 0


def test_a_live_source_keeps_dropping_by_its_policy() -> None:
    p = Pipeline(queue_size=16)
    dev = p.add_device(Burst("b", lambda i: Measurement("b", "b.v", i), count=20_000,
                             on_full="drop"))
    p.add_endpoint(SlowCollector("sink", inbox_size=8, batch_max=8), subscribe=["b"])
    p.start()
    wait_for(lambda: not dev.alive, 60)
    assert p.stop(30)
    snap = p.snapshot()
    assert snap["producers"]["b"]["dropped"] + snap["endpoints"]["sink"]["dropped"] > 0
    assert p.balanced()


def test_wsa_chain_at_saturation_in_block_mode_delivers_everything() -> None:
    """device -> fft -> calibrate -> store with tiny inboxes: the broker waits on the inboxes,
    processing output goes past the queue's bound, nothing waits in a circle."""
    rng = np.random.default_rng(1)
    iq = (rng.normal(size=1024) + 1j * rng.normal(size=1024)).astype(np.complex64) * 100
    n = 3000
    p = Pipeline(queue_size=32, overflow="block", block_timeout=0.001)
    p.add_device(Burst("wsa", lambda i: Measurement("wsa", "wsa.iq", iq, meta={"i": i}),
                       count=n, on_full="drop"))
    p.add_endpoint(FFTEndpoint("fft", inbox_size=4, batch_max=4), subscribe=["wsa.iq"])
    p.add_endpoint(CalibrateEndpoint("cal", reflevel=-10.0, inbox_size=4, batch_max=4),
                   subscribe=["wsa.spectrum"])
    store = p.add_endpoint(SlowCollector("store", inbox_size=4, batch_max=4),
                           subscribe=["wsa.spectrum_dbm"])
    p.start()
    wait_for(lambda: len(store.items) == n - p.snapshot()["producers"]["wsa"]["dropped"], 120,
             message="every spectrum the queue took is stored")
    assert p.stop(10)
    snap = p.snapshot()
    # block mode: the only loss allowed is the device's own, at the queue (block_timeout);
    # nothing past the queue is dropped
    for name in ("fft", "cal", "store"):
        assert snap["endpoints"][name]["dropped"] == 0, snap["endpoints"][name]
    assert snap["producers"]["fft"]["dropped"] == snap["producers"]["cal"]["dropped"] == 0
    assert [m.meta["i"] for m in store.items] == sorted(m.meta["i"] for m in store.items)
    # bounded: while the broker hands over one drained batch, stage j publishes at most what
    # the previous batch held for it plus its inbox and the batch in hand, so derived items
    # in the queue stay under depth x (queue_size + inbox terms): 2 x 32 + 2 x 2 x (4 + 4)
    assert 0 < p.queue.overshoot_high_water <= 2 * 32 + 2 * 2 * (4 + 4)
    assert p.balanced()


def test_lag_chain_at_saturation_with_a_finite_source_delivers_everything() -> None:
    n = 4000
    p = Pipeline(queue_size=32)
    p.add_device(Burst("w", lambda i: _lagset("w", ("AA", "BB")[i % 2], 10**18 + i * 10**6,
                                              float(i), n=64), count=n))
    # the lagsets already are spectra here: lag_fft turns them into spectra of their own
    p.add_endpoint(LagFFTEndpoint("fft", inbox_size=4, batch_max=4, output="spec2"),
                   subscribe=["w.spectrum"])
    p.add_endpoint(IntegrateEndpoint("int", count=10, inbox_size=4, batch_max=4),
                   subscribe=["w.spec2"])
    store = p.add_endpoint(SlowCollector("store", inbox_size=4, batch_max=4),
                           subscribe=["w.spec2_int"])
    p.start()
    wait_for(lambda: len(store.items) == n // 10, 120, message="every integration stored")
    assert p.stop(10)
    _no_drops(p)
    assert sum(m.meta["integrated"] for m in store.items) == n


def test_a_stuck_endpoint_does_not_stall_the_others_forever() -> None:
    """Block mode: an endpoint that never returns costs the broker its full_timeout once, then
    its share is dropped (endpoint_stalled) while the others get everything."""
    import threading

    release = threading.Event()

    class Stuck(NullEndpoint):
        def handle_batch(self, batch: list[Measurement]) -> None:
            release.wait(60)

    p = Pipeline(queue_size=64, overflow="block", block_timeout=5)
    dev = p.add_device(Burst("b", lambda i: Measurement("b", "b.v", i), count=5000))
    stuck = p.add_endpoint(Stuck("stuck", inbox_size=8, full_timeout=0.3), subscribe=["b"])
    good = p.add_endpoint(Collector("good"), subscribe=["b"])
    p.start()
    try:
        wait_for(lambda: len(good.items) == 5000, 60, message="the healthy endpoint got all")
        assert stuck.stats.snapshot()["dropped_by_reason"].get("endpoint_stalled", 0) > 0
        assert not dev.alive
    finally:
        release.set()
    assert p.stop(10)
    assert p.balanced()


# ------------------------------------------------------------------ the daemon, as users run it
def test_counted_synthetic_into_sqlite_with_once_stores_every_row(tmp_path: Path) -> None:
    db = tmp_path / "run.sqlite"
    ini = write_ini(tmp_path / "bulk.ini", f"""
        [radlogger]
        stats_interval = 0
        [device:gen]
        driver = synthetic
        rate = 0
        count = 120000
        pattern = counter
        [endpoint:db]
        type = sqlite
        subscribe = gen
        path = {db}
        inbox_size = 1024
        """)
    result = run_cli("run", "-c", str(ini), "--once", timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    with sqlite3.connect(db) as con:
        (rows,), = con.execute("select count(*) from measurements")
    assert rows == 120_000
    assert "lost" not in result.stderr


def test_counted_synthetic_through_a_tiny_queue_into_jsonl_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "run.jsonl"
    ini = write_ini(tmp_path / "bulk.ini", f"""
        [radlogger]
        stats_interval = 0
        queue_size = 256
        [device:gen]
        driver = synthetic
        rate = 0
        count = 50000
        pattern = counter
        [endpoint:file]
        type = jsonl
        subscribe = gen
        path = {out}
        inbox_size = 64
        """)
    result = run_cli("run", "-c", str(ini), "--once", timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    files = sorted(tmp_path.glob("run*.jsonl"))
    values = [json.loads(line)["value"] for f in files for line in f.read_text().splitlines()]
    assert sorted(values) == list(range(50_000))


def test_live_overload_with_duration_warns_then_exits_3(tmp_path: Path) -> None:
    ini = write_ini(tmp_path / "live.ini", f"""
        [radlogger]
        stats_interval = 0
        loss_interval = 0.5
        queue_size = 64
        [device:gen]
        driver = synthetic
        rate = 0
        array_size = 64
        [endpoint:db]
        type = sqlite
        subscribe = gen
        path = {tmp_path / "live.sqlite"}
        inbox_size = 16
        """)
    result = run_cli("run", "-c", str(ini), "--duration", "2", timeout=120)
    assert result.returncode == EXIT_LOSS, result.stderr[-3000:]
    lines = result.stderr.splitlines()
    first = next(i for i, line in enumerate(lines) if " dropped (" in line and "WARNING" in line)
    final = next(i for i, line in enumerate(lines) if "final stats" in line)
    assert first < final and "lost" in lines[final]
    # later drops are summarised (every loss_interval) even with the stats lines off
    assert any("more dropped" in line for line in lines[first:final])


def test_a_device_that_never_delivered_fails_a_batch_run(tmp_path: Path) -> None:
    """--duration with one device that cannot connect: no drop anywhere, but the run did not
    do what it was configured to do, so it says which device and exits 3."""
    from conftest import free_port

    ini = write_ini(tmp_path / "absent.ini", f"""
        [radlogger]
        stats_interval = 0
        [device:gen]
        driver = synthetic
        rate = 100
        [device:wsa]
        driver = wsa4000
        host = 127.0.0.1
        control_port = {free_port()}
        backoff_initial = 0.05
        [endpoint:sink]
        type = null
        subscribe = gen, wsa
        """)
    result = run_cli("run", "-c", str(ini), "--duration", "1", timeout=60)
    assert result.returncode == EXIT_LOSS, result.stderr[-3000:]
    assert "device wsa never delivered a measurement" in result.stderr
    assert "device gen never" not in result.stderr


def test_plugins_says_which_devices_are_finite_and_which_live() -> None:
    text = run_cli("plugins").stdout
    blocks = dict(re.findall(r"^  (\w+): .*\n    source: (\w+)", text, re.M))
    assert blocks["replay"] == blocks["synthetic"] == blocks["widar_replay"] == "finite"
    assert blocks["wsa4000"] == blocks["widar"] == blocks["mqtt"] == "live"
