"""The WSA4000 driver against the simulator over real sockets, inside a real Pipeline."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from conftest import Collector, wait_for
from radlogger.devices.wsa4000.driver import WSA4000Device
from radlogger.devices.wsa4000.simulator import WSA4000Simulator
from radlogger.options import OptionError
from radlogger.pipeline import Pipeline

FAST = dict(backoff_initial=0.05, backoff_max=0.2, backoff_jitter=0.0, timeout=2.0)


@pytest.fixture
def sim() -> Iterator[WSA4000Simulator]:
    s = WSA4000Simulator(control_port=0, data_port=0, tones=["1e6:0.5"], ring_samples=4096)
    s.start()
    yield s
    s.stop()


def device(sim: WSA4000Simulator, **kw: Any) -> WSA4000Device:
    opts: dict[str, Any] = dict(host="127.0.0.1", control_port=sim.control_port,
                                data_port=sim.data_port, spp=128, **FAST)
    opts.update(kw)
    return WSA4000Device("wsa1", **opts)


def received_after(sim: WSA4000Simulator, start: int) -> list[str | None]:
    return [r.key for r in sim.commands[start:]]


def test_block_captures_publish_every_packet_with_merged_context(
        sim: WSA4000Simulator, pipeline: Pipeline) -> None:
    dev = pipeline.add_device(device(sim, freq=915e6, decimation=8, rf_gain="MEDIUM",
                                     if_gain=4, ppb=3, rate=0))
    sink = pipeline.add_endpoint(Collector("collect"), subscribe=["wsa1.iq"])
    pipeline.start()
    wait_for(lambda: len(sink.items) >= 12, 10, message="12 packets")
    assert pipeline.stop(5.0)
    items = sink.items
    assert len(items) == dev.packets == pipeline.producers["wsa1"].produced
    assert pipeline.balanced()
    assert (sim.captures - 1) * 3 <= len(items) <= sim.captures * 3
    first = items[0]
    assert first.topic == "wsa1.iq" and first.unit == "counts"
    assert first.value.dtype == np.complex64 and first.value.shape == (128,)
    ring = sim.ring()
    expected = ring.iq[:128, 0] + 1j * ring.iq[:128, 1]
    np.testing.assert_array_equal(first.value, expected.astype(np.complex64))
    for m in items:
        meta = m.meta
        assert meta["rf_freq"] == 915e6
        assert meta["bandwidth"] == 125e6 / 8
        assert meta["gain"] == (10.0, 4.0)
        assert meta["reflevel"] == -20.0 - 4
        assert meta["spp"] == 128 and meta["decimation"] == 8
        assert meta["valid"] and meta["ref_lock"] and not meta["sample_loss"]
        assert meta["gap"] == 0
        assert abs(m.device_time - m.t_ns) < 60e9  # device clock is real UTC, kept apart
    counts = [m.meta["packet_count"] for m in items]
    assert counts == [i % 16 for i in range(len(items))]
    assert dev.gaps == 0 and not dev.bad_packets
    # the settings were applied as configured, in the documented order
    keys = received_after(sim, 0)
    assert keys[:4] == ["idn", "rst", "error", "lock_request"]
    assert keys[4:13] == ["if_gain", "freq", "rf_gain", "shift", "decimation", "spp", "ppb",
                          "error", "block_data"]
    assert ":FREQ:CENTER 915000000" in [r.text for r in sim.commands]


def test_stream_mode_int16_and_stop_sends_stream_stop(sim: WSA4000Simulator,
                                                      pipeline: Pipeline) -> None:
    sim.stream_rate = 2000
    dev = pipeline.add_device(device(sim, mode="stream", iq_format="int16", stream_id=9))
    sink = pipeline.add_endpoint(Collector("collect"), subscribe=["wsa1"])
    pipeline.start()
    wait_for(lambda: len(sink.items) >= 40, 10, message="40 streamed packets")
    assert pipeline.stop(5.0)
    assert sink.items[0].value.dtype == np.int16 and sink.items[0].value.shape == (128, 2)
    assert [m.meta["packet_count"] for m in sink.items] == \
        [i % 16 for i in range(len(sink.items))]
    assert sink.items[0].meta["stream_start_id"] == 9
    times = [m.device_time for m in sink.items]
    assert np.all(np.diff(times) == 128 * 8)  # ns: 128 samples at 125 MSa/s
    assert dev.gaps == 0
    wait_for(lambda: "stream_stop" in received_after(sim, 0), 5,
             message="driver stopped the stream on close")
    assert "stream_start" in received_after(sim, 0)


def test_killed_simulator_counts_error_reconnects_and_reapplies_settings(
        sim: WSA4000Simulator, pipeline: Pipeline) -> None:
    sim.stream_rate = 2000
    dev = pipeline.add_device(device(sim, mode="stream", freq=1.2e9, spp=256))
    sink = pipeline.add_endpoint(Collector("collect"), subscribe=["wsa1.iq"])
    pipeline.start()
    wait_for(lambda: len(sink.items) >= 20, 10, message="data before the kill")
    before_cmds = len(sim.commands)
    sim.stop()
    stats = pipeline.producers["wsa1"]
    wait_for(lambda: stats.errors >= 2, 10, message="lost connection and a refused reconnect")
    assert dev.last_error
    seen = len(sink.items)
    sim.start()  # same ports
    wait_for(lambda: len(sink.items) >= seen + 20, 10, message="data resumed after restart")
    assert pipeline.stop(5.0)
    assert dev.connects >= 3
    again = received_after(sim, before_cmds)
    for key in ("idn", "rst", "lock_request", "if_gain", "freq", "rf_gain", "shift",
                "decimation", "spp", "ppb", "stream_start"):
        assert key in again, key
    texts = [r.text for r in sim.commands[before_cmds:]]
    assert ":FREQ:CENTER 1200000000" in texts and ":TRACE:SPP 256" in texts
    assert all(m.meta["rf_freq"] == 1.2e9 for m in sink.items)
    assert pipeline.balanced()


def test_packet_count_gaps_are_counted_and_flagged(pipeline: Pipeline) -> None:
    with WSA4000Simulator(control_port=0, data_port=0, stream_rate=3000, drop_every=5,
                          ring_samples=1024) as sim:
        dev = pipeline.add_device(device(sim, mode="stream"))
        sink = pipeline.add_endpoint(Collector("collect"), subscribe=["wsa1.iq"])
        pipeline.start()
        wait_for(lambda: len(sink.items) >= 30, 10, message="30 packets")
        assert pipeline.stop(5.0)
    items = sink.items
    gapped = [i for i, m in enumerate(items) if m.meta["gap"]]
    assert gapped and all(items[i].meta["gap"] == 1 for i in gapped)
    assert all(items[i - 1].meta["sample_loss"] for i in gapped)
    assert dev.gaps == len(gapped) == dev.bad_packets["count_gap"]
    assert dev.missing_packets == len(gapped)
    # every 5th packet lost: 4 delivered between gaps
    assert np.all(np.diff(gapped) == 4)


def test_garbage_on_the_data_socket_is_counted_and_data_continues(
        sim: WSA4000Simulator, pipeline: Pipeline) -> None:
    dev = pipeline.add_device(device(sim, ppb=2, rate=50))
    sink = pipeline.add_endpoint(Collector("collect"), subscribe=["wsa1.iq"])
    pipeline.start()
    wait_for(lambda: len(sink.items) >= 4, 10, message="first captures")
    junk = bytes(range(0x20, 0x80)) * 3
    assert sim.inject_data(junk)
    n = len(sink.items)
    wait_for(lambda: len(sink.items) >= n + 6, 10, message="captures after garbage")
    wait_for(lambda: dev.bad_packets["skipped_bytes"] == len(junk), 5,
             message="garbage counted")
    assert pipeline.stop(5.0)
    assert dev.bad_packets["resyncs"] == 1
    assert pipeline.producers["wsa1"].errors >= 1
    assert dev.state.value == "stopped" and dev.connects == 1


def test_lock_held_by_another_client_is_retried_until_released(
        sim: WSA4000Simulator, pipeline: Pipeline) -> None:
    other = socket.create_connection(("127.0.0.1", sim.control_port), timeout=5)
    other.sendall(b":SYSTEM:LOCK:REQUEST? ACQ\n")
    assert other.makefile("rb").readline().strip() == b"1"
    pipeline.add_device(device(sim, ppb=1, rate=100))
    sink = pipeline.add_endpoint(Collector("collect"), subscribe=["wsa1.iq"])
    pipeline.start()
    stats = pipeline.producers["wsa1"]
    wait_for(lambda: stats.errors >= 2, 10, message="lock refused twice")
    assert "acquisition lock" in pipeline.devices["wsa1"].last_error
    assert not sink.items
    other.close()
    wait_for(lambda: len(sink.items) >= 3, 10, message="data once the lock was free")


def test_something_that_is_not_a_wsa_is_rejected_with_a_clear_error(
        pipeline: Pipeline) -> None:
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            with conn:
                conn.recv(100)
                conn.sendall(b"Keysight,N9020A,MY1234,A.1\n")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        dev = pipeline.add_device(WSA4000Device("wsa1", host="127.0.0.1", control_port=port,
                                                data_port=port, **FAST))
        pipeline.start()
        wait_for(lambda: "is not a WSA4000" in dev.last_error, 10, message="idn rejected")
        assert pipeline.stop(5.0)
    finally:
        stop.set()
        t.join(5)
        srv.close()


@pytest.mark.parametrize("opts,key,text", [
    (dict(freq=2.40005e9), "freq", "multiple of 100 kHz"),
    (dict(spp=1000), "spp", "multiple of 16"),
    (dict(decimation=2), "decimation", "1 (off) or 4..1023"),
    (dict(rf_gain="loud"), "rf_gain", "HIGH"),
    (dict(mode="sweep"), "mode", "block"),
])
def test_bad_options_give_one_line_messages(opts: dict, key: str, text: str) -> None:
    with pytest.raises(OptionError) as info:
        WSA4000Device("wsa1", host="127.0.0.1", **opts)
    assert info.value.key == key and text in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(OptionError, match="host"):
        WSA4000Device("wsa1")


def test_stop_is_prompt_while_waiting_between_captures(sim: WSA4000Simulator) -> None:
    p = Pipeline()
    p.add_device(device(sim, rate=0.2))  # one capture every 5 s
    sink = p.add_endpoint(Collector("collect"), subscribe=["wsa1.iq"])
    p.start()
    try:
        wait_for(lambda: len(sink.items) >= 1, 10, message="first capture")
    finally:
        t0 = time.monotonic()
        assert p.stop(5.0)
    assert time.monotonic() - t0 < 2.0


def test_block_with_a_lost_packet_still_completes_so_the_next_capture_is_requested() -> None:
    """A count gap inside a block (a packet dropped as garbage) must count the lost packets
    against the block; otherwise the block never completes, no capture is requested and the
    driver idles until the data timeout forces a reconnect."""
    from radlogger.devices.wsa4000.vrt import encode_data
    from radlogger.devices.wsa4000.vrtparser import VRTParser

    class Outlet:
        def __init__(self) -> None:
            self.items: list[Any] = []

        def push(self, m: Any) -> bool:
            self.items.append(m)
            return True

        def push_many(self, ms: list[Any]) -> int:  # the driver pushes one read at a time
            self.items.extend(ms)
            return len(ms)

    dev = WSA4000Device("wsa1", host="127.0.0.1", spp=128, ppb=3)
    dev.outlet = Outlet()
    dev._remaining = 3  # as poll() sets it when it requests a capture of ppb = 3
    iq = np.zeros((128, 2), np.int16)
    packets = VRTParser().feed(encode_data(iq, 4, 1, 0) + encode_data(iq, 6, 1, 0))
    dev._handle(packets)  # count 5 was lost
    assert len(dev.outlet.items) == 2 and dev.missing_packets == 1
    assert dev.outlet.items[1].meta["gap"] == 1
    assert dev._remaining == 0


def test_partial_packet_held_at_stop_is_accounted_for(sim: WSA4000Simulator) -> None:
    """Bytes of a packet cut off by the stop were dropped uncounted (the parser was only
    reset at a next open); every received byte must end up parsed, skipped or discarded.
    Driven by hand (no thread) so the partial packet is read deterministically."""
    from radlogger.devices.wsa4000.vrt import encode_data

    class Outlet:
        def push(self, m: Any) -> bool:
            return True

        def push_many(self, ms: list[Any]) -> int:
            return len(ms)

    dev = device(sim, ppb=1, rate=0.1)
    dev.outlet = Outlet()
    dev.open()
    try:
        wait_for(lambda: (dev.poll(), dev.packets >= 1)[1], 10, message="first capture")
        half = encode_data(np.zeros((128, 2), np.int16), 1, 1, 0)[:100]
        assert sim.inject_data(half)
        dev._remaining = 1  # keep reading the data socket without asking for a capture
        wait_for(lambda: (dev.poll(), dev.parser.pending == len(half))[1], 5,
                 message="partial packet held")
        assert dev.stop(1.0)
    finally:
        dev.close()
    assert dev.parser.pending == 0
    assert dev.bad_packets["discarded_bytes"] == len(half)
    assert dev.bad_packets["skipped_bytes"] == 0
