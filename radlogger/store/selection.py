"""What to read back: topic patterns and a wall-clock time window, and how users write times.

Topic patterns are the pipeline's own subscription patterns (exact topic, subtree prefix such
as ``wsa1``, or a glob such as ``*.iq``), so ``--topic`` means the same everywhere.  The time
window applies to ``t_ns`` (host wall-clock), ``since`` inclusive, ``until`` exclusive.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from radlogger.topics import pattern_matches

__all__ = ["Selection", "parse_time", "parse_where"]


_RELATIVE = re.compile(r"^-(\d+(?:\.\d+)?)\s*(s|m|h|d)$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass
class Selection:
    """Topic patterns (empty = all topics) and ``[since_ns, until_ns)``."""

    topics: tuple[str, ...] = ()
    since_ns: int | None = None
    until_ns: int | None = None
    #: meta conditions, (key, value as text): ``baseline=1-2`` keeps measurements whose
    #: ``meta["baseline"]`` is ``"1-2"`` (numbers and bools compare by their JSON text)
    where: tuple[tuple[str, str], ...] = ()
    _cache: dict[str, bool] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def of(cls, topics: Iterable[str] | None = None, since_ns: int | None = None,
           until_ns: int | None = None, where: Iterable[tuple[str, str]] | None = None
           ) -> Selection:
        return cls(tuple(topics or ()), since_ns, until_ns, tuple(where or ()))

    def meta_ok(self, meta: Any) -> bool:
        """Whether ``meta`` satisfies every ``where`` condition (a missing key does not)."""
        if not self.where:
            return True
        if not isinstance(meta, dict):
            return False
        return all(k in meta and _same(meta[k], text) for k, text in self.where)

    def index_ok(self, index: Iterable[tuple[str, str]]) -> bool:
        """Whether a segment indexed by ``index`` ((key, JSON value) pairs) may match: a
        condition on a key the index lacks is left to :meth:`meta_ok`."""
        if not self.where:
            return True
        known = dict(index)
        return all(k not in known or _same(json.loads(known[k]), text)
                   for k, text in self.where)

    def topic_ok(self, topic: str) -> bool:
        if not self.topics:
            return True
        try:
            return self._cache[topic]
        except KeyError:
            ok = self._cache[topic] = any(pattern_matches(p, topic) for p in self.topics)
            return ok

    def time_ok(self, t_ns: int) -> bool:
        return (self.since_ns is None or t_ns >= self.since_ns) and \
            (self.until_ns is None or t_ns < self.until_ns)

    @property
    def timed(self) -> bool:
        return self.since_ns is not None or self.until_ns is not None


def _same(value: Any, text: str) -> bool:
    if isinstance(value, str):
        return value == text
    return json.dumps(value) == text or str(value) == text


def parse_where(items: Iterable[str]) -> list[tuple[str, str]]:
    """``key=value`` texts as conditions; ValueError names a malformed one."""
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{item!r}: expected key=value, e.g. polarization=RR")
        out.append((key.strip(), value.strip()))
    return out


def parse_time(text: str, now_ns: int | None = None) -> int:
    """A user's time as ns since the epoch.

    Accepts ISO 8601 (``2024-05-01T12:00:00``, ``2024-05-01 12:00``, with ``Z`` or an offset;
    without one it is local time, as ``date`` shows it), seconds since the epoch
    (``1714564800.5``), ``now``, or a time relative to now (``-30s``, ``-10m``, ``-2h``,
    ``-1d``).  Raises ValueError with the accepted forms.
    """
    raw = text.strip()
    now = time.time_ns() if now_ns is None else now_ns
    if raw == "now":
        return now
    rel = _RELATIVE.match(raw)
    if rel:
        return now - int(float(rel.group(1)) * _UNIT_S[rel.group(2)] * 1e9)
    try:
        return int((Decimal(raw) * 1_000_000_000).to_integral_value())  # exact to the ns
    except (InvalidOperation, ValueError, OverflowError):
        pass
    try:
        dt = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"cannot read the time {text!r}: use ISO 8601 (2024-05-01T12:00:00, "
                         "add Z for UTC), seconds since the epoch, now, or -10m / -2h / -1d"
                         ) from None
    return int(round(dt.timestamp() * 1e6)) * 1000
