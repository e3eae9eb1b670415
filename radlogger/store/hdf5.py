"""Reading the HDF5 store: its layout's names, segments merged back into write order.

The layout is described in radlogger.endpoints.storage.hdf5 (the writer).  h5py is optional:
radlogger.store.reader imports this module only when it meets an HDF5 file.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterator
from operator import itemgetter
from pathlib import Path
from typing import Any

import h5py  # type: ignore[import-untyped]
import numpy as np

from radlogger.measurement import Measurement
from radlogger.products import PRODUCT_KEYS

from . import codec
from .selection import Selection

__all__ = ["read_file", "file_topics", "open_readonly", "FORMAT", "Key", "segments",
           "segment_key", "complete_rows", "has_value", "group_name", "index_of", "INDEX_KEYS",
           "LIBVER_SWMR", "LIBVER_PLAIN"]

FORMAT = "radlogger-hdf5"
#: (key, JSON of the value) of the segment's indexed meta keys, in the order configured
Index = tuple[tuple[str, str], ...]
Key = tuple[str, str, str, str, str, tuple[int, ...], str, bool, Index]
#: meta keys indexed by default: what tells a correlator's output products apart
INDEX_KEYS = PRODUCT_KEYS
#: HDF5 file format bounds: readable by HDF5 1.10 tools (Debian's h5dump); SWMR needs v110
LIBVER_SWMR = ("v110", "v110")
LIBVER_PLAIN = ("earliest", "v110")

_READ_BLOCK_BYTES = 32 << 20


def group_name(topic: str) -> str:
    return topic.replace("/", "%2F")


def has_value(kind: str, shape: tuple[int, ...]) -> bool:
    return kind != "none" and not (kind == "array" and 0 in shape)


def index_of(meta: Any, keys: Any) -> Index:
    """The indexed part of a measurement's meta: scalar values of ``keys`` present."""
    if not keys or not isinstance(meta, dict):
        return ()
    return tuple((k, json.dumps(meta[k])) for k in keys
                 if isinstance(meta.get(k), (str, int, float, bool)))


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def segment_index(a: Any) -> Index:
    keys = json.loads(a.get("index_keys", "[]"))
    return tuple((k, json.dumps(_plain(a[f"index.{k}"]))) for k in keys)


def segment_key(topic: str, a: Any) -> Key:
    return (topic, str(a["source"]), str(a["unit"]), str(a["kind"]), str(a["dtype"]),
            codec.parse_shape(str(a["shape"])), str(a["device_time"]), bool(a["meta"]),
            segment_index(a))


def segments(f: h5py.File) -> Iterator[tuple[str, h5py.Group]]:
    for tg in f.values():
        if isinstance(tg, h5py.Group) and "topic" in tg.attrs:
            topic = str(tg.attrs["topic"])
            for g in tg.values():
                if isinstance(g, h5py.Group) and "kind" in g.attrs:
                    yield topic, g


def complete_rows(g: h5py.Group) -> int:
    """Rows complete in every column (a crash during a flush may leave some columns longer)."""
    lengths = [len(ds) for ds in g.values() if isinstance(ds, h5py.Dataset)]
    return min(lengths) if lengths else 0


def open_readonly(path: Path) -> h5py.File:
    """Open for reading, also while a SWMR writer has it open or after one crashed.

    In the writer's own process HDF5 shares one open file, whose locking setting a reader
    must match: after the writer reopened it without the lock (see ``_create``), so does
    the reader."""
    try:
        return h5py.File(path, "r", swmr=True)
    except OSError as exc:
        if "locking flag" not in str(exc):
            raise
        return h5py.File(path, "r", swmr=True, locking=False)


def _segment_reader(g: h5py.Group, topic: str, sel: Selection
                    ) -> Iterator[tuple[int, Measurement]]:
    a = g.attrs
    _, source, unit, kind, dtype, shape, dt_kind, has_meta, index = segment_key(topic, a)
    if not sel.index_ok(index):
        return
    rows = complete_rows(g)
    if not rows:
        return
    t_all = g["t_ns"][:rows]
    mask = None
    if sel.timed:
        mask = np.ones(rows, bool)
        if sel.since_ns is not None:
            mask &= t_all >= sel.since_ns
        if sel.until_ns is not None:
            mask &= t_all < sel.until_ns
        if not mask.any():
            return
    stored = has_value(kind, shape)
    row_bytes = max(1, np.dtype(dtype).itemsize * int(np.prod(shape))) if kind == "array" else 64
    block = max(1, min(8192, _READ_BLOCK_BYTES // row_bytes))
    for start in range(0, rows, block):
        stop = min(rows, start + block)
        if mask is not None and not mask[start:stop].any():
            continue
        order = g["order"][start:stop].tolist()
        t_ns = t_all[start:stop].tolist()
        seq = g["seq"][start:stop].tolist()
        n = stop - start
        values: Any
        if not stored:
            values = [None] * n if kind == "none" else \
                [np.empty(shape, np.dtype(dtype)) for _ in range(n)]
        elif kind == "array":
            raw = g["value"][start:stop]
            values = [raw[i, ...] for i in range(n)]
        elif kind == "str":
            values = [b.decode("utf-8") for b in g["value"][start:stop]]
        elif kind == "bytes":
            values = [x.tobytes() for x in g["value"][start:stop]]
        else:
            values = g["value"][start:stop].tolist()
        dts = g["device_time"][start:stop].tolist() if dt_kind != "none" else [None] * n
        metas = [json.loads(s) for s in g["meta"][start:stop]] if has_meta else [None] * n
        keep = mask[start:stop] if mask is not None else None
        for i in range(n):
            if keep is None or keep[i]:
                yield order[i], Measurement(source, topic, values[i], t_ns[i], unit, dts[i],
                                            metas[i], seq[i])


def read_file(path: Path, sel: Selection) -> Iterator[Measurement]:
    with open_readonly(path) as f:
        readers = [_segment_reader(g, topic, sel) for topic, g in segments(f)
                   if sel.topic_ok(topic)]
        for _, m in heapq.merge(*readers, key=itemgetter(0)):
            yield m


def file_topics(path: Path, limit: int | None = None) -> set[str]:
    """Topics in the file (``limit`` is for text formats; this one lists them cheaply)."""
    with open_readonly(path) as f:
        return {str(tg.attrs["topic"]) for tg in f.values()
                if isinstance(tg, h5py.Group) and "topic" in tg.attrs}
