"""Which pico drivers belong to which farm: the one link between the two kinds of device.

Drivers and the farm are separate devices of one pipeline (each with its own thread and
lifecycle), built independently from the configuration, so a driver with ``farm = NAME``
announces itself here and the farm named ``NAME`` looks its boards up.  Weak references: a
driver that is dropped (reload, end of a test) leaves the farm by itself.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

__all__ = ["register", "unregister", "boards"]

_lock = threading.Lock()
_farms: dict[str, weakref.WeakValueDictionary[str, Any]] = {}


def register(farm: str, device: Any) -> None:
    with _lock:
        _farms.setdefault(farm, weakref.WeakValueDictionary())[device.name] = device


def unregister(farm: str, device: Any) -> None:
    name: str = device.name
    with _lock:
        members = _farms.get(farm)
        if members is not None and members.get(name) is device:
            del members[name]


def boards(farm: str) -> list[Any]:
    """The drivers attached to ``farm``, sorted by device name."""
    with _lock:
        members = _farms.get(farm)
        return [members[k] for k in sorted(members)] if members else []
