"""Progress of long reads (export, plot of a big store, replay): a tqdm bar on a terminal,
nothing otherwise (a pipe, a log file, the daemon under systemd, the tests).

The bar counts measurements and shows their rate and the store time reached (the total is not
known without reading every file first).  It writes to stderr, so ``export ... > list`` and
the commands' own one-line results on stdout stay clean.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import Any

from radlogger.measurement import Measurement

from .codec import iso_utc

__all__ = ["Progress", "tracked", "wanted"]


def wanted(setting: bool | None = None) -> bool:
    """``None`` (auto): only when stderr is a terminal."""
    if setting is not None:
        return setting
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


class Progress:
    """A counter bar; a no-op when not wanted (or tqdm is missing)."""

    def __init__(self, desc: str, enabled: bool | None = None, initial: int = 0) -> None:
        self._bar: Any = None
        if wanted(enabled):
            try:
                from tqdm import tqdm  # type: ignore[import-untyped]
            except ImportError:  # pragma: no cover - tqdm is a dependency
                return
            self._bar = tqdm(desc=desc, unit=" meas", unit_scale=True, file=sys.stderr,
                             dynamic_ncols=True, mininterval=0.5, leave=True,
                             initial=initial)

    def update(self, n: int, m: Measurement | None = None) -> None:
        bar = self._bar
        if bar is not None:
            if m is not None:
                bar.set_postfix_str(iso_utc(m.t_ns)[:19] + "Z", refresh=False)
            bar.update(n)

    def close(self) -> None:
        bar, self._bar = self._bar, None
        if bar is not None:
            bar.close()

    @property
    def active(self) -> bool:
        return self._bar is not None


def tracked(measurements: Iterable[Measurement], desc: str, enabled: bool | None = None,
            every: int = 256) -> Iterator[Measurement]:
    """``measurements`` unchanged, counted on a bar (updated every ``every`` items)."""
    progress = Progress(desc, enabled)
    if not progress.active:
        yield from measurements
        return
    k = 0
    try:
        for m in measurements:
            yield m
            k += 1
            if k == every:
                progress.update(k, m)
                k = 0
        progress.update(k)
    finally:
        progress.close()
