"""Storage throughput: measurements/s (scalars) and MB/s (arrays) each store sustains with its
batching and flush policy, against the naive loops people write first:

* ``naive-csv``: ``csv.writer.writerow`` + ``file.flush()`` per measurement (the durability a
  logger needs: each row reaches the OS at once);
* ``buffered-csv``: ``csv.writer`` into a buffered file, no flush (fast, but a crash loses an
  unknown amount, and no types survive);
* ``naive-sqlite``: one ``INSERT`` + ``commit`` per measurement (default journal);
* ``naive-hdf5``: one ``resize`` + write + ``file.flush()`` per array.

The stores are driven the way the endpoint worker drives them (``handle_batch`` with batches
of 4096, default flush policy: every 1000 measurements), with ``write_all``.

Run: ``python -m pytest benchmarks/bench_storage.py --benchmark-enable --benchmark-only``;
``--benchmark-disable`` (the normal test run) runs each once on a tiny workload.
"""

from __future__ import annotations

import csv
import itertools
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from benchmarks import benchutil
from benchmarks.benchutil import scaled
from radlogger.endpoints.storage.cli import writer_for
from radlogger.measurement import Measurement

T0 = 1_714_564_800_000_000_000
ARRAY = 1024  # complex64 samples per measurement: 8 KiB, one WSA4000 packet at SPP 1024
STORES = {"csv": "x.csv", "csv.gz": "x.csv.gz", "jsonl": "x.jsonl", "sqlite": "x.sqlite",
          "hdf5": "x.h5"}
_counter = itertools.count()


def _scalars(n: int) -> list[Measurement]:
    return [Measurement("pico3", "pico3.rate", float(i), T0 + i * 1000, "Hz", None, None, i)
            for i in range(n)]


def _arrays(n: int) -> list[Measurement]:
    rng = np.random.default_rng(0)
    block = (rng.standard_normal((64, ARRAY)) + 1j * rng.standard_normal((64, ARRAY))
             ).astype(np.complex64)
    return [Measurement("wsa1", "wsa1.iq", block[i % 64], T0 + i * 1000, "", T0 + i, None, i)
            for i in range(n)]


def _fresh(directory: Path, name: str) -> Path:
    d = directory / f"round{next(_counter)}"
    d.mkdir()
    return d / name


def _rows(path: Path) -> int:
    """How many measurements a file holds (cheaply, without building Measurements)."""
    if path.suffix == ".sqlite":
        with sqlite3.connect(path) as con:
            return int(con.execute("SELECT COUNT(*) FROM measurements").fetchone()[0])
    if path.suffix == ".h5":
        with h5py.File(path, "r") as f:
            return sum(len(g["order"]) for t in f.values() for g in t.values())
    if path.suffix == ".gz":
        import gzip
        with gzip.open(path, "rb") as f:
            return sum(1 for _ in f) - (1 if ".csv" in path.name else 0)
    with open(path, "rb") as f:
        return sum(1 for _ in f) - (1 if path.suffix == ".csv" else 0)


def _store_run(kind: str, path: Path, data: list[Measurement]) -> int:
    writer = writer_for(kind.split(".")[0], path, gzip=kind.endswith(".gz"))
    writer.settings.update(flush_every=1000, flush_interval=1.0, flush_bytes=8 << 20)
    return writer.write_all(data)


@pytest.fixture(scope="module")
def workdir() -> Any:
    with tempfile.TemporaryDirectory(prefix="bench-storage-") as d:
        yield Path(d)


def _bench(benchmark: Any, fn: Any, data: list[Measurement], workdir: Path, name: str,
           nbytes: int) -> None:
    paths: list[Path] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        paths.append(_fresh(workdir, name))
        return (paths[-1], data), {}

    benchmark.pedantic(fn, setup=setup, rounds=1 if benchutil.QUICK else 3, iterations=1)
    got = _rows(paths[-1])
    assert got == len(data), f"{name}: {got} of {len(data)} measurements stored"
    seconds = benchmark.stats.stats.min if benchmark.stats else None
    benchmark.extra_info.update(measurements=len(data), bytes=nbytes)
    if seconds:
        benchmark.extra_info.update(per_s=len(data) / seconds, mb_per_s=nbytes / seconds / 1e6)


# -------------------------------------------------------------------- scalars
@pytest.mark.parametrize("kind", list(STORES))
def test_scalars_store(benchmark: Any, workdir: Path, kind: str) -> None:
    data = _scalars(scaled(200_000))
    _bench(benchmark, lambda p, d: _store_run(kind, p, d), data, workdir, STORES[kind],
           8 * len(data))


def _naive_csv(path: Path, data: list[Measurement]) -> int:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["t_ns", "source", "topic", "seq", "value", "unit"])
        for m in data:
            w.writerow([m.t_ns, m.source, m.topic, m.seq, m.value, m.unit])
            f.flush()
    return len(data)


def _buffered_csv(path: Path, data: list[Measurement]) -> int:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["t_ns", "source", "topic", "seq", "value", "unit"])
        for m in data:
            w.writerow([m.t_ns, m.source, m.topic, m.seq, m.value, m.unit])
    return len(data)


def _naive_sqlite(path: Path, data: list[Measurement]) -> int:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE measurements (t_ns INTEGER, source TEXT, topic TEXT, seq INTEGER, "
                "value, unit TEXT)")
    for m in data:
        value = m.value.tobytes() if isinstance(m.value, np.ndarray) else m.value
        con.execute("INSERT INTO measurements VALUES (?, ?, ?, ?, ?, ?)",
                    (m.t_ns, m.source, m.topic, m.seq, value, m.unit))
        con.commit()
    con.close()
    return len(data)


@pytest.mark.parametrize("name", ["naive-csv", "buffered-csv", "naive-sqlite"])
def test_scalars_naive(benchmark: Any, workdir: Path, name: str) -> None:
    n = scaled(20_000 if name == "naive-sqlite" else 200_000)
    fn = {"naive-csv": _naive_csv, "buffered-csv": _buffered_csv,
          "naive-sqlite": _naive_sqlite}[name]
    _bench(benchmark, fn, _scalars(n), workdir, "x.sqlite" if "sqlite" in name else "x.csv",
           8 * n)


# -------------------------------------------------------------------- arrays
@pytest.mark.parametrize("kind", ["hdf5", "sqlite", "jsonl"])
def test_arrays_store(benchmark: Any, workdir: Path, kind: str) -> None:
    data = _arrays(scaled(20_000))
    _bench(benchmark, lambda p, d: _store_run(kind, p, d), data, workdir, STORES[kind],
           8 * ARRAY * len(data))


def _naive_hdf5(path: Path, data: list[Measurement]) -> int:
    with h5py.File(path, "w") as f:
        g = f.create_group("wsa1.iq").create_group("0")
        v = g.create_dataset("value", shape=(0, ARRAY), maxshape=(None, ARRAY),
                             dtype=np.complex64, chunks=(32, ARRAY))
        t = g.create_dataset("order", shape=(0,), maxshape=(None,), dtype=np.int64,
                             chunks=(4096,))
        for i, m in enumerate(data):
            v.resize(i + 1, axis=0)
            v[i] = m.value
            t.resize(i + 1, axis=0)
            t[i] = i
            f.flush()
    return len(data)


@pytest.mark.parametrize("name", ["naive-hdf5", "naive-sqlite"])
def test_arrays_naive(benchmark: Any, workdir: Path, name: str) -> None:
    n = scaled(5_000)
    fn = _naive_hdf5 if name == "naive-hdf5" else _naive_sqlite
    _bench(benchmark, fn, _arrays(n), workdir, "x.h5" if "hdf5" in name else "x.sqlite",
           8 * ARRAY * n)
