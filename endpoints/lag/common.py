"""Helpers shared by the lag endpoints: derived topic names, grouping a batch for stacking."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import Any, TypeVar

from radlogger.measurement import Measurement
from radlogger.options import OptionError

__all__ = ["derive_topic", "check_template", "group_by", "product_of", "PRODUCT_FIELDS"]

K = TypeVar("K", bound=Hashable)

#: metadata fields that identify one correlator output product (the lag set key less time)
PRODUCT_FIELDS = ("station_x", "station_y", "baseband", "subband", "polarization", "phase_bin")


def check_template(key: str, template: str) -> str:
    """Validate an ``output`` option: a quantity name, may use ``{quantity}``."""
    try:
        name = template.format(quantity="q")
    except (KeyError, IndexError, ValueError):
        raise OptionError(key, f"{key} = {template!r}: only {{quantity}} may be used, e.g. "
                          "{quantity}_norm") from None
    if not name or "." in name:
        raise OptionError(key, f"{key} = {template!r}: must be a quantity name without dots")
    return template


def derive_topic(topic: str, template: str) -> str:
    """``widar.lagset`` + ``{quantity}_norm`` -> ``widar.lagset_norm`` (same device prefix)."""
    device, _, quantity = topic.rpartition(".")
    name = template.format(quantity=quantity)
    return f"{device}.{name}" if device else name


def product_of(m: Measurement) -> tuple[Any, ...]:
    """The product a measurement belongs to: its topic plus the product metadata present."""
    meta = m.meta or {}
    return (m.topic,) + tuple(meta.get(f) for f in PRODUCT_FIELDS)


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
