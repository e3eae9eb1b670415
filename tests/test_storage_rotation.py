"""Rotation by size and by time: the right files, nothing lost, nothing twice."""

from __future__ import annotations

import csv
import errno
import gzip
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from test_storage_helpers import T0, counter_measurements, make_store, store_params

from radlogger.endpoints.storage.csv import CSVEndpoint
from radlogger.endpoints.storage.jsonl import JSONLEndpoint
from radlogger.measurement import Measurement
from radlogger.store import reader
from radlogger.store.rotation import rotated_files

NAME_RE = re.compile(r"^run-(\d{6})-(\d{8}T\d{6}Z)\.")


def _stamp(t_ns: int) -> str:
    return datetime.fromtimestamp(t_ns / 1e9, UTC).strftime("%Y%m%dT%H%M%SZ")


def test_csv_size_rotation_is_exact(tmp_path: Path) -> None:
    """A file ends with the measurement that brings its data to rotate_bytes."""
    data = counter_measurements(1000)
    limit = 4000
    endpoint = CSVEndpoint("c", path=str(tmp_path / "run.csv"), rotate_bytes=limit,
                           flush_every=64)
    endpoint.write_all(data)
    files = rotated_files(endpoint.path)
    assert files == endpoint.files and len(files) > 5
    assert not endpoint.path.exists()  # a rotating store writes numbered files only
    seen: list[int] = []
    for i, f in enumerate(files):
        assert int(NAME_RE.match(f.name).group(1)) == i + 1  # type: ignore[union-attr]
        lines = f.read_bytes().splitlines(keepends=True)
        assert lines[0] == CSVEndpoint.header
        sizes = [len(line) for line in lines[1:]]
        if f is not files[-1]:
            assert sum(sizes) >= limit > sum(sizes[:-1])
        else:
            assert sum(sizes) < limit + max(sizes)
        with open(f, newline="") as fh:
            seen.extend(int(r["value"]) for r in csv.DictReader(fh))
    assert seen == list(range(1000))


@store_params
def test_size_rotation_loses_and_repeats_nothing(store, tmp_path: Path) -> None:
    endpoint = make_store(store, tmp_path, rotate_bytes=3000, flush_every=50)
    endpoint.write_all(counter_measurements(1000))
    assert len(endpoint.files) >= 3
    assert endpoint.files == rotated_files(endpoint.path)
    assert [m.value for m in reader.read(endpoint.path)] == list(range(1000))
    per_file = [len(list(reader.read(f))) for f in endpoint.files]
    assert sum(per_file) == 1000 and all(per_file)


@store_params
def test_time_rotation_one_file_per_interval(store, tmp_path: Path) -> None:
    """rotate_interval follows t_ns on epoch-aligned boundaries: 10 s files here."""
    step = 250_000_000  # 4 measurements per second, starting on a 10 s boundary
    data = counter_measurements(150, step_ns=step)  # 37.5 s -> 4 files
    endpoint = make_store(store, tmp_path, rotate_interval=10, flush_every=7)
    endpoint.write_all(data[:77])
    endpoint2 = make_store(store, tmp_path, rotate_interval=10, flush_every=7)
    endpoint2.write_all(data[77:])  # a restart in the middle of an interval: a new file
    files = rotated_files(endpoint.path)
    assert files == endpoint.files + endpoint2.files
    assert len(files) == 5
    got = []
    for f in files:
        ms = list(reader.read(f))
        buckets = {m.t_ns // 10**10 for m in ms}
        assert len(buckets) == 1, f"{f.name} spans {buckets}"
        assert NAME_RE.match(f.name).group(2) == _stamp(ms[0].t_ns)  # type: ignore[union-attr]
        got.extend(m.value for m in ms)
    assert got == list(range(150))
    assert [len(list(reader.read(f))) for f in files] == [40, 37, 3, 40, 30]
    assert [m.value for m in reader.read(endpoint.path)] == list(range(150))


def test_gzip_rotation_files_are_plain_gzip(tmp_path: Path) -> None:
    endpoint = JSONLEndpoint("j", path=str(tmp_path / "run.jsonl"), gzip=True,
                             rotate_bytes=2000, flush_every=10)
    endpoint.write_all(counter_measurements(300))
    assert all(f.name.endswith(".jsonl.gz") for f in endpoint.files)
    total = 0
    for f in endpoint.files:
        with gzip.open(f, "rt") as fh:  # many members per file: one per flush
            total += sum(1 for _ in fh)
    assert total == 300
    assert [m.value for m in reader.read(tmp_path / "run.jsonl")] == list(range(300))


def test_time_rotation_with_a_late_measurement_stays_in_the_current_file(tmp_path: Path) -> None:
    """Files never reopen: a measurement older than the current interval goes to the
    current file (data from several sources is only roughly in time order)."""
    data = counter_measurements(4)
    for m, seconds in zip(data, (0, 12, 15, 3), strict=True):
        m.t_ns = T0 + seconds * 10**9
    endpoint = CSVEndpoint("c", path=str(tmp_path / "run.csv"), rotate_interval=10)
    endpoint.write_all(data)
    assert [[m.value for m in reader.read(f)] for f in endpoint.files] == [[0], [1, 2, 3]]


def test_time_rotation_held_up_by_a_failing_disk_still_happens(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rotation due while the disk fails: what was kept goes into the open file when the
    disk recovers, which is then closed; the rest of the new interval gets a file of its own
    (before, the old file stayed open for the whole next interval)."""
    hour = 3600 * 10**9
    endpoint = JSONLEndpoint("j", path=str(tmp_path / "run.jsonl"), rotate_interval=3600,
                             flush_every=1, flush_interval=0, retry_initial=0, retry_max=0)
    write = endpoint._write_pending
    failing = [False]

    def flaky_write() -> None:
        if failing[0]:
            raise OSError(errno.ENOSPC, "No space left on device")
        write()

    monkeypatch.setattr(endpoint, "_write_pending", flaky_write)
    data = counter_measurements(7)
    for m, t in zip(data, (0, 1, hour, hour + 1, hour + 2, hour + 3, hour + 4), strict=True):
        m.t_ns = T0 + t
    endpoint.open()

    def feed(m: Measurement) -> None:
        endpoint.stats.received += 1
        endpoint.process_batch([m])

    feed(data[0])
    failing[0] = True
    feed(data[1])  # kept
    feed(data[2])  # a new hour: the rotation cannot flush, it waits
    failing[0] = False
    for m in data[3:]:
        feed(m)
    endpoint.flush()
    endpoint.close()
    assert endpoint.disk_errors["ENOSPC"] >= 2
    per_file = [[m.value for m in reader.read(f)] for f in endpoint.files]
    assert per_file == [[0, 1, 2, 3], [4, 5, 6]]
    assert rotated_files(endpoint.path) == endpoint.files
    assert endpoint.stats.handled == 7 and endpoint.stats.dropped == 0
