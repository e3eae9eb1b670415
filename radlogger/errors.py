"""One root for the project's own exceptions, split by where in a component's life they happen.

python-can splits its errors the same way (not installed / initialisation / operation /
timeout): a caller that wants "anything radloggerd raised on purpose" catches
:class:`RadloggerError`; one that can act on a phase catches that phase.

* :class:`ConfigurationError`: before running: a bad setting, an unknown plugin, a package or
  backend not installed, a server that cannot bind.  The user fixes it and starts again.
* :class:`ConnectionFailure`: reaching something outside failed or was refused (an instrument's
  control link, a remote radloggerd, the farm).  Usually retried with backoff.  Not the builtin
  ``ConnectionError`` (an ``OSError``); classes that callers catch as that keep it as a
  second base.
* :class:`ProtocolError`: bad input from outside: a malformed packet or frame, a request the
  server refuses, a file that is not a store.  The input is counted or answered; the
  component goes on.
* :class:`OperationError`: a running component could not do its job (a store could not keep
  what it was given).

Classes that callers already catch as a builtin (``ValueError``, ``LookupError``,
``RuntimeError``, ``ConnectionError``) keep that builtin as a second base, so no existing
``except`` changes meaning.  tests/test_errors.py checks that every exception class defined in
the project derives from :class:`RadloggerError`.
"""

from __future__ import annotations

__all__ = ["RadloggerError", "ConfigurationError", "ConnectionFailure", "ProtocolError",
           "OperationError"]


class RadloggerError(Exception):
    """Raised by radloggerd on purpose, with a message that names the thing and the fix."""


class ConfigurationError(RadloggerError):
    """A setting, plugin or installed package is wrong or missing: fix it and start again."""


class ConnectionFailure(RadloggerError):
    """Reaching an instrument, a remote radloggerd or the farm failed or was refused."""


class ProtocolError(RadloggerError):
    """Bad input from outside (a packet, a frame, a request, a file); the component goes on."""


class OperationError(RadloggerError):
    """A running component could not do its job."""
