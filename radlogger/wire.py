"""The one wire encoding of a :class:`Measurement`, used by every boundary.

MQTT payloads, HTTP long-poll responses and the pipes of process workers all carry
measurements in this form, so a measurement that crosses two boundaries (host A -> MQTT ->
host B -> long-poll -> host C) is never re-encoded differently on the way.

Three shapes of the same header, chosen by what the transport wants:

* **JSON document** (:func:`encode` of a scalar): ``{"v":1,"source":..,"topic":..,
  "t_ns":..,"seq":..,"value":23.5,"unit":"V"}``.  Readable by any MQTT tool.
* **Binary** (:func:`encode` of an array or bytes, and every frame of a stream):
  ``b"RLW1"`` + u32 little-endian header length + header JSON + body.  For an array the
  header carries ``dtype`` (numpy's ``dtype.str``, so byte order travels with the data) and
  ``shape``; the body is the raw C-order bytes.  For raw ``bytes`` values the body is the
  bytes.  For scalars the body is the JSON text of the value.
* **Split** (:func:`split` / :func:`join`): header JSON and body apart, for HTTP where the
  header goes into response headers and the raw bytes into the body.

Never pickle: decoding builds arrays with ``numpy.frombuffer`` from a validated numeric dtype
and shape, so a hostile peer can at worst make us raise :class:`WireError`.  Decoded arrays are
read-only views of the received buffer (no copy); copy them before changing them in place
(which an endpoint must not do to a shared measurement anyway).
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from radlogger.errors import ProtocolError

from .measurement import Measurement
from .topics import TOPIC_RE

__all__ = ["WireError", "MAGIC", "encode", "decode", "split", "split_typed", "join",
           "encode_binary", "encode_frames", "frame_parts", "decode_frames", "iter_frames"]

MAGIC = b"RLW1"
VERSION = 1
_LEN = struct.Struct("<I")
_PREFIX = len(MAGIC) + _LEN.size
MAX_HEADER = 1 << 20  # a header (metadata) larger than this is garbage, not a measurement
MAX_DIMS = 32
_DTYPE_RE = re.compile(r"^[<>|=][biufc][0-9]{1,2}$")
_NUMERIC_KINDS = frozenset("biufc")
_JSON_SCALARS = (bool, int, float, str, type(None))


class WireError(ProtocolError, ValueError):
    """Data that is not a valid encoded measurement (or a value that cannot be encoded)."""


# ---------------------------------------------------------------------------- encoding
def _classify(value: Any) -> tuple[str, Any]:
    """('json', python value) | ('array', contiguous ndarray) | ('bytes', bytes-like)."""
    if isinstance(value, _JSON_SCALARS):
        return "json", value
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in _NUMERIC_KINDS or value.dtype.fields is not None:
            raise WireError(f"arrays of dtype {value.dtype} cannot cross a boundary: use a "
                            "numeric dtype (bool, int, uint, float, complex)")
        return "array", value if value.flags.c_contiguous else np.asarray(value, order="C")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "bytes", value
    if isinstance(value, np.generic):
        if value.dtype.kind == "c":
            return "array", np.asarray(value)  # 0-d array keeps complex and its precision
        if value.dtype.kind in _NUMERIC_KINDS:
            return "json", value.item()
    if isinstance(value, complex):
        return "array", np.asarray(value, dtype=np.complex128)
    if isinstance(value, (list, tuple, dict)):
        return "json", value
    raise WireError(f"cannot encode a value of type {type(value).__name__}: a measurement "
                    "value must be a number, text, bytes, a list/dict of those, or a numpy array")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray) and obj.size <= 4096:
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


#: one C encoder; ``default`` is only called for what JSON lacks (numpy scalars, small arrays
#: in meta), so meta carrying them no longer costs a failed encode first (30 -> 6 us a WIDAR
#: lag set's header)
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=True,
                          default=_json_default).encode


def _dump(obj: Any, topic: str) -> bytes:
    try:
        return _dumps(obj).encode("ascii")
    except (TypeError, ValueError) as exc:
        raise WireError(f"measurement on {topic!r} cannot be encoded: {exc} (meta and "
                        "values must be JSON-serialisable)") from None


def _header(m: Measurement) -> dict[str, Any]:
    h: dict[str, Any] = {"v": VERSION, "source": m.source, "topic": m.topic, "t_ns": m.t_ns,
                         "seq": m.seq}
    if m.unit:
        h["unit"] = m.unit
    if m.device_time is not None:
        h["device_time"] = m.device_time
    if m.meta:
        h["meta"] = m.meta
    return h


def split_typed(m: Measurement) -> tuple[bytes, bytes | memoryview, str]:
    """Header JSON (ASCII, safe in an HTTP header), body, and the packet type for humans."""
    kind, value = _classify(m.value)
    h = _header(m)
    h["type"] = kind
    if kind == "array":
        h["dtype"] = value.dtype.str
        h["shape"] = list(value.shape)
        body: bytes | memoryview = value.reshape(-1).view(np.uint8).data if value.size else b""
        described = f"{value.dtype.name}{list(value.shape)}"
    elif kind == "bytes":
        body = value
        described = "bytes"
    else:
        body = _dump(value, m.topic)
        described = "json"
    return _dump(h, m.topic), body, described


def split(m: Measurement) -> tuple[bytes, bytes | memoryview]:
    """Header JSON and body bytes of ``m`` (inverse: :func:`join`)."""
    header, body, _ = split_typed(m)
    return header, body


def encode_binary(m: Measurement) -> bytes:
    """The binary form, whatever the value (frames of streams use it for every item)."""
    header, body = split(m)
    return b"".join((MAGIC, _LEN.pack(len(header)), header, body))


def frame_parts(header: bytes, body: bytes | memoryview) -> tuple[bytes, bytes, bytes | memoryview]:
    """One stream frame from :func:`split` parts, as pieces to ``b"".join`` (no extra copy)."""
    prefix = _LEN.pack(_PREFIX + len(header) + len(body)) + MAGIC + _LEN.pack(len(header))
    return prefix, header, body


def encode(m: Measurement) -> bytes:
    """JSON for scalars (readable by any tool), binary for arrays and raw bytes."""
    kind, value = _classify(m.value)
    if kind != "json":
        return encode_binary(m)
    h = _header(m)
    h["value"] = value
    return _dump(h, m.topic)


def encode_frames(ms: Iterable[Measurement]) -> bytes:
    """A stream of measurements: each one u32 length + binary form."""
    parts: list[bytes | memoryview] = []
    for m in ms:
        parts.extend(frame_parts(*split(m)))
    return b"".join(parts)


# ---------------------------------------------------------------------------- decoding
def _require(h: dict[str, Any], key: str, types: type | tuple[type, ...],
             optional: bool = False) -> Any:
    if key not in h:
        if optional:
            return None
        raise WireError(f"header lacks '{key}'")
    value = h[key]
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in
                                        (types if isinstance(types, tuple) else (types,))):
        raise WireError(f"header field '{key}' has type {type(value).__name__}")
    return value


def _measurement(h: Any, value: Any) -> Measurement:
    if not isinstance(h, dict):
        raise WireError("header is not a JSON object")
    version = h.get("v", VERSION)
    if version != VERSION:
        raise WireError(f"wire version {version!r} is not supported (this is version {VERSION}: "
                        "upgrade the older radloggerd)")
    topic = _require(h, "topic", str)
    if not TOPIC_RE.match(topic):
        raise WireError(f"invalid topic {topic[:80]!r}")
    source = _require(h, "source", str)
    t_ns = _require(h, "t_ns", int)
    seq = _require(h, "seq", int, optional=True)
    unit = _require(h, "unit", str, optional=True) or ""
    device_time = _require(h, "device_time", (int, float), optional=True)
    meta = _require(h, "meta", dict, optional=True)
    return Measurement(source, topic, value, t_ns, unit, device_time, meta,
                       -1 if seq is None else seq)


def _array(h: dict[str, Any], body: bytes | memoryview) -> Any:
    dtype_s = h.get("dtype")
    shape = h.get("shape")
    if not isinstance(dtype_s, str) or not _DTYPE_RE.match(dtype_s):
        raise WireError(f"invalid dtype {str(dtype_s)[:40]!r} (expected a numeric numpy dtype "
                        "string like '<f4')")
    try:
        dtype = np.dtype(dtype_s)
    except TypeError:
        raise WireError(f"invalid dtype {dtype_s!r}") from None
    if dtype.kind not in _NUMERIC_KINDS:
        raise WireError(f"dtype {dtype_s!r} is not numeric")
    if (not isinstance(shape, list) or len(shape) > MAX_DIMS
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise WireError(f"invalid shape {str(shape)[:80]}")
    count = 1
    for d in shape:
        count *= d
    if count * dtype.itemsize != len(body):
        raise WireError(f"body has {len(body)} bytes, dtype {dtype_s} shape {tuple(shape)} "
                        f"needs {count * dtype.itemsize}")
    arr = np.frombuffer(body, dtype=dtype, count=count).reshape(shape)
    return arr[()] if not shape else arr


def _body_value(h: dict[str, Any], body: bytes | memoryview) -> Any:
    kind = h.get("type")
    if kind == "array":
        return _array(h, body)
    if kind == "bytes":
        return bytes(body)
    if kind == "json":
        if "value" in h:
            return h["value"]
        try:
            return json.loads(bytes(body))
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise WireError(f"scalar body is not JSON: {exc}") from None
    raise WireError(f"unknown value type {str(kind)[:20]!r}")


def _load_header(data: bytes | memoryview) -> Any:
    try:
        return json.loads(bytes(data))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise WireError(f"header is not JSON: {exc}") from None


def join(header: bytes | str, body: bytes | memoryview) -> Measurement:
    """Inverse of :func:`split`."""
    if isinstance(header, str):
        header = header.encode("utf-8", "replace")
    if len(header) > MAX_HEADER:
        raise WireError(f"header of {len(header)} bytes is too large")
    h = _load_header(header)
    if not isinstance(h, dict):
        raise WireError("header is not a JSON object")
    return _measurement(h, _body_value(h, body))


def decode(data: bytes | bytearray | memoryview) -> Measurement:
    """Inverse of :func:`encode` and :func:`encode_binary`; raises :class:`WireError`."""
    view = memoryview(data)
    if view[:4] == MAGIC:
        if len(view) < _PREFIX:
            raise WireError("truncated binary measurement")
        (hlen,) = _LEN.unpack_from(view, 4)
        if hlen > MAX_HEADER or _PREFIX + hlen > len(view):
            raise WireError(f"header length {hlen} does not fit in {len(view)} bytes")
        return join(view[_PREFIX:_PREFIX + hlen].tobytes(), view[_PREFIX + hlen:])
    if bytes(view[:1]) == b"{":
        h = _load_header(view)
        if not isinstance(h, dict) or "value" not in h:
            raise WireError("JSON measurement lacks 'value'")
        return _measurement(h, h["value"])
    head = bytes(view[:16])
    raise WireError(f"not a radlogger measurement (starts with {head!r}; expected "
                    f"{MAGIC!r} or a JSON object)")


def iter_frames(data: bytes | bytearray | memoryview) -> Iterator[Measurement]:
    """Decode a stream made by :func:`encode_frames`; a truncated tail raises WireError."""
    view = memoryview(data)
    pos, end = 0, len(view)
    while pos < end:
        if end - pos < _LEN.size:
            raise WireError(f"truncated frame length at byte {pos}")
        (n,) = _LEN.unpack_from(view, pos)
        pos += _LEN.size
        if n > end - pos:
            raise WireError(f"frame of {n} bytes at byte {pos} exceeds the {end - pos} left")
        yield decode(view[pos:pos + n])
        pos += n


def decode_frames(data: bytes | bytearray | memoryview) -> list[Measurement]:
    return list(iter_frames(data))
