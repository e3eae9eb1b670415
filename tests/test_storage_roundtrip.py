"""Every kind of value through every store and back through the one reader."""

from __future__ import annotations

import csv
import gzip
import json
import logging
import sqlite3
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
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

from conftest import wait_for
from radlogger.devices.synthetic import SyntheticDevice
from radlogger.endpoints.storage.base import StorageError
from radlogger.measurement import Measurement
from radlogger.pipeline import Pipeline
from radlogger.store import reader


@store_params
def test_every_type_round_trips(store, tmp_path: Path) -> None:
    written = every_measurement()
    endpoint = make_store(store, tmp_path)
    assert endpoint.write_all(written) == len(written)
    assert endpoint.stats.dropped == 0 and endpoint.stats.handled == len(written)
    assert_same(written, list(reader.read(endpoint.path)))


@store_params
def test_through_a_pipeline_in_order(store, tmp_path: Path, pipeline: Pipeline) -> None:
    n = 3000
    pipeline.add_device(SyntheticDevice("syn", rate=0, count=n, pattern="counter", chunk=97))
    endpoint = pipeline.add_endpoint(make_store(store, tmp_path, flush_every=250),
                                     subscribe=["syn"])
    pipeline.start()
    wait_for(lambda: endpoint.stats.handled == n, message="store handled everything")
    assert pipeline.stop(10.0)
    assert pipeline.balanced()
    back = list(reader.read(endpoint.path))
    assert [m.value for m in back] == list(range(n))
    assert [m.seq for m in back] == list(range(n))
    assert {m.topic for m in back} == {"syn.value"}
    assert endpoint.flushes >= n // 250
    own = endpoint.counters()
    assert own["rows"] == n and own["bytes"] > 0 and own["pending"] == 0


@store_params
def test_filters_by_topic_and_time(store, tmp_path: Path) -> None:
    a = counter_measurements(100, "wsa1.power")
    b = counter_measurements(100, "pico3.pulses")
    c = counter_measurements(100, "wsa1.iq.sub")
    mixed = [m for trio in zip(a, b, c, strict=True) for m in trio]
    endpoint = make_store(store, tmp_path)
    endpoint.write_all(mixed)
    path = endpoint.path

    def got(**kw) -> list[tuple[str, int]]:  # type: ignore[no-untyped-def]
        return [(m.topic, m.value) for m in reader.read(path, **kw)]

    assert got(topics=["wsa1.power"]) == [(m.topic, m.value) for m in a]
    assert got(topics=["wsa1"]) == [(m.topic, m.value) for m in mixed if m.topic != "pico3.pulses"]
    assert got(topics=["*.pulses"]) == [(m.topic, m.value) for m in b]
    since, until = T0 + 10 * 1_000_000, T0 + 20 * 1_000_000
    assert got(topics=["pico3"], since_ns=since, until_ns=until) == \
        [("pico3.pulses", i) for i in range(10, 20)]
    assert got(since_ns=T0 + 99 * 1_000_000) == [(m.topic, 99) for m in (a[99], b[99], c[99])]
    assert got(topics=["nothing"]) == []
    assert sorted(reader.topics(path)) == ["pico3.pulses", "wsa1.iq.sub", "wsa1.power"]


@store_params
def test_a_second_run_appends(store, tmp_path: Path) -> None:
    first, second = counter_measurements(50), counter_measurements(50, start=50)
    make_store(store, tmp_path).write_all(first)
    endpoint = make_store(store, tmp_path)
    endpoint.write_all(second)
    assert [m.value for m in reader.read(endpoint.path)] == list(range(100))


@store_params
def test_values_the_format_cannot_hold_are_counted_not_fatal(store, tmp_path: Path,
                                                           caplog) -> None:
    good = counter_measurements(5)
    bad = [Measurement("dev", "dev.value", {"a": 1}, T0, seq=90),
           Measurement("dev", "dev.value", np.array(["text"]), T0, seq=91),
           Measurement("dev", "dev.value", 2 ** 70, T0, seq=92),
           Measurement("dev", "dev.value", 1, T0, meta={"x": object()}, seq=93),
           Measurement("dev", "dev.value", 1, T0, device_time="noon", seq=94)]
    endpoint = make_store(store, tmp_path)
    with caplog.at_level(logging.ERROR), pytest.raises(StorageError, match="5 of 10"):
        endpoint.write_all(good[:2] + bad + good[2:])
    assert endpoint.stats.reasons() == {"endpoint_failed": 5}
    assert endpoint.stats.errors == 5
    assert [m.value for m in reader.read(endpoint.path)] == [0, 1, 2, 3, 4]
    assert "cannot be stored" in caplog.text


def test_files_are_readable_by_standard_tools(tmp_path: Path) -> None:
    """What a user without radloggerd sees: csv, gzip, json, sqlite3 and h5py."""
    data = [Measurement("pico3", "pico3.rate", float(i), T0 + i, "Hz", i * 10, {"k": i}, i)
            for i in range(20)]
    arrays = [Measurement("wsa1", "wsa1.spectrum", np.full(8, i, np.float32), T0 + i, "dBm",
                          None, None, i) for i in range(5)]
    paths = {}
    for sid, cls, name, extra in STORES:
        endpoint = cls(sid, {"path": str(tmp_path / sid / name), **extra})
        endpoint.write_all(data + arrays)
        paths[sid] = endpoint.path
    with open(paths["csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["value"]) for r in rows[:20]] == [float(i) for i in range(20)]
    assert rows[0]["type"] == "float" and rows[0]["unit"] == "Hz"
    assert json.loads(rows[3]["meta"]) == {"k": 3} and rows[3]["device_time"] == "30"
    assert rows[20]["type"] == "<f4[8]"
    with gzip.open(paths["csv.gz"], "rt", newline="") as f:
        assert len(list(csv.DictReader(f))) == 25
    with open(paths["jsonl"]) as f:
        records = [json.loads(line) for line in f]
    assert records[5]["value"] == 5.0 and records[5]["meta"] == {"k": 5}
    with gzip.open(paths["jsonl.gz"], "rt") as f:
        assert sum(1 for _ in f) == 25
    con = sqlite3.connect(paths["sqlite"])
    rows = con.execute("SELECT topic, value, unit FROM measurement_view WHERE topic = ? "
                       "ORDER BY t_ns", ("pico3.rate",)).fetchall()
    assert rows[7] == ("pico3.rate", 7.0, "Hz")
    blob, dtype, shape = con.execute("SELECT value, dtype, shape FROM measurement_view WHERE "
                                     "topic = 'wsa1.spectrum' ORDER BY id DESC").fetchone()
    assert np.frombuffer(blob, dtype).reshape([int(s) for s in shape.split(",")]).tolist() == \
        [4.0] * 8
    plan = " ".join(r[-1] for r in con.execute(
        "EXPLAIN QUERY PLAN SELECT * FROM measurements WHERE series = 1 AND t_ns > 5"))
    assert "measurements_series_time" in plan
    con.close()
    for sid in ("hdf5", "hdf5-noswmr"):
        with h5py.File(paths[sid], "r") as f:
            seg = f["wsa1.spectrum/0"]
            assert seg["value"].shape == (5, 8) and seg["value"][4].tolist() == [4.0] * 8
            assert seg["value"].compression == "gzip" and seg["value"].chunks is not None
            assert seg.attrs["unit"] == "dBm" and seg.attrs["source"] == "wsa1"
            assert f["pico3.rate/0/value"][:].tolist() == [float(i) for i in range(20)]
            assert f["pico3.rate/0/device_time"][3] == 30


def test_reader_reports_what_is_not_a_store(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(reader.StoreError, match="not a radlogger store"):
        list(reader.read(tmp_path / "notes.txt"))
    with pytest.raises(reader.StoreError, match="no store at"):
        list(reader.read(tmp_path / "missing.csv"))
    with pytest.raises(reader.StoreError, match="directory"):
        list(reader.read(tmp_path))


def test_timer_flushes_a_quiet_store(tmp_path: Path, pipeline: Pipeline) -> None:
    """No flush_every: data still reaches the file within flush_interval (timer thread)."""
    pipeline.add_device(SyntheticDevice("syn", rate=0, count=7, pattern="counter"))
    endpoint = pipeline.add_endpoint(
        make_store(STORES[0], tmp_path, flush_every=0, flush_interval=0.05), subscribe=["syn"])
    pipeline.start()
    wait_for(lambda: endpoint.path.exists() and
             endpoint.path.read_text().count("\n") == 8, timeout=10,
             message="7 rows + header flushed by the timer while the pipeline runs")
    assert endpoint.flushes >= 1
    pipeline.stop(5.0)


def test_hdf5_is_readable_while_being_written(tmp_path: Path, pipeline: Pipeline) -> None:
    """SWMR: another reader (our reader, plot, export) opens the file mid-run."""
    pipeline.add_device(SyntheticDevice("syn", rate=0, count=500, pattern="counter",
                                        array_size=16))
    endpoint = pipeline.add_endpoint(make_store(STORES[5], tmp_path, flush_every=100),
                                     subscribe=["syn"])
    pipeline.start()
    wait_for(lambda: endpoint.stats.handled == 500)
    live = list(reader.read(endpoint.path))
    assert len(live) == 500 and live[-1].value[0] == 499.0
    pipeline.stop(5.0)


def test_hdf5_new_topic_while_another_process_reads(tmp_path: Path) -> None:
    """A live SWMR reader (plot, export in another process) must not block the writer when
    a new topic needs new datasets."""
    endpoint = make_store(STORES[5], tmp_path, flush_every=10)
    endpoint.open()
    endpoint.handle_batch(counter_measurements(10, "a.v"))
    code = ("import h5py, sys\n"
            f"f = h5py.File({str(endpoint.path)!r}, 'r', swmr=True)\n"
            "print(sorted(f), flush=True)\n"
            "sys.stdin.readline()\n"
            "ds = f['a.v/0/value']; ds.refresh(); print(len(ds), flush=True)\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "['a.v']"
        endpoint.handle_batch(counter_measurements(10, "b.v"))
        endpoint.handle_batch(counter_measurements(10, "a.v", start=10))
        assert not endpoint.disk_errors and endpoint.flushes == 3
        out, err = child.communicate("\n", timeout=30)
        assert child.returncode == 0 and out.strip() == "20", err
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        endpoint.close()
    assert [m.topic for m in reader.read(endpoint.path)] == ["a.v"] * 10 + ["b.v"] * 10 + \
        ["a.v"] * 10


def test_many_bad_values_restart_the_endpoint_without_deadlock(tmp_path: Path,
                                                               pipeline: Pipeline) -> None:
    """max_errors bad values in a row make the base restart the store (close + open)."""
    endpoint = pipeline.add_endpoint(make_store(STORES[4], tmp_path, max_errors=3),
                                     subscribe=["dev"])
    outlet = pipeline.outlet("dev")
    pipeline.start()
    batch = [Measurement("dev", "dev.value", {"bad": i}, T0 + i) for i in range(7)] + \
        counter_measurements(5, start=100)
    for m in batch:
        outlet.push(m)
    wait_for(lambda: endpoint.stats.handled + endpoint.stats.dropped == 12, timeout=10)
    assert pipeline.stop(5.0) and pipeline.balanced()
    assert endpoint.stats.restarts == 2 and endpoint.stats.reasons() == {"endpoint_failed": 7}
    assert [m.value for m in reader.read(endpoint.path)] == list(range(100, 105))


def test_csv_reads_back_arrays_beyond_the_csv_field_limit(tmp_path: Path) -> None:
    """csv refuses fields over 128 KiB by default; the CSV store writes any array, so its
    reader must read such a field back (a 32k-sample complex64 block is ~350 KB of base64)."""
    big = (np.arange(32 * 1024) * (1 - 1j)).astype(np.complex64)
    data = [Measurement("dev", "dev.iq", big, T0, "V", None, {"n": 1}, 0)]
    path = tmp_path / "big.csv"
    assert make_store(STORES[0], tmp_path, path=str(path)).write_all(data) == 1
    assert_same(data, list(reader.read(path)))
