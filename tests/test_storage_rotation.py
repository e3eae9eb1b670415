"""Rotation by size and by time: the right files, nothing lost, nothing twice."""

from __future__ import annotations

import csv
import gzip
import re
from datetime import UTC, datetime
from pathlib import Path

from test_storage_helpers import T0, counter_measurements, make_store, store_params

from endpoints.storage import reader
from endpoints.storage.base import rotated_files
from endpoints.storage.csv import CSVEndpoint
from endpoints.storage.jsonl import JSONLEndpoint

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
