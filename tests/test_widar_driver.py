"""The WIDAR input stage over real UDP: simulator -> driver -> pipeline; record and replay."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from conftest import Collector, free_port, wait_for
from radlogger.device import DeviceState
from radlogger.devices.widar import frames as F
from radlogger.devices.widar.driver import WidarDevice
from radlogger.devices.widar.recording import read_frames, recording_files
from radlogger.devices.widar.replay import WidarReplayDevice, replay_udp
from radlogger.devices.widar.simulator import WidarSimulator, cli
from radlogger.measurement import Measurement
from radlogger.pipeline import Pipeline

GEOMETRY = {"lags": 64, "lags_per_frame": 16}


def key_of(m: Measurement) -> tuple:
    meta = m.meta or {}
    return (meta["station_x"], meta["station_y"], meta["baseband"], meta["subband"],
            meta["polarization"], meta["phase_bin"], m.device_time)


def sim(**kw: object) -> WidarSimulator:
    opts: dict = {"baselines": 2, "start_ns": 1_700_000_000_000_000_000, "seed": 3,
                  **GEOMETRY, **kw}
    return WidarSimulator(**opts)


def start_device(pipeline: Pipeline, **kw: object) -> tuple[WidarDevice, Collector]:
    dev = pipeline.add_device(WidarDevice("widar", port=free_port(socket.SOCK_DGRAM),
                                          timeout=0.2, **GEOMETRY, **kw))
    sink = pipeline.add_endpoint(Collector("sink"), subscribe=["widar.lagset"])
    pipeline.start()
    wait_for(lambda: dev.state is DeviceState.RUNNING, message="device running")
    return dev, sink


def test_simulator_frames_become_the_right_lag_sets(pipeline: Pipeline) -> None:
    dev, sink = start_device(pipeline)
    s = sim()
    n_int = 10
    sent = s.send(("127.0.0.1", dev.bound_port), rate=20000,
                  frames=n_int * s.frames_per_integration)
    expected = {}
    for i in range(n_int):
        expected.update(s.truth(i))
    wait_for(lambda: len(sink.items) == len(expected), message="all lag sets")
    assert sent == dev.datagrams == 160
    for m in sink.items:
        assert m.topic == "widar.lagset" and m.value.dtype == np.complex64
        np.testing.assert_array_equal(m.value, expected[key_of(m)])
        assert m.meta["complete"] and m.meta["missing"] == []
        assert len(m.meta["dv_centre"]) == 4 and m.meta["dv_centre"].min() > 0
        assert abs(m.t_ns - time.time_ns()) < 60e9  # wall clock, kept apart from device time
    assert sorted(map(key_of, sink.items)) == sorted(expected)
    assert dev.bad_frames == {} and dev.rcvbuf_granted > 0 and dev.kernel_drops() == 0
    assert pipeline.stop(5.0) and pipeline.balanced()


def test_bad_frames_are_counted_per_reason_while_good_ones_flow(pipeline: Pipeline) -> None:
    dev, sink = start_device(pipeline)
    s = sim(corrupt=0.15, seed=11)
    n_int = 12
    total = n_int * s.frames_per_integration
    sent = s.send(("127.0.0.1", dev.bound_port), rate=20000, frames=total)
    wait_for(lambda: dev.datagrams == sent and not dev.assembler.pending,
             message="every datagram handled")
    wait_for(lambda: len(sink.items) == dev.lagsets)
    reasons = ("bad_sync", "bad_checksum", "truncated", "bad_length")
    assert {r: dev.bad_frames[r] for r in reasons} == {r: s.counts[r] for r in reasons}
    assert sum(dev.bad_frames.values()) > 0
    assert pipeline.producers["widar"].errors == sum(dev.bad_frames.values())
    truth = {}
    for i in range(n_int):
        truth.update(s.truth(i))
    complete = [m for m in sink.items if m.meta["complete"]]
    assert complete, "good frames must keep flowing"
    for m in sink.items:
        want = truth[key_of(m)].reshape(4, 16).copy()
        want[m.meta["missing"]] = 0
        np.testing.assert_array_equal(m.value, want.ravel())
    assert pipeline.stop(5.0) and pipeline.balanced()


def _lagsets(items: list[Measurement]) -> dict[tuple, Measurement]:
    out = {key_of(m): m for m in items}
    assert len(out) == len(items)
    return out


def test_record_then_replay_gives_the_same_lag_sets(tmp_path: Path) -> None:
    record = str(tmp_path / "rec" / "widar.pcap")
    live = Pipeline()
    try:
        dev, sink = start_device(live, record=record, record_max_mb=0.01)
        s = sim(disorder=5, duplicate=0.05, corrupt=0.05, seed=7)
        sent = s.send(("127.0.0.1", dev.bound_port), rate=20000,
                      frames=15 * s.frames_per_integration)
        wait_for(lambda: dev.datagrams == sent and not dev.assembler.pending)
        wait_for(lambda: len(sink.items) == dev.lagsets)
    finally:
        assert live.stop(5.0)
    files = recording_files(record)
    assert len(files) > 1, "the recording rotates by size"
    assert sum(1 for _ in read_frames(files)) == sent

    replay = Pipeline()
    try:
        rdev = replay.add_device(WidarReplayDevice("widar", path=record, timeout=0.2,
                                                   **GEOMETRY))
        rsink = replay.add_endpoint(Collector("sink"), subscribe=["widar.lagset"])
        replay.start()
        wait_for(lambda: rdev.state is DeviceState.FINISHED, message="replay finished")
        wait_for(lambda: len(rsink.items) == rdev.lagsets)
    finally:
        assert replay.stop(5.0) and replay.balanced()
    a, b = _lagsets(sink.items), _lagsets(rsink.items)
    assert a.keys() == b.keys()
    for k, m in a.items():
        np.testing.assert_array_equal(m.value, b[k].value)
        assert m.meta["missing"] == b[k].meta["missing"]
        np.testing.assert_array_equal(m.meta["dv_edge"], b[k].meta["dv_edge"])
    assert rdev.bad_frames == dev.bad_frames
    assert rdev.assembler.duplicates + rdev.assembler.late == \
        dev.assembler.duplicates + dev.assembler.late


def test_replay_restamps_to_wall_clock_and_to_udp(tmp_path: Path, pipeline: Pipeline) -> None:
    record = str(tmp_path / "one.pcap")
    s = sim(corrupt=0.1, seed=5)
    datagrams = list(s.datagrams(4))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(5.0)
        from radlogger.devices.widar.recording import RotatingRecorder

        rec = RotatingRecorder(record)
        width = max(len(d) for d in datagrams)
        buf = np.zeros((len(datagrams), width), np.uint8)
        for i, d in enumerate(datagrams):
            buf[i, :len(d)] = np.frombuffer(d, np.uint8)
        rec.write(buf, np.array([len(d) for d in datagrams]), np.arange(len(datagrams)))
        rec.close()
        before = time.time_ns()
        sent = replay_udp(rec.files[0], rx.getsockname(), rate=0, restamp=True)
        got = [rx.recv(65536) for _ in range(sent)]
    assert sent == len(datagrams) == len(got)
    offsets = set()
    bad = 0
    for orig, new in zip(datagrams, got, strict=True):
        try:
            f0, lags0 = F.decode_frame(orig)
        except F.BadFrame as exc:
            bad += 1
            try:
                F.decode_frame(new)
            except F.BadFrame as exc2:
                assert exc2.reason == exc.reason, "a corrupt frame stays corrupt"
            else:
                raise AssertionError("restamping healed a corrupt frame") from None
            continue
        f1, lags1 = F.decode_frame(new)  # checksum rewritten: still valid
        np.testing.assert_array_equal(lags0, lags1)
        offsets.add(f1["timestamp"] - f0["timestamp"])
        assert before - 1e9 < f1["timestamp"] < time.time_ns() + 60e9
    assert bad and len(offsets) == 1, "one offset for all: lag sets stay together"


def test_simulator_command_sends_frames() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(5.0)
        port = rx.getsockname()[1]
        result = CliRunner().invoke(cli, ["--port", str(port), "--frames", "12", "--rate", "0",
                                          "--baselines", "1-2,3-4", "--products", "AA",
                                          "--lags", "64", "--lags-per-frame", "16",
                                          "--seed", "1"])
        assert result.exit_code == 0, result.output
        frames = [F.decode_frame(rx.recv(65536)) for _ in range(12)]
    assert "sent 12 frames" in result.output
    assert {(f["station_x"], f["station_y"]) for f, _ in frames} == {(1, 2), (3, 4)}
    bad = CliRunner().invoke(cli, ["--lags", "100", "--lags-per-frame", "16"])
    assert bad.exit_code != 0 and "Traceback" not in bad.output


def test_port_in_use_is_a_counted_retried_error(pipeline: Pipeline) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        dev = pipeline.add_device(WidarDevice("widar", port=port, backoff_initial=0.01,
                                              backoff_max=0.05, **GEOMETRY))
        pipeline.start()
        wait_for(lambda: pipeline.producers["widar"].errors >= 2)
        assert f"127.0.0.1:{port}" in dev.last_error and "port" in dev.last_error
    assert pipeline.stop(5.0)


def test_replay_of_a_missing_recording_names_the_path(tmp_path: Path,
                                                      pipeline: Pipeline) -> None:
    dev = pipeline.add_device(WidarReplayDevice("r", path=str(tmp_path / "nope.pcap"),
                                                max_retries=1, backoff_initial=0.01))
    pipeline.start()
    wait_for(lambda: dev.state is DeviceState.FAILED)
    assert "nope.pcap" in dev.last_error
