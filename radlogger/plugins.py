"""The plugin registry: devices and endpoints found through entry points, imported lazily.

Built-ins register in ``setup.cfg`` exactly as a third-party package would, under the groups
``radlogger.devices`` and ``radlogger.endpoints``.  Nothing is imported until asked for, so a
plugin with a missing optional dependency (h5py, paho-mqtt) breaks only its own use, with a
message that says what to install.
"""

from __future__ import annotations

import importlib
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from radlogger.errors import ConfigurationError

__all__ = ["DEVICE_GROUP", "ENDPOINT_GROUP", "PluginError", "names", "load", "load_device",
           "load_endpoint", "load_class"]

DEVICE_GROUP = "radlogger.devices"
ENDPOINT_GROUP = "radlogger.endpoints"


class PluginError(ConfigurationError, LookupError):
    """An unknown or broken plugin; the message lists what is known or what to install."""


def _entry_points(group: str) -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=group)}


def names(group: str) -> list[str]:
    return sorted(_entry_points(group))


def load(group: str, name: str) -> Any:
    eps = _entry_points(group)
    what = "driver" if group == DEVICE_GROUP else "endpoint type"
    if name not in eps:
        known = ", ".join(sorted(eps)) or "(none: is radloggerd installed with pip install -e .?)"
        raise PluginError(f"unknown {what} '{name}'; known: {known}")
    try:
        cls = eps[name].load()
    except ImportError as exc:
        raise PluginError(f"{what} '{name}' cannot be loaded: {exc} (install the package it "
                          f"needs, e.g. pip install -e '.[all]')") from exc
    return cls


def load_device(name: str) -> Any:
    return load(DEVICE_GROUP, name)


def load_endpoint(name: str) -> Any:
    return load(ENDPOINT_GROUP, name)


def load_class(spec: str, group: str = ENDPOINT_GROUP, base: type | None = None) -> Any:
    """A class named by entry-point name in ``group`` (``fft``) or by path (``pkg.mod:Class``).

    The one loader for every place that names a class in text (pool workers, pipeline-process
    stages, command-line writers), so errors read the same everywhere.  With ``base`` the class
    must be a subclass of it.  Raises :class:`PluginError` (a LookupError) or TypeError.
    """
    if ":" not in spec:
        cls = load(group, spec)
    else:
        module_name, _, attr = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise PluginError(f"class {spec!r}: cannot import {module_name}: {exc}") from None
        try:
            cls = getattr(module, attr)
        except AttributeError:
            raise PluginError(f"class {spec!r}: {module_name} has no {attr}") from None
    if base is not None and not (isinstance(cls, type) and issubclass(cls, base)):
        raise TypeError(f"{spec} is not a {base.__name__} class")
    return cls
