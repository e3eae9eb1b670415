"""One error root: every exception class the project defines derives from RadloggerError, and the
builtin bases callers catch (ValueError, ConnectionError, ...) are kept beside it."""
from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import radlogger
import radlogger.devices
import radlogger.endpoints
from radlogger.errors import (
    ConfigurationError,
    ConnectionFailure,
    OperationError,
    ProtocolError,
    RadloggerError,
)


def _project_modules() -> list[str]:
    # an editable install maps devices/ and endpoints/ apart from radlogger/: walk all three
    names = set()
    for package in (radlogger, radlogger.devices, radlogger.endpoints):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            names.add(info.name)
    return sorted(names)


def _exception_classes() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for name in _project_modules():
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if inspect.isclass(value) and issubclass(value, BaseException) \
                    and value.__module__ == name:
                found[f"{name}.{attr}"] = value
    return found


def test_the_walk_sees_plugins_and_core() -> None:
    names = _exception_classes()
    assert "radlogger.wire.WireError" in names
    assert "radlogger.devices.widar.frames.BadFrame" in names
    assert "radlogger.endpoints.storage.diskerrors.StorageError" in names


def test_every_project_exception_has_the_one_root() -> None:
    stray = sorted(name for name, cls in _exception_classes().items()
                   if not issubclass(cls, RadloggerError))
    assert stray == []


@pytest.mark.parametrize(("path", "phase", "builtin"), [
    ("radlogger.inifile.ConfigError", ConfigurationError, Exception),
    ("radlogger.options.OptionError", ConfigurationError, ValueError),
    ("radlogger.mqtt.MQTTConfigError", ConfigurationError, ValueError),
    ("radlogger.plugins.PluginError", ConfigurationError, LookupError),
    ("radlogger.web.WebError", ConfigurationError, RuntimeError),
    ("radlogger.devices.pico.usb.UsbUnavailable", ConfigurationError, RuntimeError),
    ("radlogger.client.RemoteError", ConnectionFailure, RuntimeError),
    ("radlogger.client.AuthError", ConnectionFailure, RuntimeError),
    ("radlogger.devices.pico.farm.client.FarmClientError", ConnectionFailure, RuntimeError),
    ("radlogger.devices.wsa4000.scpi.SCPIError", ConnectionFailure, ConnectionError),
    ("radlogger.wire.WireError", ProtocolError, ValueError),
    ("radlogger.devices.widar.frames.BadFrame", ProtocolError, ValueError),
    ("radlogger.store.reader.StoreError", ProtocolError, ValueError),
    ("radlogger.devices.pico.farm.errors.NotFound", ProtocolError, Exception),
    ("radlogger.devices.wsa4000.instrument.InstrumentError", ProtocolError, Exception),
    ("radlogger.endpoints.storage.diskerrors.StorageError", OperationError, Exception),
])
def test_phase_and_builtin_base(path: str, phase: type[RadloggerError],
                                builtin: type[BaseException]) -> None:
    module, _, name = path.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    assert issubclass(cls, phase) and issubclass(cls, builtin)


def test_a_connection_failure_is_still_an_oserror() -> None:
    from radlogger.devices.wsa4000.scpi import SCPIError
    exc = SCPIError("no answer from 10.0.0.2:37001")
    assert isinstance(exc, OSError) and str(exc) == "no answer from 10.0.0.2:37001"
