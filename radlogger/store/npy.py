"""Reading the spectrum sink's files (writer: radlogger.endpoints.spectrum.store).

The ``spectrum`` sink keeps spectra as record arrays, an appendable ``<topic>_N<n>.npy`` per
topic and FFT size (``.<k>.npy`` after a layout change) or one ``<topic>_N<n>_<t_ns>.npz`` per
flush.  Each record holds ``t_ns``, ``device_time`` (-1: unknown), ``rf_freq`` and ``span``
(Hz) and ``dbm`` (the spectrum).  They come back as measurements of that topic (from the file
name: the sink writes topics as they are, other characters than ``[A-Za-z0-9_.-]`` as ``_``),
from the topic's first part as source, unit ``dBm`` (the field's name: the files do not keep
the unit), with ``meta = {"rf_freq": ..., "bandwidth": ...}`` — the frequency axis that
``plot`` and the sink itself read — and ``seq`` the row number.  So ``export``, ``plot`` and
the ``replay`` device take the WSA4000 chain's output like any store.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from radlogger.measurement import Measurement

from .selection import Selection

__all__ = ["read_file", "file_topics", "FIELDS", "topic_of"]

FIELDS = ("t_ns", "device_time", "rf_freq", "span", "dbm")
_NAME = re.compile(r"^(?P<topic>.+)_N(?P<n>\d+)(?:\.\d+|_\d+)?$")
_BLOCK = 4096


def topic_of(path: Path) -> str:
    stem = path.name.rsplit(".", 1)[0]
    match = _NAME.match(stem)
    if match is None:
        raise ValueError(f"{path.name} is not named like a spectrum sink file "
                         "(<topic>_N<size>.npy or <topic>_N<size>_<t_ns>.npz)")
    return match.group("topic")


def _records(path: Path) -> Any:
    """The file's columns, by field name (memory-mapped for .npy: a growing file is fine)."""
    if path.suffix == ".npz":
        data: Any = np.load(path, allow_pickle=False)
        names = set(data.files)
    else:
        data = np.load(path, mmap_mode="r", allow_pickle=False)
        names = set(data.dtype.names or ())
    if not set(FIELDS) <= names:
        raise ValueError(f"{path.name} is a numpy file without the spectrum sink's fields "
                         f"({', '.join(FIELDS)})")
    return data


def read_file(path: Path, sel: Selection) -> Iterator[Measurement]:
    topic = topic_of(path)
    if not sel.topic_ok(topic):
        return
    source = topic.split(".", 1)[0]
    data = _records(path)
    t_all = np.asarray(data["t_ns"])
    rows = len(t_all)
    for start in range(0, rows, _BLOCK):
        stop = min(rows, start + _BLOCK)
        t_ns = t_all[start:stop].tolist()
        dts = np.asarray(data["device_time"][start:stop]).tolist()
        rf = np.asarray(data["rf_freq"][start:stop]).tolist()
        span = np.asarray(data["span"][start:stop]).tolist()
        values = np.array(data["dbm"][start:stop])  # a copy: the file may be rewritten
        for i in range(stop - start):
            if sel.timed and not sel.time_ok(t_ns[i]):
                continue
            yield Measurement(source, topic, values[i], t_ns[i], "dBm",
                              None if dts[i] == -1 else dts[i],
                              {"rf_freq": rf[i], "bandwidth": span[i]}, start + i)


def file_topics(path: Path, limit: int | None = None) -> set[str]:
    return {topic_of(path)}
