"""Helpers shared by the lag endpoints: the product a measurement belongs to, grouping a batch
for stacking.  (Output topics and laziness are ``radlogger.processing``'s.)"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import Any, TypeVar

from radlogger.measurement import Measurement
from radlogger.products import PRODUCT_FIELDS

__all__ = ["group_by", "product_of", "PRODUCT_FIELDS"]

K = TypeVar("K", bound=Hashable)


def product_of(m: Measurement) -> tuple[Any, ...]:
    """The product a measurement belongs to: its topic plus the product metadata present."""
    meta = m.meta or {}
    return (m.topic, *map(meta.get, PRODUCT_FIELDS))


def group_by(batch: Iterable[Measurement], key: Callable[[Measurement], K]
             ) -> dict[K, list[Measurement]]:
    """Items per key, each list in arrival order (dicts keep first-seen key order)."""
    out: dict[K, list[Measurement]] = {}
    for m in batch:
        k = key(m)
        bucket = out.get(k)
        if bucket is None:
            out[k] = [m]
        else:
            bucket.append(m)
    return out
