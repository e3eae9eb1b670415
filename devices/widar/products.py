"""Which WIDAR products the assembler accepts: baselines, basebands, sub-bands, polarizations
and phase bins from the configuration, checked for a whole batch of frame headers at once."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from radlogger.options import OptionError

from .frames import POLARIZATIONS

__all__ = ["Products", "parse_baselines"]


def parse_baselines(items: Iterable[str]) -> list[tuple[int, int]]:
    """``["1-2", "3-4"]`` -> ``[(1, 2), (3, 4)]``; raises OptionError with the fix."""
    out = []
    for item in items:
        try:
            x, y = (int(p) for p in str(item).replace(":", "-").split("-"))
        except ValueError:
            raise OptionError("baselines", f"baselines: {item!r} is not a station pair "
                              "like 1-2") from None
        if not (0 <= x <= 255 and 0 <= y <= 255):
            raise OptionError("baselines", f"baselines: {item!r}: station ids are 0-255")
        out.append((x, y))
    return out


def _int_list(key: str, items: Iterable[Any], limit: int) -> list[int]:
    try:
        values = [int(v) for v in items]
    except ValueError:
        raise OptionError(key, f"{key}: expected integers, got {list(items)!r}") from None
    bad = [v for v in values if not 0 <= v <= limit]
    if bad:
        raise OptionError(key, f"{key}: {bad[0]} is out of range 0-{limit}")
    return values


class Products:
    """Which products the configuration accepts; a vectorised test over header words."""

    def __init__(self, baselines: Iterable[str] = (), basebands: Iterable[Any] = (),
                 subbands: Iterable[Any] = (), polarizations: Iterable[str] = (),
                 phase_bins: int = 0) -> None:
        self.baselines = np.array([x << 8 | y for x, y in parse_baselines(baselines)], np.uint32)
        self.basebands = np.array(_int_list("basebands", basebands, 7), np.uint32)
        self.subbands = np.array(_int_list("subbands", subbands, 31), np.uint32)
        pols = [str(p).upper() for p in polarizations]
        unknown = [p for p in pols if p not in POLARIZATIONS]
        if unknown:
            raise OptionError("polarizations", f"polarizations: {unknown[0]!r} is not one of "
                              f"{', '.join(POLARIZATIONS)}")
        self.polarizations = np.array([POLARIZATIONS.index(p) for p in pols], np.uint32)
        self.phase_bins = phase_bins

    @property
    def any(self) -> bool:
        return not (len(self.baselines) or len(self.basebands) or len(self.subbands)
                    or len(self.polarizations) or self.phase_bins)

    def accept(self, words: np.ndarray) -> np.ndarray:
        """Boolean mask of frames (header words, native) whose product is configured."""
        ok = np.ones(len(words), bool)
        w1 = words[:, 1]
        if len(self.baselines):
            ok &= np.isin((w1 & 0xFF) << 8 | (w1 >> 16) & 0xFF, self.baselines)
        if len(self.basebands):
            ok &= np.isin((w1 >> 13) & 7, self.basebands) & np.isin(w1 >> 29, self.basebands)
        if len(self.subbands):
            ok &= np.isin((w1 >> 8) & 31, self.subbands) & \
                np.isin((w1 >> 24) & 31, self.subbands)
        if len(self.polarizations):
            ok &= np.isin(words[:, 3] >> 30, self.polarizations)
        if self.phase_bins:
            ok &= (words[:, 8] & 0xFFFF) < self.phase_bins
        return ok
