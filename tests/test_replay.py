"""The replay device: a recorded store played back into a pipeline."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from test_storage_helpers import (
    STORES,
    T0,
    assert_same,
    counter_measurements,
    every_measurement,
    make_store,
    store_params,
)

from conftest import Collector, wait_for
from radlogger.device import DeviceState
from radlogger.devices.replay import ReplayDevice
from radlogger.endpoints.storage.sqlite import SQLiteEndpoint
from radlogger.options import OptionError
from radlogger.pipeline import Pipeline
from radlogger.store import reader


def _record(store, directory: Path, data) -> Path:  # type: ignore[no-untyped-def]
    endpoint = make_store(store, directory)
    endpoint.write_all(data)
    return endpoint.path


def _play(pipeline: Pipeline, path: Path, subscribe: str = "*", **options) -> tuple:  # type: ignore[no-untyped-def]
    device = pipeline.add_device(ReplayDevice("replay", path=str(path), **options))
    sink = pipeline.add_endpoint(Collector("sink"), subscribe=[subscribe])
    pipeline.start()
    wait_for(lambda: device.state is DeviceState.FINISHED, message="replay reached the end")
    return device, sink


@store_params
def test_replays_everything_as_recorded(store, tmp_path: Path, pipeline: Pipeline) -> None:
    recorded = every_measurement()
    path = _record(store, tmp_path, recorded)
    device, sink = _play(pipeline, path, speed=0)
    assert pipeline.stop(5.0) and pipeline.balanced()
    # source becomes the replay device (accounting is per producer); seq is renumbered
    assert_same(recorded, sink.snapshot(), source="replay", seq=False)
    assert [m.seq for m in sink.snapshot()] == list(range(len(recorded)))
    assert device.emitted == len(recorded)


def test_rename_prefix_and_filters(tmp_path: Path, pipeline: Pipeline) -> None:
    data = [m for pair in zip(counter_measurements(50, "wsa1.iq"),
                              counter_measurements(50, "pico3.pulses"), strict=True)
            for m in pair]
    path = _record(STORES[4], tmp_path, data)
    _, sink = _play(pipeline, path, speed=0, topics="wsa1, pico3", rename="wsa1=wsa9",
                    prefix="again", since=str((T0 + 10 * 1_000_000) / 1e9),
                    until=str((T0 + 20 * 1_000_000) / 1e9))
    pipeline.stop(5.0)
    got = [(m.topic, m.value) for m in sink.snapshot()]
    assert got == [(t, i) for i in range(10, 20) for t in ("again.wsa9.iq", "again.pico3.pulses")]


def test_replay_into_another_store_reprocesses_a_session(tmp_path: Path,
                                                        pipeline: Pipeline) -> None:
    recorded = every_measurement()
    path = _record(STORES[0], tmp_path / "a", recorded)
    pipeline.add_device(ReplayDevice("replay", path=str(path), speed=0))
    out = pipeline.add_endpoint(SQLiteEndpoint("out", path=str(tmp_path / "b.sqlite")),
                                subscribe=["dev0", "dev1"])
    pipeline.start()
    wait_for(lambda: out.stats.handled == len(recorded))
    pipeline.stop(5.0)
    assert_same(recorded, list(reader.read(tmp_path / "b.sqlite")), source="replay", seq=False)


def test_original_timing_scaled_by_speed(tmp_path: Path, pipeline: Pipeline) -> None:
    """10 measurements 50 ms apart played at speed 2 cannot finish before 225 ms; each one
    is published no earlier than its scaled offset from the first."""
    path = _record(STORES[2], tmp_path, counter_measurements(10, step_ns=50_000_000))
    arrivals: list[float] = []

    class Clock(Collector):
        def handle_batch(self, batch):  # type: ignore[no-untyped-def]
            arrivals.extend([time.monotonic()] * len(batch))
            super().handle_batch(batch)

    device = pipeline.add_device(ReplayDevice("replay", path=str(path), speed=2,
                                              timestamps="now"))
    sink = pipeline.add_endpoint(Clock("sink"), subscribe=["*"])
    start = time.monotonic()
    pipeline.start()
    wait_for(lambda: device.state is DeviceState.FINISHED)
    wait_for(lambda: len(arrivals) == 10)
    pipeline.stop(5.0)
    for i, t in enumerate(arrivals):
        assert t - start >= i * 0.025 - 0.002, f"#{i} published early"
    got = sink.snapshot()
    assert [m.value for m in got] == list(range(10))
    assert all(abs(m.t_ns - time.time_ns()) < 60 * 10**9 for m in got)  # re-stamped: now


def test_a_missing_file_is_retried_not_fatal(tmp_path: Path, pipeline: Pipeline) -> None:
    device = pipeline.add_device(ReplayDevice("replay", path=str(tmp_path / "nope.csv"),
                                              backoff_initial=0.01, backoff_max=0.02))
    pipeline.start()
    wait_for(lambda: pipeline.producers["replay"].errors >= 2)
    assert "no store at" in device.last_error
    counter = counter_measurements(5)
    make_store(STORES[0], tmp_path, path=str(tmp_path / "nope.csv")).write_all(counter)
    wait_for(lambda: device.state is DeviceState.FINISHED)
    assert device.emitted == 5
    pipeline.stop(5.0)


def test_bad_options_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(OptionError, match="rename = 'wsa1': expected old=new"):
        ReplayDevice("r", path="x.csv", rename="wsa1")
    with pytest.raises(OptionError, match="since = 'yesterday'"):
        ReplayDevice("r", path="x.csv", since="yesterday")
    with pytest.raises(OptionError, match="speed"):
        ReplayDevice("r", path="x.csv", speed=-1)


def test_topics_lists_what_will_be_published(tmp_path: Path) -> None:
    path = _record(STORES[5], tmp_path, counter_measurements(3, "wsa1.iq"))
    assert ReplayDevice("r", path=str(path), prefix="p").topics() == ["p.wsa1.iq"]
