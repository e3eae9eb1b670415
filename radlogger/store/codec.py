"""Value encoding shared by every store: one definition of what a stored measurement can hold.

A measurement's ``value`` is a scalar or a numpy array (see radlogger.measurement).  To read
back *exactly* what was written, every store records a ``kind`` next to the value, because no
single file format keeps all distinctions by itself: SQLite turns NaN into NULL and has no
bool, CSV has only text, JSON has no bytes or arrays.  The kinds are:

``none``, ``bool``, ``int`` (64-bit signed), ``float``, ``str``, ``bytes`` and ``array``
(numeric or bool numpy arrays of any shape, stored as raw C-order bytes + dtype + shape).

Numpy scalars become their Python equivalents; lists and tuples of numbers become arrays; a
complex scalar becomes a 0-d array.  Anything else is refused with a message that says what to
emit instead (the endpoint counts it; the rest of the batch is stored).
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import numpy as np

__all__ = ["KINDS", "classify", "array_type", "parse_array_type", "array_to_bytes",
           "array_from_bytes", "meta_to_json", "meta_from_json", "check_device_time",
           "b64encode", "b64decode", "INT64_MIN", "INT64_MAX",
           "json_default", "parse_shape", "format_shape", "array_to_list", "array_from_list",
           "iso_utc"]

KINDS = ("none", "bool", "int", "float", "str", "bytes", "array")
INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1
_ARRAY_KINDS = frozenset("biufc")  # bool, signed, unsigned, float, complex


def classify(value: Any) -> tuple[str, Any]:
    """``(kind, normalised value)``; raises TypeError/ValueError for what cannot be stored."""
    if value is None:
        return "none", None
    t = type(value)
    if t is float:
        return "float", value
    if t is int:
        if not INT64_MIN <= value <= INT64_MAX:
            raise ValueError(f"integer {value} does not fit 64 bits: emit it as a float or str")
        return "int", value
    if t is bool:
        return "bool", value
    if t is str:
        return "str", value
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in _ARRAY_KINDS:
            raise TypeError(f"arrays of dtype {value.dtype} cannot be stored: emit numeric or "
                            "bool arrays")
        return "array", value
    if isinstance(value, np.generic):
        if isinstance(value, np.bool_):
            return "bool", bool(value)
        if isinstance(value, np.integer):
            return classify(int(value))
        if isinstance(value, np.floating):
            return "float", float(value)
        return classify(np.asarray(value))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "bytes", bytes(value)
    if isinstance(value, bool):  # subclasses
        return "bool", bool(value)
    if isinstance(value, int):
        return classify(int(value))
    if isinstance(value, float):
        return "float", float(value)
    if isinstance(value, str):
        return "str", str(value)
    if isinstance(value, complex):
        return "array", np.asarray(value)
    if isinstance(value, (list, tuple)):
        arr = np.asarray(value)
        if arr.dtype.kind in _ARRAY_KINDS:
            return "array", arr
    raise TypeError(f"values of type {type(value).__name__} cannot be stored: emit a scalar "
                    "(int, float, str, bool, None, bytes) or a numeric numpy array")


def array_type(arr: np.ndarray) -> str:
    """``'<f4[32,1024]'``: dtype (with byte order) and shape in one text field (CSV, JSONL)."""
    return f"{arr.dtype.str}[{','.join(map(str, arr.shape))}]"


def parse_array_type(text: str) -> tuple[np.dtype, tuple[int, ...]]:
    dtype, _, rest = text.partition("[")
    dims = rest.rstrip("]")
    return np.dtype(dtype), tuple(int(d) for d in dims.split(",")) if dims else ()


def array_to_bytes(arr: np.ndarray) -> bytes:
    return np.ascontiguousarray(arr).tobytes()


def array_from_bytes(buf: bytes, dtype: np.dtype | str, shape: tuple[int, ...]) -> np.ndarray:
    """A writable array (consumers of replayed data may work in place)."""
    arr = np.frombuffer(buf, dtype=np.dtype(dtype))
    return arr.reshape(shape).copy()


def array_to_list(arr: np.ndarray) -> list[Any]:
    """An array as (nested) JSON lists for readers without base64: complex numbers as
    ``[re, im]`` pairs, a 0-d array as ``[x]``; exact with the dtype and shape of
    :func:`array_type` (a float32 becomes the double of the same value)."""
    if arr.dtype.kind == "c":
        arr = np.stack([arr.real, arr.imag], axis=-1)
    out: Any = arr.tolist()
    return out if arr.ndim else [out]


def array_from_list(items: Any, dtype: np.dtype | str, shape: tuple[int, ...]) -> np.ndarray:
    """The inverse of :func:`array_to_list`."""
    dt = np.dtype(dtype)
    if dt.kind == "c":
        parts = np.asarray(items, dtype=dt.type(0).real.dtype).reshape(*shape, 2)
        out = np.empty(shape, dt)
        out.real, out.imag = parts[..., 0], parts[..., 1]
        return out
    return np.asarray(items, dtype=dt).reshape(shape)


_iso_second: list[Any] = [None, ""]


def iso_utc(t_ns: int) -> str:
    """``2024-05-01T12:00:00.123456789Z``: the time people (and spreadsheets) read, exact to
    the ns beside the integer ``t_ns`` (which spreadsheets and JavaScript round)."""
    sec, ns = divmod(t_ns, 1_000_000_000)
    cached = _iso_second  # one formatting per second of data, not per row
    if cached[0] != sec:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        cached[0], cached[1] = sec, text  # a race only formats the same text twice
    else:
        text = cached[1]
    return f"{text}.{ns:09d}Z"


def parse_shape(text: str | None) -> tuple[int, ...]:
    return tuple(int(d) for d in text.split(",")) if text else ()


def format_shape(shape: tuple[int, ...]) -> str:
    return ",".join(map(str, shape))


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str) -> bytes:
    return base64.b64decode(text)


def json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"meta value of type {type(obj).__name__} is not JSON serialisable: use "
                    "numbers, strings, lists and dicts in meta")


def meta_to_json(meta: dict[str, Any] | None) -> str | None:
    """Compact JSON (ASCII-safe, so it encodes to UTF-8 whatever the input); None stays None."""
    if meta is None:
        return None
    if not isinstance(meta, dict):
        raise TypeError(f"meta must be a dict, not {type(meta).__name__}")
    return json.dumps(meta, separators=(",", ":"), default=json_default)


def meta_from_json(text: str | None) -> dict[str, Any] | None:
    return None if text is None or text == "" else json.loads(text)


def check_device_time(dt: Any) -> int | float | None:
    """Device time is an int (e.g. ns since epoch, which needs all 64 bits) or a float."""
    if dt is None:
        return None
    t = type(dt)
    if t is int or t is float:
        if t is int and not INT64_MIN <= dt <= INT64_MAX:
            raise ValueError(f"device_time {dt} does not fit 64 bits")
        return dt  # type: ignore[no-any-return]
    if isinstance(dt, bool):
        raise TypeError("device_time must be a number, not bool")
    if isinstance(dt, (int, np.integer)):
        return check_device_time(int(dt))
    if isinstance(dt, (float, np.floating)):
        return float(dt)
    raise TypeError(f"device_time of type {t.__name__} cannot be stored: use int or float")
