"""Many measurements in one worker message: a column-wise form of :mod:`radlogger.wire`.

A lag set crossing to an isolated chain one datagram at a time cost the input stage ~27 us
(a JSON header of ~20 metadata fields, about half of it numpy arrays turned into lists, and
one ``sendmsg``): 0.4 of a core at 14,600 lag sets/s, and the child paid as much again to
parse it.  Measurements that line up -- same source, topic and unit, array values of one
dtype and shape, the same metadata keys -- are sent together instead:

``b"RLB1"`` + u32 header length + header JSON + body, where the header holds the count, the
shared fields, one JSON *column* (a list, one entry per measurement) per per-item field
(``t_ns``, ``seq``, ``device_time``, each metadata key whose values are not arrays of one
shape) and the dtype and shape of each stacked array; the body is the values stacked
``(n, *shape)``, then each stacked metadata array ``(n, *its shape)``, C order.  Decoded
values and metadata arrays are read-only views of rows of the received buffer (no copy).

One JSON document per message instead of per measurement, one system call per message: ~2 us
a lag set at the sending end.  What does not line up travels alone in the single form, so
the order of a batch is kept and nothing changes for other values.  Never pickled; parsed
with validated dtypes and shapes as :mod:`radlogger.wire` does.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from typing import Any

import numpy as np

from .. import wire
from ..measurement import Measurement
from ..topics import TOPIC_RE

__all__ = ["MAGIC", "runs", "batch_parts", "decode_batch"]

MAGIC = b"RLB1"
_HLEN = struct.Struct("<I")
_PREFIX = len(MAGIC) + _HLEN.size
_NUMERIC = frozenset("biufc")


def _signature(m: Measurement) -> tuple[Any, ...] | None:
    """What must be equal for ``m`` to share a message with its neighbours (None: alone)."""
    v = m.value
    if type(v) is not np.ndarray or v.dtype.kind not in _NUMERIC or v.dtype.fields is not None:
        return None
    meta = m.meta
    return (m.source, m.topic, m.unit, v.dtype, v.shape,
            None if meta is None else tuple(meta))


def runs(batch: list[Measurement], max_items: int, max_bytes: int
         ) -> Iterator[tuple[bool, list[Measurement]]]:
    """Consecutive pieces of ``batch``, in order: (True, lined-up items to send together) or
    (False, [one item to send alone]).  A piece has at most ``max_items`` items and, by its
    values' size, fits in ``max_bytes`` with room for its metadata."""
    i, n = 0, len(batch)
    while i < n:
        sig = _signature(batch[i])
        j = i + 1
        if sig is not None:
            per = batch[i].value.nbytes + 64 + 48 * len(sig[5] or ())
            limit = min(n, i + max(1, min(max_items, max_bytes // per)))
            while j < limit and _signature(batch[j]) == sig:
                j += 1
        if j - i > 1:
            yield True, batch[i:j]
        else:
            yield False, batch[i:j]
        i = j


def _stackable(vals: list[Any]) -> bool:
    first = vals[0]
    if type(first) is not np.ndarray or first.dtype.kind not in _NUMERIC \
            or first.dtype.fields is not None:
        return False
    dt, shape = first.dtype, first.shape
    return all(type(v) is np.ndarray and v.dtype == dt and v.shape == shape for v in vals)


def _bytes_of(value: np.ndarray) -> Any:
    if not value.flags.c_contiguous:
        value = np.ascontiguousarray(value)
    return value.reshape(-1).view(np.uint8).data if value.size else b""


def batch_parts(items: list[Measurement]) -> tuple[list[Any], int]:
    """Lined-up ``items`` (see :func:`runs`) as buffers for ``sendmsg``, and their size.
    Raises :class:`radlogger.wire.WireError` when a metadata value cannot be encoded."""
    first = items[0]
    h: dict[str, Any] = {
        "v": wire.VERSION, "n": len(items), "source": first.source, "topic": first.topic,
        "unit": first.unit, "dtype": first.value.dtype.str, "shape": list(first.value.shape),
        "t_ns": [m.t_ns for m in items], "seq": [m.seq for m in items],
        "device_time": [m.device_time for m in items]}
    # each value's own buffer (no stacked copy: sendmsg or the slot write gathers them)
    body: list[Any] = [_bytes_of(m.value) for m in items]
    size = first.value.nbytes * len(items)
    if first.meta is not None:
        # the items' keys are in the same order (runs() checked): transpose in one C call
        columns = zip(*[tuple((m.meta or {}).values()) for m in items], strict=True) \
            if first.meta else iter(())
        cols: dict[str, list[Any]] = {}
        arrays: list[list[Any]] = []
        for key, column in zip(first.meta, columns, strict=True):
            vals = list(column)
            if _stackable(vals):
                stacked = np.stack(vals)
                arrays.append([key, stacked.dtype.str, list(vals[0].shape)])
                body.append(stacked.reshape(-1).view(np.uint8).data)
                size += stacked.nbytes
            else:
                cols[key] = vals
        h["meta"] = cols
        h["meta_arrays"] = arrays
    header = wire._dump(h, first.topic)
    size += _PREFIX + len(header)
    return [MAGIC + _HLEN.pack(len(header)), header, *body], size


def _column(h: dict[str, Any], key: str, n: int) -> list[Any]:
    col = h.get(key)
    if not isinstance(col, list) or len(col) != n:
        raise wire.WireError(f"batch column {key!r} is not a list of {n}")
    return col


def _rows(h: dict[str, Any], dtype_s: Any, shape: Any, n: int, body: memoryview, pos: int
          ) -> tuple[np.ndarray, int]:
    """``n`` stacked arrays of ``dtype_s`` and ``shape`` from ``body[pos:]``, validated."""
    if not isinstance(shape, list):
        raise wire.WireError(f"invalid shape {str(shape)[:80]}")
    count = 1
    for d in shape:
        if not isinstance(d, int) or isinstance(d, bool) or d < 0:
            raise wire.WireError(f"invalid shape {str(shape)[:80]}")
        count *= d
    try:
        dtype = np.dtype(dtype_s) if isinstance(dtype_s, str) and \
            wire._DTYPE_RE.match(dtype_s) else None
    except TypeError:
        dtype = None
    if dtype is None or dtype.kind not in _NUMERIC:
        raise wire.WireError(f"invalid dtype {str(dtype_s)[:40]!r}")
    nbytes = n * count * dtype.itemsize
    if pos + nbytes > len(body):
        raise wire.WireError(f"batch body has {len(body) - pos} bytes left, needs {nbytes}")
    arr = np.frombuffer(body, dtype, n * count, pos).reshape([n, *shape])
    return arr, pos + nbytes


def decode_batch(data: bytes | bytearray | memoryview) -> list[Measurement]:
    """Inverse of :func:`batch_parts`; raises :class:`radlogger.wire.WireError`."""
    view = memoryview(data)
    if len(view) < _PREFIX or view[:4] != MAGIC:
        raise wire.WireError("not a measurement batch")
    (hlen,) = _HLEN.unpack_from(view, 4)
    if hlen > wire.MAX_HEADER or _PREFIX + hlen > len(view):
        raise wire.WireError(f"batch header length {hlen} does not fit in {len(view)} bytes")
    try:
        h = json.loads(bytes(view[_PREFIX:_PREFIX + hlen]))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise wire.WireError(f"batch header is not JSON: {exc}") from None
    if not isinstance(h, dict) or h.get("v") != wire.VERSION:
        raise wire.WireError("batch header is not a version 1 JSON object")
    n, source, topic, unit = h.get("n"), h.get("source"), h.get("topic"), h.get("unit")
    if not isinstance(n, int) or isinstance(n, bool) or not 0 < n <= 1 << 20 \
            or not isinstance(source, str) or not isinstance(unit, str) \
            or not isinstance(topic, str) or not TOPIC_RE.match(topic):
        raise wire.WireError("batch header lacks a valid n, source, topic or unit")
    t_ns, seq, dev_t = (_column(h, k, n) for k in ("t_ns", "seq", "device_time"))
    if not all(type(t) is int for t in t_ns) or not all(type(s) is int for s in seq) \
            or not all(d is None or type(d) in (int, float) for d in dev_t):
        raise wire.WireError("batch t_ns, seq or device_time of the wrong type")
    body = view[_PREFIX + hlen:]
    values, pos = _rows(h, h.get("dtype"), h.get("shape"), n, body, 0)
    metas: list[dict[str, Any] | None] = [None] * n
    if "meta" in h:
        cols, arrays = h.get("meta"), h.get("meta_arrays")
        if not isinstance(cols, dict) or not isinstance(arrays, list):
            raise wire.WireError("batch metadata is malformed")
        keys: list[str] = []
        columns: list[Any] = []
        for key in cols:
            keys.append(key)
            columns.append(_column(cols, key, n))
        for spec in arrays:
            if not isinstance(spec, list) or len(spec) != 3 or not isinstance(spec[0], str):
                raise wire.WireError("batch metadata array is malformed")
            arr, pos = _rows(h, spec[1], spec[2], n, body, pos)
            keys.append(spec[0])
            columns.append(arr)
        metas = [dict(zip(keys, row, strict=True)) for row in zip(*columns, strict=True)] \
            if keys else [{} for _ in range(n)]
    if pos != len(body):
        raise wire.WireError(f"batch body has {len(body) - pos} bytes too many")
    return [Measurement(source, topic, v, t, unit, d, meta, s)
            for v, t, d, meta, s in zip(values, t_ns, dev_t, metas, seq, strict=True)]
