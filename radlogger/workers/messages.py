"""The binary forms on the worker sockets, besides measurements.

Measurements cross in :mod:`radlogger.wire`'s binary form (``b"RLW1"`` + u32 header length +
JSON header + raw array bytes), the one encoding every boundary of radloggerd uses, sent with
``sendmsg`` as separate buffers so the array bytes are not copied in user space.  What only
worker processes need is here, with its own magic so a datagram's first four bytes say what it is:

* many measurements that line up, column-wise (:mod:`.batch`, magic ``RLB1``);
* a control event, 24 bytes ``<4sBxHqq``: magic ``RLI1``, kind 3, code, argument, t_ns;
* a shared-memory slot reference, 20 bytes ``<4sBxHIQ``: magic, kind 2, slot, length,
  generation (the measurement itself is in the slot, in the same binary form);
* upstream, text: ``KIND INCARNATION BODY`` with KIND one of hello, ready, hb, bye (bodies
  ``key=value`` counters), log (``LEVEL logger: text``), error, ctl (``name arg``).

Never pickle: everything is parsed with fixed ``struct`` layouts or by :mod:`radlogger.wire`.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from .. import wire
from ..measurement import Measurement
from . import batch

if TYPE_CHECKING:
    from .shm import SlotRing

__all__ = ["MAGIC", "MEASUREMENT", "SHMREF", "CONTROL", "BATCH", "read_measurements",
           "CONTROL_CODES", "control_name", "kind_of", "measurement_parts", "encode_control",
           "decode_control", "encode_ref",
           "decode_ref", "read_measurement", "format_message", "parse_message",
           "parse_counters", "WireError"]

WireError = wire.WireError
MAGIC = b"RLI1"
MEASUREMENT, SHMREF, CONTROL, BATCH = 1, 2, 3, 4
_CTRL = struct.Struct("<4sBxHqq")
_REF = struct.Struct("<4sBxHIQ")
_HLEN = struct.Struct("<I")

#: control events every worker understands; codes >= 100 are free for applications.
#: ``item SEQ`` ends a pool's work item: its ack carries ``SEQ FAILED RECREATED [CRASH TEXT]``
CONTROL_CODES = {"stop": 1, "flush": 2, "reset": 3, "mark": 4, "item": 5}
_CODE_NAMES = {v: k for k, v in CONTROL_CODES.items()}


def control_name(code: int) -> str:
    return _CODE_NAMES.get(code, f"code{code}")


def kind_of(data: bytes | memoryview) -> int:
    """MEASUREMENT, BATCH, SHMREF or CONTROL; raises :class:`WireError` for anything else."""
    head = bytes(data[:4])
    if head == wire.MAGIC:
        return MEASUREMENT
    if head == batch.MAGIC:
        return BATCH
    if head == MAGIC and len(data) > 4 and data[4] in (SHMREF, CONTROL):
        return int(data[4])
    raise WireError(f"not a worker datagram (starts with {head!r})")


def measurement_parts(m: Measurement) -> tuple[list[Any], int]:
    """``m`` in radlogger.wire's binary form, as buffers for ``sendmsg``, and its size."""
    header, body = wire.split(m)
    size = len(wire.MAGIC) + _HLEN.size + len(header) + len(body)
    return [wire.MAGIC + _HLEN.pack(len(header)), header, body], size


def encode_control(code: int, arg: int = 0, t_ns: int = 0) -> bytes:
    return _CTRL.pack(MAGIC, CONTROL, code, arg, t_ns)


def decode_control(data: bytes | memoryview) -> tuple[int, int, int]:
    """(code, argument, t_ns) of a control datagram."""
    if len(data) != _CTRL.size:
        raise WireError("malformed control datagram")
    magic, kind, code, arg, t_ns = _CTRL.unpack(data)
    if magic != MAGIC or kind != CONTROL:
        raise WireError("not a control datagram")
    return code, arg, t_ns


def encode_ref(slot: int, length: int, generation: int) -> bytes:
    return _REF.pack(MAGIC, SHMREF, slot, length, generation)


def decode_ref(data: bytes | memoryview) -> tuple[int, int, int]:
    """(slot, length, generation) of a shared-memory reference."""
    if len(data) != _REF.size:
        raise WireError("malformed shared-memory reference")
    magic, kind, slot, length, gen = _REF.unpack(data)
    if magic != MAGIC or kind != SHMREF:
        raise WireError("not a shared-memory reference")
    return slot, length, gen


def read_measurement(data: bytes, ring: SlotRing | None) -> Measurement:
    """A measurement datagram, or a slot reference resolved (and freed) through ``ring``."""
    items = read_measurements(data, ring)
    if len(items) != 1:
        raise WireError(f"{len(items)} measurements where one was expected")
    return items[0]


def read_measurements(data: bytes, ring: SlotRing | None) -> list[Measurement]:
    """The measurements of a datagram (one, or a batch), or of the slot it references
    (resolved and freed through ``ring``)."""
    kind = kind_of(data)
    if kind == SHMREF:
        slot, length, gen = decode_ref(data)
        payload = ring.read(slot, length, gen) if ring is not None else None
        if payload is None:
            raise WireError(f"stale shared-memory reference (slot {slot})")
        data = payload
        kind = kind_of(data)
    if kind == BATCH:
        return batch.decode_batch(data)
    return [wire.decode(data)]


def format_message(kind: str, incarnation: int, body: str = "") -> bytes:
    return f"{kind} {incarnation} {body}".encode()


def parse_message(data: bytes) -> tuple[str, int, str] | None:
    """(kind, incarnation, body) of an upstream text message, or None if malformed."""
    kind, _, rest = data.decode("utf-8", "replace").partition(" ")
    inc, _, body = rest.partition(" ")
    return (kind, int(inc), body) if inc.isdigit() else None


def parse_counters(body: str) -> dict[str, int]:
    """``rx=3 done=2`` -> ``{"rx": 3, "done": 2}`` (other words are ignored)."""
    out = {}
    for item in body.split():
        key, _, value = item.partition("=")
        if value.lstrip("-").isdigit():
            out[key] = int(value)
    return out
