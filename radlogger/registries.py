"""Registries of one running pipeline: how running components find each other.

Why not a module-level dict: the configuration loader constructs every plugin to validate it,
and a reload builds new instances of unchanged sections that are never started.  A constructor
that registered itself would let such a never-started instance replace the running one (a farm
would then look for its boards among instances nobody runs).  So a component registers in
:meth:`radlogger.options.Configurable.attach`, which the pipeline calls when the component
starts running in it, and leaves in ``detach`` when it stops; and the registries belong to the
pipeline, so a draft pipeline (configuration check) or a second pipeline in the same process
never sees another's components.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["Registries"]


class Registries:
    """``(kind, group) -> {name: component}`` of one pipeline; thread-safe.

    ``kind`` names the link (``"pico_farm"``), ``group`` the owner the members belong to (the
    farm's device name), ``name`` the member (the board's device name).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._groups: dict[tuple[str, str], dict[str, Any]] = {}

    def register(self, kind: str, group: str, name: str, component: Any) -> None:
        with self._lock:
            self._groups.setdefault((kind, group), {})[name] = component

    def unregister(self, kind: str, group: str, name: str, component: Any) -> None:
        """Remove ``component``, only if it is still the one registered under ``name``."""
        with self._lock:
            members = self._groups.get((kind, group))
            if members is not None and members.get(name) is component:
                del members[name]
                if not members:
                    del self._groups[(kind, group)]

    def members(self, kind: str, group: str) -> list[Any]:
        """The components registered in ``group``, sorted by name."""
        with self._lock:
            members = self._groups.get((kind, group), {})
            return [members[k] for k in sorted(members)]
