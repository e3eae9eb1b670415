"""Process isolation: the binary wire forms, shared-memory slots, and supervised pipelines."""

from __future__ import annotations

import os
import signal
import socket
import struct
import time

import numpy as np
import pytest

from conftest import Collector, free_port, wait_for
from radlogger.device import DeviceState
from radlogger.devices.widar.driver import WidarDevice
from radlogger.devices.widar.simulator import SenderThread, WidarSimulator
from radlogger.endpoint import Endpoint
from radlogger.endpoints.lag.isolated import IsolatedEndpoint, chain_produces, parse_stages
from radlogger.measurement import Measurement
from radlogger.options import OptionError
from radlogger.pipeline import Pipeline
from radlogger.workers import WorkerError as IsolationError
from radlogger.workers import broadcast_control, messages
from radlogger.workers.shm import SlotRing


class OpenFails(Endpoint):
    """A stage that cannot start (loaded by name in the pipeline process)."""

    kind = "open_fails"

    def open(self) -> None:
        raise OSError("disk on fire")


# --------------------------------------------------------------------------- wire forms
def test_control_and_reference_forms_and_garbage() -> None:
    assert messages.decode_control(messages.encode_control(2, -7, 5)) == (2, -7, 5)
    assert messages.decode_ref(messages.encode_ref(3, 1000, 2**40)) == (3, 1000, 2**40)
    assert len(messages.encode_control(1)) == struct.calcsize("<4sBxHqq") == 24
    assert messages.kind_of(messages.encode_control(1)) == messages.CONTROL
    assert messages.kind_of(messages.encode_ref(0, 1, 1)) == messages.SHMREF
    parts, size = messages.measurement_parts(
        Measurement("w", "w.lagset", np.arange(4, dtype=np.complex64), meta={"n": 1}))
    data = b"".join(bytes(p) for p in parts)
    assert len(data) == size and messages.kind_of(data) == messages.MEASUREMENT
    for junk in (b"", b"RLI1", b"RLI1\x09" + bytes(20), b"\x80\x04\x95" + bytes(40)):
        with pytest.raises(messages.WireError):
            messages.kind_of(junk)
    with pytest.raises(messages.WireError):
        messages.decode_control(messages.encode_ref(0, 1, 1))
    with pytest.raises(messages.WireError):
        messages.measurement_parts(Measurement("a", "a.b", 1, meta={"x": object()}))


def test_slot_ring_hands_over_and_rejects_stale_references() -> None:
    ring = SlotRing(2, 64, create=True)
    peer = SlotRing(2, 64, name=ring.name)
    try:
        a = ring.write([b"abc", np.arange(2, dtype=np.int32).tobytes()], 11)
        b = ring.write([b"x"], 1)
        assert a is not None and b is not None
        assert ring.write([b"y"], 1) is None and ring.full_count == 1
        assert peer.read(a[0], 11, a[1] + 1) is None  # wrong generation
        assert peer.read(a[0], 11, a[1]) == b"abc" + np.arange(2, dtype=np.int32).tobytes()
        assert peer.read(a[0], 11, a[1]) is None  # already taken
        assert ring.write([b"z"], 1) is not None  # the freed slot is reused
        ring.reset()
        assert peer.read(b[0], 1, b[1]) is None
    finally:
        peer.close()
        ring.close(unlink=True)


def test_stage_configuration_errors_are_one_line() -> None:
    with pytest.raises(OptionError, match="cannot load 'no_such_kind'"):
        parse_stages(["no_such_kind"], [])
    with pytest.raises(OptionError, match="no stage named 'fft'"):
        parse_stages(["lag_normalize"], ["fft.window=hann"])
    with pytest.raises(OptionError, match="stage lag_fft"):
        parse_stages(["lag_fft"], ["lag_fft.window=square"])
    with pytest.raises(OptionError, match="count = K or seconds = T"):
        parse_stages(["integrate"], [])  # the stage's own checks run here, not in the child
    specs = parse_stages(["n=lag_normalize", "lag_fft", "lag_fft"], ["lag_fft2.channels=8"])
    assert [(s.name, s.target) for s in specs] == [("n", "lag_normalize"),
                                                    ("lag_fft", "lag_fft"),
                                                    ("lag_fft2", "lag_fft")]
    assert specs[2].settings == {"channels": "8"}
    assert chain_produces(specs, ["last"]) == ("{device}.spectrum",)
    full = parse_stages(["lag_normalize", "lag_fft", "integrate"], ["integrate.count=2"])
    assert chain_produces(full, ["last"]) == ("{device}.spectrum_int",)


def test_a_stage_that_cannot_start_fails_the_endpoint_with_its_reason() -> None:
    ep = IsolatedEndpoint("iso", stages=["test_isolation:OpenFails"], start_timeout=60)
    with pytest.raises(IsolationError, match="disk on fire"):
        ep.open()
    assert ep.process is not None and ep.process.state == "stopped"


# --------------------------------------------------------------------------- processes
def _lagset(i: int, n: int, line: int, missing_counts: bool = False) -> Measurement:
    spec = np.zeros(n, complex)
    spec[line] = 1.0
    lags = np.fft.fftshift(np.fft.ifft(np.fft.ifftshift(spec))) * 1000
    meta = {"station_x": 1, "station_y": 2, "baseband": 0, "subband": 0,
            "polarization": "AA", "phase_bin": 0, "complete": True}
    if not missing_counts:
        meta.update(dv_centre=np.full(4, 1000, np.uint32), dv_edge=np.full(4, 1000, np.uint32))
    return Measurement("w", "w.lagset", lags.astype(np.complex64), device_time=10**18 + i,
                       meta=meta)


def test_results_come_back_large_ones_through_shared_memory_controls_fan_out(
        pipeline: Pipeline) -> None:
    n = 512  # 4 KiB lag sets: above max_datagram, so every one goes through a slot
    iso = pipeline.add_endpoint(IsolatedEndpoint(
        "iso", stages=["lag_normalize", "lag_fft", "integrate"],
        stage_options=["integrate.count=1000"], forward=["last", "*.spectrum"],
        max_datagram=1024, shm_slots=4, shm_slot_mb=0.05, heartbeat=0.05),
        subscribe=["w.lagset"])
    spectra = pipeline.add_endpoint(Collector("spectra"), subscribe=["w.spectrum"])
    integrated = pipeline.add_endpoint(Collector("int"), subscribe=["w.spectrum_int"])
    pipeline.start()
    assert isinstance(iso, IsolatedEndpoint) and iso.process is not None
    out = pipeline.outlet("w")
    for i in range(30):
        out.push(_lagset(i, n, 77))
    out.push(_lagset(99, n, 77, missing_counts=True))  # fails in the child's normalize
    wait_for(lambda: len(spectra.items) == 30, message="spectra returned")
    for m in spectra.items:
        assert m.source == "iso" and np.argmax(np.abs(m.value)) == 77
        assert m.meta["station_y"] == 2 and m.value.dtype == np.complex64
    assert integrated.items == []
    assert broadcast_control(pipeline.endpoints.values(), "flush") == 1  # every live one
    wait_for(lambda: len(integrated.items) == 1, message="flushed partial integration")
    assert integrated.items[0].meta["integrated"] == 30
    assert integrated.items[0].meta["closed_by"] == "flush"
    wait_for(lambda: iso.process.control_acks == 1 and iso.process.child_stats.get("err") == 1)
    snap = iso.isolation_stats()
    assert snap["sent"] == snap["shm_sent"] == 31 and snap["undelivered"] == {}
    assert snap["crashes"] == 0
    counters = iso.counters()  # what status shows: the same accounting, flat
    assert counters["sent"] == counters["shm_sent"] == 31 and counters["crashes"] == 0
    assert counters["undelivered"] == 0
    assert pipeline.stop(10.0) and pipeline.balanced()
    snap = iso.isolation_stats()
    assert snap["confirmed"] == 31 and snap["lost"] == 0 and snap["state"] == "stopped"


def test_sigkill_is_detected_counted_restarted_and_counts_add_up(pipeline: Pipeline) -> None:
    dev = pipeline.add_device(WidarDevice("widar", port=free_port(socket.SOCK_DGRAM),
                                          lags=64, lags_per_frame=16, timeout=0.2))
    iso = pipeline.add_endpoint(IsolatedEndpoint("iso", stages=["lag_normalize", "lag_fft"],
                                                 heartbeat=0.05, hang_timeout=5.0),
                                subscribe=["widar.lagset"])
    spectra = pipeline.add_endpoint(Collector("spectra"), subscribe=["widar.spectrum"])
    pipeline.start()
    assert isinstance(iso, IsolatedEndpoint) and iso.process is not None
    wait_for(lambda: dev.state is DeviceState.RUNNING)
    sim = WidarSimulator(baselines=1, lags=64, lags_per_frame=16, seed=9)
    sender = SenderThread(sim, ("127.0.0.1", dev.bound_port), rate=2000)
    sender.start()
    try:
        wait_for(lambda: len(spectra.items) >= 20, message="spectra before the kill")
        proc = iso.process
        old_pid = proc.pid
        assert old_pid is not None
        os.kill(old_pid, signal.SIGKILL)
        at_kill = dev.lagsets
        wait_for(lambda: proc.crashes == 1, message="crash detected")
        wait_for(lambda: sum(proc.undelivered.values()) > 0, message="hand-over failures")
        wait_for(lambda: proc.state == "running" and proc.pid != old_pid, timeout=30,
                 message="restarted")
        assert dev.lagsets > at_kill, "the input stage kept receiving"
        after_restart = len(spectra.items)
        wait_for(lambda: len(spectra.items) > after_restart + 20, message="results again")
    finally:
        sender.stop()
    wait_for(lambda: dev.datagrams == sender.sent and not dev.assembler.pending)
    assert pipeline.stop(10.0)
    snap = iso.isolation_stats()
    stats = pipeline.endpoint_stats("iso")
    assert snap["crashes"] == 1 and snap["restarts"] == 1 and snap["hangs"] == 0
    assert dev.lagsets == stats.received == pipeline.producers["widar"].published
    assert stats.received == stats.handled + stats.dropped
    # what the killed process held is dropped (child_crashed), not handled
    assert stats.dropped == sum(snap["undelivered"].values()) + snap["lost"]
    assert stats.reasons().get("child_crashed", 0) == snap["lost"]
    assert stats.handled == snap["confirmed"]
    assert stats.received == snap["sent"] + sum(snap["undelivered"].values())
    assert snap["sent"] == snap["confirmed"] + snap["lost"] and snap["in_flight"] == 0
    assert snap["returned"] == pipeline.producers["iso"].produced == len(spectra.items)
    assert set(snap["undelivered"]) <= {"peer_dead", "restarting", "would_block"}
    assert pipeline.balanced()


def test_a_hung_pipeline_is_killed_and_restarted(pipeline: Pipeline) -> None:
    iso = pipeline.add_endpoint(IsolatedEndpoint("iso", stages=["lag_normalize"],
                                                 heartbeat=0.05, hang_timeout=0.6),
                                subscribe=["w.lagset"])
    got = pipeline.add_endpoint(Collector("got"), subscribe=["w.lagset_norm"])
    pipeline.start()
    assert isinstance(iso, IsolatedEndpoint) and iso.process is not None
    proc = iso.process
    old_pid = proc.pid
    assert old_pid is not None
    os.kill(old_pid, signal.SIGSTOP)  # alive, but silent
    t0 = time.monotonic()
    wait_for(lambda: proc.hangs == 1, timeout=20, message="hang detected")
    assert time.monotonic() - t0 >= 0.5
    wait_for(lambda: proc.state == "running", timeout=30, message="restarted")
    assert proc.pid != old_pid and proc.crashes == 0
    pipeline.outlet("w").push(_lagset(1, 64, 3))
    wait_for(lambda: len(got.items) == 1, message="works after the restart")
    assert pipeline.stop(10.0) and pipeline.balanced()


def test_stop_flushes_partial_integrations_out_of_the_process(pipeline: Pipeline) -> None:
    """A partial integration inside the child is published at stop, not discarded."""
    iso = pipeline.add_endpoint(IsolatedEndpoint(
        "iso", stages=["lag_normalize", "lag_fft", "integrate"],
        stage_options=["integrate.count=1000"], heartbeat=0.05), subscribe=["w.lagset"])
    integrated = pipeline.add_endpoint(Collector("int"), subscribe=["w.spectrum_int"])
    pipeline.start()
    assert isinstance(iso, IsolatedEndpoint) and iso.process is not None
    out = pipeline.outlet("w")
    for i in range(12):
        out.push(_lagset(i, 64, 5))
    wait_for(lambda: iso.process.child_stats.get("done") == 12, message="child processed all")
    assert integrated.items == []
    assert pipeline.stop(10.0) and pipeline.balanced()
    assert len(integrated.items) == 1
    assert integrated.items[0].meta["integrated"] == 12
    assert integrated.items[0].meta["closed_by"] == "flush"
