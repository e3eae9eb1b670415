"""Shared pieces of the storage, replay and export tests (imported by them; no tests here)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from radlogger.endpoints.storage.base import StorageEndpoint
from radlogger.endpoints.storage.csv import CSVEndpoint
from radlogger.endpoints.storage.hdf5 import HDF5Endpoint
from radlogger.endpoints.storage.jsonl import JSONLEndpoint
from radlogger.endpoints.storage.sqlite import SQLiteEndpoint
from radlogger.measurement import Measurement
from radlogger.store import codec

T0 = 1_714_564_800_000_000_000  # 2024-05-01T12:00:00Z

# id, class, file name, extra settings
STORES: list[tuple[str, type[StorageEndpoint], str, dict[str, Any]]] = [
    ("csv", CSVEndpoint, "run.csv", {}),
    ("csv.gz", CSVEndpoint, "run.csv", {"gzip": True}),
    ("jsonl", JSONLEndpoint, "run.jsonl", {}),
    ("jsonl.gz", JSONLEndpoint, "run.jsonl", {"gzip": True}),
    ("sqlite", SQLiteEndpoint, "run.sqlite", {}),
    ("hdf5", HDF5Endpoint, "run.h5", {}),
    ("hdf5-noswmr", HDF5Endpoint, "run.h5", {"swmr": False}),
    ("csv-json", CSVEndpoint, "run.csv", {"arrays": "json"}),
    ("jsonl-json", JSONLEndpoint, "run.jsonl", {"arrays": "json"}),
]
STORE_IDS = [s[0] for s in STORES]
store_params = pytest.mark.parametrize("store", STORES, ids=STORE_IDS)


def make_store(store: tuple[str, type[StorageEndpoint], str, dict[str, Any]], directory: Path,
               name: str = "store", **kw: Any) -> StorageEndpoint:
    _, cls, filename, extra = store
    settings = dict(extra)
    settings.update(kw)
    settings.setdefault("path", str(directory / filename))
    return cls(name, settings)


def every_value() -> list[Any]:
    """One of each storable kind, with the awkward cases of each."""
    return [
        0, -5, 2 ** 62, -(2 ** 63), 1.5, -0.0, float("nan"), float("inf"), 1e-300,
        "", "plain", 'comma, "quote"\nnew line\r\tand unicode: µ±°', True, False, None,
        b"", b"\x00\xff\n,\"",
        np.arange(1024, dtype=np.float32),
        (np.arange(1024) * (1 + 2j)).astype(np.complex64).reshape(2, 512),
        np.arange(60, dtype=np.int16).reshape(3, 4, 5),
        np.array([], dtype=np.uint8),
        np.zeros((2, 0), dtype=np.float64),
        np.array([True, False, True]),
        np.array(2.5),
        np.array([7, -7], dtype=">i4"),
        np.array([np.nan, np.inf], dtype=np.float64),
        np.float32(3.25), np.int64(-9), np.bool_(True),
    ]


METAS: list[dict[str, Any] | None] = [
    None, {}, {"gain_db": 10.5, "channels": [1, 2, 3], "nested": {"ok": True, "none": None}},
    {"label": "µ unicode", "n": 2 ** 40}]
DEVICE_TIMES: list[int | float | None] = [None, 1_714_564_800_123_456_789, 12.5, 0]


def every_measurement() -> list[Measurement]:
    out = []
    for i, v in enumerate(every_value()):
        out.append(Measurement(f"dev{i % 2}", f"dev{i % 2}.q{i % 3}", v, T0 + i * 1000,
                               ("V", "", "dBm")[i % 3], DEVICE_TIMES[i % 4], METAS[i % 4], i))
    return out


def values_equal(a: Any, b: Any) -> bool:
    """Equality that treats NaN as equal to NaN and compares arrays by dtype, shape and data."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)):
            return False
        return a.dtype == b.dtype and a.shape == b.shape and \
            bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


def assert_same(expected: list[Measurement], got: list[Measurement], *, source: str | None = None,
                topic: Any = None, t_ns: bool = True, seq: bool = True) -> None:
    """Field by field, value by kind (NaN == NaN, arrays by dtype, shape and data)."""
    assert len(got) == len(expected), f"{len(got)} measurements read back, {len(expected)} written"
    for i, (a, b) in enumerate(zip(expected, got, strict=True)):
        want = codec.classify(a.value)[1]
        assert values_equal(want, b.value), f"#{i}: {want!r} != {b.value!r}"
        assert b.source == (source or a.source), f"#{i} source"
        assert b.topic == (topic(a.topic) if topic else a.topic), f"#{i} topic"
        assert b.unit == a.unit, f"#{i} unit"
        assert b.meta == a.meta, f"#{i} meta"
        want_dt = codec.check_device_time(a.device_time)
        assert b.device_time == want_dt and type(b.device_time) is type(want_dt), f"#{i} dt"
        if t_ns:
            assert b.t_ns == a.t_ns, f"#{i} t_ns"
        if seq:
            assert b.seq == a.seq, f"#{i} seq"


def counter_measurements(n: int, topic: str = "dev.value", start: int = 0,
                         step_ns: int = 1_000_000) -> list[Measurement]:
    source = topic.split(".")[0]
    return [Measurement(source, topic, i, T0 + i * step_ns, "V", None, None, i)
            for i in range(start, start + n)]


def unwritable_dir(tmp_path: Path) -> Path:
    """A directory where creating files fails with a permission error.

    A read-only directory does that for ordinary users; root ignores file modes (it has
    CAP_DAC_OVERRIDE), so for root the test uses /sys, where even root may not create files."""
    if os.geteuid() != 0:
        ro = tmp_path / "readonly"
        ro.mkdir()
        ro.chmod(0o555)
        return ro / "sub"
    return Path("/sys/radlogger-test-unwritable")
