"""The pico2-ice pulse-count / variance line protocol (see /work/shared/protocols/pico.md).

The host uploads exactly :data:`BITSTREAM_SIZE` raw bytes (no header, length or checksum) and
the board answers with CR LF terminated ASCII lines.  This module turns each line into an
:class:`Event`; the driver and the simulator both use these constants so the two sides cannot
drift apart.  Parsing never raises: a line that matches nothing is an ``Event(Kind.GARBAGE)``
that the caller counts, and so is a line whose numbers are longer than :data:`MAX_DIGITS`
(a count past int64 fits no store, and ``int()`` refuses more than 4,300 digits).
"""

from __future__ import annotations

import enum
import re
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "BITSTREAM_SIZE", "CHUNK_SIZE", "MAX_DIGITS", "WATCHDOG_S", "COUNT_WINDOW_S", "FLASH_STEPS",
    "FIRMWARES",
    "USB_IDS", "Kind", "Event", "FlashTimes", "parse_line", "fitness", "format_flash_times",
    "LINE_CONNECTED", "LINE_RECONNECTED", "LINE_READY", "LINE_STARTED", "LINE_RECEIVING",
    "LINE_FLASHING", "LINE_SAMPLING", "LINE_IDLE", "LINE_DISCONNECTED",
]

#: one iCE40UP5K bitstream: the board waits for exactly this many bytes
BITSTREAM_SIZE = 104_090
#: the host writes the bitstream in chunks of this size (the USB CDC bulk packet budget)
CHUNK_SIZE = 512
#: the board gives up on a transfer this long after its first byte
WATCHDOG_S = 2.0
#: the board counts rising edges for this long
COUNT_WINDOW_S = 1.0
#: the longest number a line may carry (every value fits a signed 64-bit integer)
MAX_DIGITS = 18
#: order of the steps in the ``FPGA Flash times`` line
FLASH_STEPS = ("init", "start", "open", "write", "close")

#: (vid, pid) -> firmware name
USB_IDS: dict[tuple[int, int], str] = {
    (0x1209, 0xB1C0): "pulsecount",
    (0x2E8A, 0x0009): "default",
    (0x2E8A, 0x000F): "bootloader",
}
#: firmware kinds a board can evaluate bitstreams with (the rest cannot run a state)
FIRMWARES = ("pulsecount", "variance")

LINE_CONNECTED = "USB Connected :)"
LINE_RECONNECTED = "USB Reconnected :)"
LINE_READY = "Waiting for bitstream transfer"
LINE_STARTED = "Bitstream transfer started"
LINE_RECEIVING = "Receiving bitstream"
LINE_FLASHING = "Flashing FPGA"
LINE_SAMPLING = "Sampling ADC"
LINE_IDLE = "IDLE"
LINE_DISCONNECTED = "USB Disconnected :("

_RE_RECEIVED = re.compile(r"Received bitstream in ([0-9]+) us :\)$")
_RE_WATCHDOG = re.compile(r"Watchdog timeout, ([0-9]+) bytes received of ([0-9]+)$")
_RE_FLASH = re.compile(r"FPGA Flash times \(us\): init (-?[0-9]+), start (-?[0-9]+), "
                       r"open (-?[0-9]+), write (-?[0-9]+), close (-?[0-9]+)")
#: the count pattern of the protocol; it may follow the flash times on the same line
_RE_PULSES = re.compile(r"pulses: ([0-9]+)")
_RE_SAMPLES = re.compile(r"samples: (.*)$")


class Kind(enum.StrEnum):
    CONNECTED = "connected"
    RECONNECTED = "reconnected"
    READY = "ready"
    STARTED = "started"
    RECEIVING = "receiving"
    RECEIVED = "received"  # value: upload time on the board in microseconds
    WATCHDOG = "watchdog"  # value: bytes the board had received
    FLASHING = "flashing"
    FLASH_TIMES = "flash_times"  # value: FlashTimes
    PULSES = "pulses"  # value: int
    SAMPLING = "sampling"
    SAMPLES = "samples"  # value: float64 array
    IDLE = "idle"
    DISCONNECTED = "disconnected"
    EMPTY = "empty"
    GARBAGE = "garbage"  # value: the line


class FlashTimes(NamedTuple):
    """Microseconds per configuration step; -1 marks a step that failed."""

    times: tuple[int, int, int, int, int]
    pulses: int | None = None  # when the count is printed on the same line

    @property
    def failed_steps(self) -> list[str]:
        return [step for step, t in zip(FLASH_STEPS, self.times, strict=True) if t < 0]

    def as_dict(self) -> dict[str, int]:
        return dict(zip(FLASH_STEPS, self.times, strict=True))


class Event(NamedTuple):
    kind: Kind
    value: Any = None


_FIXED = {
    LINE_CONNECTED: Kind.CONNECTED, LINE_RECONNECTED: Kind.RECONNECTED, LINE_READY: Kind.READY,
    LINE_STARTED: Kind.STARTED, LINE_RECEIVING: Kind.RECEIVING, LINE_FLASHING: Kind.FLASHING,
    LINE_SAMPLING: Kind.SAMPLING, LINE_IDLE: Kind.IDLE, LINE_DISCONNECTED: Kind.DISCONNECTED,
}


def _int(digits: str) -> int:
    """``int()`` of at most MAX_DIGITS digits; ValueError (the line is garbage) past that."""
    if len(digits.lstrip("-")) > MAX_DIGITS:
        raise ValueError(f"a number of {len(digits)} digits")
    return int(digits)


def parse_line(line: str) -> Event:
    """One line (without CR LF) -> an :class:`Event`; unknown text is ``Kind.GARBAGE``."""
    try:
        return _parse(line)
    except ValueError:  # a number too long for a count (and int()'s 4,300-digit limit)
        return Event(Kind.GARBAGE, line.strip())


def _parse(line: str) -> Event:
    text = line.strip()
    if not text:
        return Event(Kind.EMPTY)
    kind = _FIXED.get(text)
    if kind is not None:
        return Event(kind)
    m = _RE_FLASH.search(text)
    if m:
        times = tuple(_int(g) for g in m.groups())
        p = _RE_PULSES.search(text, m.end())
        return Event(Kind.FLASH_TIMES, FlashTimes(times, _int(p.group(1)) if p else None))  # type: ignore[arg-type]
    m = _RE_PULSES.search(text)
    if m and text.lstrip(", ").startswith("pulses:") and m.end() == len(text):
        return Event(Kind.PULSES, _int(m.group(1)))
    m = _RE_RECEIVED.match(text)
    if m:
        return Event(Kind.RECEIVED, _int(m.group(1)))
    m = _RE_WATCHDOG.match(text)
    if m:
        return Event(Kind.WATCHDOG, _int(m.group(1)))
    m = _RE_SAMPLES.match(text)
    if m:
        samples = _parse_samples(m.group(1))
        if samples is not None:
            return Event(Kind.SAMPLES, samples)
    return Event(Kind.GARBAGE, text)


def _parse_samples(text: str) -> np.ndarray | None:
    parts = text.split(",")
    if len(parts) < 2:
        return None  # fitness needs at least one difference
    try:
        samples = np.asarray(parts, dtype=np.float64)
    except ValueError:
        return None
    return samples if np.isfinite(samples).all() else None


def fitness(samples: np.ndarray) -> float:
    """Variance fitness as iCEFARM computes it: sum of |v[i+1] - v[i]| over N samples (not N-1)."""
    x = np.asarray(samples, dtype=np.float64)
    return float(np.sum(np.abs(np.diff(x))) / len(x))


def format_flash_times(times: tuple[int, ...] | list[int]) -> str:
    """The board's flash-times line (used by the simulator; kept next to its parser)."""
    return "FPGA Flash times (us): " + ", ".join(
        f"{step} {t}" for step, t in zip(FLASH_STEPS, times, strict=True))
