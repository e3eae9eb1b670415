"""MQTT payload forms on top of :mod:`radlogger.wire`: all-JSON documents and batches.

The ``mqtt`` endpoint writes, and the ``mqtt`` device reads, every form below
(:func:`decode_payload` tells them apart by their first bytes):

* ``binary`` (default, :func:`radlogger.wire.encode`): scalars as a JSON document, arrays and
  raw bytes in the compact ``RLW1`` binary form.
* ``json`` (:func:`encode_json`): every value in one JSON document that Node-RED, Telegraf's
  ``mqtt_consumer`` (``data_format = "json_v2"``) or Grafana's MQTT data source parse as is:
  arrays as (nested) JSON lists with ``dtype`` and ``shape`` beside them (complex numbers as
  ``[re, im]`` pairs), raw bytes as base64, and ``time``, the ISO-8601 UTC wall-clock time,
  beside ``t_ns`` (a 19-digit integer loses digits above 2^53 in JavaScript).
* batches (:func:`encode_batch`): many measurements in one MQTT message.  JSON: a list of the
  documents above (``[{...},{...}]``); binary: ``b"RLB1"`` followed by the stream frames of
  :func:`radlogger.wire.encode_frames`; a batch of plain numbers (one source, topic and unit,
  no metadata, all ``float`` or all ``int``) goes as columns instead, ``b"RLC1"`` + u32 header
  length + header JSON (``source, topic, unit, n, dtype``) + ``n`` int64 ``t_ns``, ``n`` int64
  ``seq`` and ``n`` values (``<f8``/``<i8``): encoding is then a few numpy calls instead of a
  JSON header per measurement (about 10x faster).  Batching is where MQTT gets its speed: a
  broker and a client spend about the same per message whatever its size.

Per-topic metadata (:func:`describe`) is what a dashboard needs to label a series without
reading the data: ``{"topic", "unit", "type", "dtype", "shape"}``.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from .measurement import Measurement
from .topics import TOPIC_RE
from .wire import (
    _DTYPE_RE,
    WireError,
    _array,
    _classify,
    _dump,
    _header,
    _measurement,
    decode,
    encode,
    frame_parts,
    iter_frames,
    split,
)

__all__ = ["BATCH_MAGIC", "FORMATS", "encode_one", "encode_json", "encode_batch", "batch_item",
           "join_batch", "encode_columns", "COLUMNS_MAGIC",
           "decode_payload", "describe", "iso_time"]

BATCH_MAGIC = b"RLB1"
COLUMNS_MAGIC = b"RLC1"
_LEN = struct.Struct("<I")
_COLUMN_DTYPES = {float: "<f8", int: "<i8"}
FORMATS = ("binary", "json")
_UTC = _dt.UTC


def iso_time(t_ns: int) -> str:
    """``2026-12-05T21:40:00.123456Z`` (microseconds: what ISO readers take everywhere)."""
    s, ns = divmod(t_ns, 1_000_000_000)
    t = _dt.datetime.fromtimestamp(s, _UTC).replace(microsecond=ns // 1000)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _json_value(h: dict[str, Any], m: Measurement) -> None:
    kind, value = _classify(m.value)
    h["type"] = kind
    if kind == "array":
        h["dtype"] = value.dtype.str
        h["shape"] = list(value.shape)
        if value.dtype.kind == "c":
            value = np.stack([value.real, value.imag], axis=-1)
        h["value"] = value.tolist()
    elif kind == "bytes":
        h["encoding"] = "base64"
        h["value"] = base64.b64encode(bytes(value)).decode("ascii")
    else:
        h["value"] = value


def _json_doc(m: Measurement) -> dict[str, Any]:
    h = _header(m)
    h["time"] = iso_time(m.t_ns)
    _json_value(h, m)
    return h


def encode_json(m: Measurement) -> bytes:
    """One JSON document whatever the value (the ``json`` payload form)."""
    return _dump(_json_doc(m), m.topic)


def encode_one(m: Measurement, fmt: str) -> bytes:
    """One measurement in payload form ``fmt`` (``binary`` or ``json``)."""
    return encode_json(m) if fmt == "json" else encode(m)


def batch_item(m: Measurement, fmt: str) -> bytes:
    """One measurement's part of a batch (encode items one by one so one bad value fails
    alone, then :func:`join_batch`)."""
    return encode_json(m) if fmt == "json" else b"".join(frame_parts(*split(m)))


def join_batch(items: Sequence[bytes], fmt: str) -> bytes:
    return b"[" + b",".join(items) + b"]" if fmt == "json" else BATCH_MAGIC + b"".join(items)


def encode_columns(ms: Sequence[Measurement]) -> bytes | None:
    """The ``RLC1`` column form of a batch of plain numbers, or None if ``ms`` is not one."""
    first = ms[0]
    vtype = type(first.value)
    dtype = _COLUMN_DTYPES.get(vtype)
    if dtype is None:
        return None
    source, topic, unit = first.source, first.topic, first.unit
    for m in ms:
        if type(m.value) is not vtype or m.topic != topic or m.source != source or \
                m.unit != unit or m.meta or m.device_time is not None:
            return None
    try:
        values = np.array([m.value for m in ms], dtype=dtype)
    except OverflowError:  # an int beyond int64
        return None
    t_ns = np.array([m.t_ns for m in ms], dtype="<i8")
    seq = np.array([m.seq for m in ms], dtype="<i8")
    header = _dump({"v": 1, "source": source, "topic": topic, "unit": unit, "n": len(ms),
                    "dtype": dtype}, topic)
    return b"".join((COLUMNS_MAGIC, _LEN.pack(len(header)), header, t_ns.tobytes(),
                     seq.tobytes(), values.tobytes()))


def _decode_columns(view: memoryview) -> list[Measurement]:
    if len(view) < 8:
        raise WireError("truncated column batch")
    (hlen,) = _LEN.unpack_from(view, 4)
    if 8 + hlen > len(view):
        raise WireError(f"column header length {hlen} does not fit in {len(view)} bytes")
    try:
        h = json.loads(bytes(view[8:8 + hlen]))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise WireError(f"column header is not JSON: {exc}") from None
    if not isinstance(h, dict):
        raise WireError("column header is not a JSON object")
    n, dtype, topic = h.get("n"), h.get("dtype"), h.get("topic")
    source, unit = h.get("source"), h.get("unit", "")
    if not isinstance(n, int) or n < 0 or dtype not in _COLUMN_DTYPES.values() or \
            not isinstance(topic, str) or not TOPIC_RE.match(topic) or \
            not isinstance(source, str) or not isinstance(unit, str):
        raise WireError("invalid column header")
    body = view[8 + hlen:]
    if len(body) != 24 * n:
        raise WireError(f"column body has {len(body)} bytes, {n} rows need {24 * n}")
    t_ns = np.frombuffer(body, "<i8", n, 0).tolist()
    seq = np.frombuffer(body, "<i8", n, 8 * n).tolist()
    values = np.frombuffer(body, dtype, n, 16 * n).tolist()
    return [Measurement(source, topic, v, t, unit, None, None, q)
            for t, q, v in zip(t_ns, seq, values, strict=True)]


def encode_batch(ms: Sequence[Measurement], fmt: str) -> bytes:
    """Many measurements in one payload: a JSON list, or binary (columns when it can)."""
    if fmt != "json":
        columns = encode_columns(ms) if ms else None
        if columns is not None:
            return columns
    return join_batch([batch_item(m, fmt) for m in ms], fmt)


def _json_array(h: dict[str, Any], value: Any) -> Any:
    dtype_s = h.get("dtype")
    if not isinstance(dtype_s, str) or not _DTYPE_RE.match(dtype_s):
        raise WireError(f"invalid dtype {str(dtype_s)[:40]!r}")
    try:
        dtype = np.dtype(dtype_s)
        if dtype.kind == "c":  # [re, im] pairs
            pairs = np.asarray(value, dtype=np.float64)
            arr = (pairs[..., 0] + 1j * pairs[..., 1]).astype(dtype) if pairs.size \
                else np.zeros(0, dtype)
        else:
            arr = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError, IndexError, OverflowError) as exc:
        raise WireError(f"JSON array does not match dtype {dtype_s}: {exc}") from None
    arr = np.ascontiguousarray(arr)
    return _array(h, arr.reshape(-1).view(np.uint8).data if arr.size else b"")


def _from_doc(h: Any) -> Measurement:
    if not isinstance(h, dict) or "value" not in h:
        raise WireError("JSON measurement lacks 'value'")
    value = h["value"]
    kind = h.get("type")
    if kind == "array":
        value = _json_array(h, value)
    elif kind == "bytes":
        if h.get("encoding") != "base64" or not isinstance(value, str):
            raise WireError("JSON bytes value must be base64 text")
        try:
            value = base64.b64decode(value, validate=True)
        except ValueError:
            raise WireError("JSON bytes value is not valid base64") from None
    return _measurement(h, value)


def decode_payload(data: bytes | bytearray | memoryview) -> list[Measurement]:
    """Every measurement in an MQTT payload of any form above; raises :class:`WireError`."""
    view = memoryview(data)
    head = bytes(view[:4])
    if head == COLUMNS_MAGIC:
        return _decode_columns(view)
    if head == BATCH_MAGIC:
        return list(iter_frames(view[4:]))
    if head[:1] in (b"{", b"["):
        try:
            doc = json.loads(bytes(view))
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise WireError(f"payload is not JSON: {exc}") from None
        if isinstance(doc, list):
            return [_from_doc(d) for d in doc]
        return [_from_doc(doc)]
    return [decode(view)]


def describe(m: Measurement) -> dict[str, Any]:
    """Retained per-topic metadata: what the value is, without the value."""
    kind, value = _classify(m.value)
    d: dict[str, Any] = {"topic": m.topic, "unit": m.unit, "type": kind}
    if kind == "array":
        d["dtype"] = value.dtype.str
        d["shape"] = list(value.shape)
    elif kind == "json":
        d["dtype"] = type(value).__name__
        d["shape"] = []
    return d
