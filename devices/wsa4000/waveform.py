"""Signal content of the WSA4000 simulator: tones plus noise as 14-bit I/Q, precomputed.

Why a precomputed ring: streaming at gigabit line rate is ~30 MSa/s; drawing noise and
evaluating complex exponentials at that rate would take a core.  The simulator instead builds
``ring`` samples once per (SPP, decimation) and sends consecutive SPP-sized slices of it.  The
ring length is a multiple of SPP and every tone is moved to the nearest frequency with a whole
number of cycles in the ring, so the signal is continuous across the wrap and a tone placed on
an FFT bin centre (``k * fs / SPP``) stays exactly there.  The noise repeats every ring; that
is a simulator, documented, not a property of the instrument.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

__all__ = ["Tone", "parse_tone", "SampleRing", "FULL_BW", "FULL_SCALE", "REFLEVEL_ERROR"]

FULL_BW = 125e6  # ADC sample rate, complex samples/s at decimation 1
FULL_SCALE = 8192  # 14-bit I/Q: -8192..8191
REFLEVEL_ERROR = 15.7678  # 20*log10(2**13) - 62.5, from the WSA4000 documentation


@dataclass(frozen=True)
class Tone:
    """A complex tone ``offset`` Hz from the centre frequency.

    ``amplitude`` is relative to full scale (0.5 = half of 8192 counts), or, when ``dbm`` is
    set, the tone's input power in dBm: its amplitude then follows the reference level, as
    a real input tone's would when the gain changes.
    """

    offset: float
    amplitude: float
    dbm: bool = False
    phase: float = 0.0

    def full_scale_amplitude(self, reflevel: float) -> float:
        if not self.dbm:
            return self.amplitude
        # inverse of: peak dBm = 20*log10(0.5*A) + reflevel + REFLEVEL_ERROR
        return 2.0 * 10 ** ((self.amplitude - reflevel - REFLEVEL_ERROR) / 20.0)


_TONE_RE = re.compile(r"^\s*([-+0-9.eE]+)\s*(?:[:@,]\s*([-+0-9.eE]+)\s*(dBm)?)?\s*$",
                      re.IGNORECASE)


def parse_tone(text: str) -> Tone:
    """``OFFSET[:AMPLITUDE]``, e.g. ``1e6:0.5`` (half full scale) or ``-2.5e6:-30dBm``."""
    m = _TONE_RE.match(text)
    if not m:
        raise ValueError(f"tone '{text}': expected OFFSET_HZ[:AMPLITUDE] e.g. 1e6:0.5 or "
                         "1e6:-30dBm")
    offset = float(m.group(1))
    amplitude = float(m.group(2)) if m.group(2) is not None else 0.5
    dbm = m.group(3) is not None
    if not dbm and not 0 <= amplitude <= 2:
        raise ValueError(f"tone '{text}': amplitude {amplitude} is relative to full scale "
                         "(0..1), or add 'dBm'")
    return Tone(offset, amplitude, dbm)


class SampleRing:
    """The precomputed signal: ``ring`` complex samples as big-endian int16 bytes.

    ``payload(slot)`` is the bytes of packet-sized slot ``slot`` (a memoryview, no copy) and
    ``over_range[slot]`` whether any sample of that slot was clipped to 14 bits.
    """

    def __init__(self, tones: tuple[Tone, ...], noise: float, seed: int, spp: int,
                 decimation: int, reflevel: float, inversion: bool = False,
                 ring_samples: int = 1 << 18) -> None:
        self.spp = spp
        self.fs = FULL_BW / decimation
        self.slots = max(1, math.ceil(ring_samples / spp))
        n = self.slots * spp
        self.samples = n
        k = np.arange(n, dtype=np.int64)
        iq = np.zeros(n, dtype=np.complex128)
        self.tone_freqs: list[float] = []
        for tone in tones:
            cycles = round(tone.offset * n / self.fs)  # whole cycles per ring: continuous wrap
            self.tone_freqs.append(cycles * self.fs / n)
            amp = tone.full_scale_amplitude(reflevel) * FULL_SCALE
            # exact integer phase arithmetic modulo n keeps long rings precise
            iq += amp * np.exp(1j * (2 * np.pi * ((cycles * k) % n) / n + tone.phase))
        if noise > 0:
            rng = np.random.default_rng(seed)
            iq += (rng.standard_normal(n) + 1j * rng.standard_normal(n)) * (noise * FULL_SCALE)
        pairs = np.empty((n, 2), dtype=np.float64)
        pairs[:, 0] = np.rint(iq.real)
        pairs[:, 1] = np.rint(-iq.imag if inversion else iq.imag)
        clipped = (pairs < -FULL_SCALE) | (pairs > FULL_SCALE - 1)
        np.clip(pairs, -FULL_SCALE, FULL_SCALE - 1, out=pairs)
        self.iq = pairs.astype(np.int16)  # native, for tests and inspection
        self.over_range: np.ndarray = np.any(clipped.reshape(self.slots, spp * 2), axis=1)
        self._bytes = memoryview(pairs.astype(">i2").tobytes())
        self._slot_bytes = 4 * spp

    def payload(self, slot: int) -> memoryview:
        k = slot % self.slots
        return self._bytes[k * self._slot_bytes:(k + 1) * self._slot_bytes]
