"""What a simulated board answers for a bitstream: documented functions, so tests know them.

The pulse count is ``1998 + crc32(data) % 30000`` (spanning the 2-32 kHz sample circuits); in
variance mode the samples are ``default_rng(crc32(data)).integers(0, 4096, 64)``.  Neither
depends on the count window, which only sets how long the board "counts".
"""

from __future__ import annotations

import zlib

import numpy as np

from .protocol import fitness

__all__ = ["PULSE_BASE", "PULSE_SPREAD", "N_SAMPLES", "expected_pulses", "expected_samples",
           "expected_fitness", "pulses_for", "samples_for", "sim_serial"]

PULSE_BASE = 1998
PULSE_SPREAD = 30000
N_SAMPLES = 64


def pulses_for(crc: int) -> int:
    """The count for a bitstream whose crc32 is ``crc``."""
    return PULSE_BASE + crc % PULSE_SPREAD


def samples_for(crc: int) -> np.ndarray:
    """The ADC samples for a bitstream whose crc32 is ``crc`` (variance firmware)."""
    return np.random.default_rng(crc).integers(0, 4096, N_SAMPLES)


def expected_pulses(data: bytes) -> int:
    """The simulated count for a bitstream: ``1998 + crc32(data) % 30000``."""
    return pulses_for(zlib.crc32(data))


def expected_samples(data: bytes) -> np.ndarray:
    """The simulated ADC samples for a bitstream (variance firmware)."""
    return samples_for(zlib.crc32(data))


def expected_fitness(data: bytes) -> float:
    return fitness(expected_samples(data))


def sim_serial(i: int) -> str:
    """Serial number of the i-th simulated board (16 hex digits like the real ones)."""
    return f"E6614C31{i:08X}"
