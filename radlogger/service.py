"""How the daemon meets its service manager: systemd's ``sd_notify`` readiness datagrams, and
logging to standard error (the journal) or a rotatable file."""

from __future__ import annotations

import logging
import logging.handlers
import os
import socket
import weakref

__all__ = ["configure_logging", "sd_notify"]

log = logging.getLogger("radlogger.daemon")

_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_JOURNAL_FORMAT = "%(levelname)s %(name)s: %(message)s"  # the journal stamps time itself


def sd_notify(message: str) -> bool:
    """Send one ``sd_notify`` datagram if systemd asked for them (``$NOTIFY_SOCKET``)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.sendto(message.encode(), address)
    except OSError as exc:
        log.debug("sd_notify failed: %s", exc)
        return False
    return True


#: root handlers configure_logging installed (replaced at the next call, e.g. a reload)
_OUR_HANDLERS: weakref.WeakSet[logging.Handler] = weakref.WeakSet()


def configure_logging(level: str, file: str = "") -> None:
    """Root logging for the daemon: standard error (the journal) or a rotatable file."""
    root = logging.getLogger()
    if file:  # opened first: if it fails (OSError), the current handlers stay
        handler: logging.Handler = logging.handlers.WatchedFileHandler(file, encoding="utf-8")
        fmt = _LOG_FORMAT
    else:
        handler = logging.StreamHandler()
        fmt = _JOURNAL_FORMAT if os.environ.get("JOURNAL_STREAM") else _LOG_FORMAT
    for old in list(root.handlers):
        if old in _OUR_HANDLERS:
            root.removeHandler(old)
            old.close()
    handler.setFormatter(logging.Formatter(fmt))
    _OUR_HANDLERS.add(handler)
    root.addHandler(handler)
    root.setLevel(level)
