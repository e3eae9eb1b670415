"""Where a running daemon's control API is, from its configuration: for `radloggerd status`
and `radloggerd watch`.

When the file no longer loads (edited since the daemon started), its ``[radlogger]`` section
alone is read: the running daemon must still be reachable to ask it what it is doing.  The
token comes from ``control_token_file`` when set (a path as the daemon uses it: absolute is
best, a relative one is taken from the current directory), else ``control_token``.
"""

from __future__ import annotations

import configparser
from collections.abc import Callable
from pathlib import Path

from .errors import ConfigurationError

__all__ = ["AddressError", "control_of", "token_of", "resolve"]


class AddressError(ConfigurationError):
    """The control API's address or token cannot be found; the message says the fix."""


def control_of(path: str, warn: Callable[[str], None] = lambda text: None
               ) -> tuple[str, int, str]:
    """(control_host, control_port, token) of the configuration at ``path``."""
    from .config import ConfigError, load_config

    try:
        d = load_config(path).daemon
        return d.control_host, d.control_port, token_of(d.control_token, d.control_token_file)
    except ConfigError as exc:
        raw = configparser.ConfigParser(interpolation=None, strict=False)
        try:
            raw.read(path, encoding="utf-8")
            section = dict(raw["radlogger"]) if raw.has_section("radlogger") else {}
            port = int(section.get("control_port", "0"), 0)
        except (configparser.Error, ValueError, OSError, UnicodeDecodeError):
            raise AddressError(str(exc)) from None
        warn(f"{path} does not load ({str(exc).splitlines()[0]}); using its control_port "
             f"{port} alone")
        return (section.get("control_host", "127.0.0.1").strip(), port,
                token_of(section.get("control_token", "").strip(),
                         section.get("control_token_file", "").strip()))


def token_of(token: str, token_file: str) -> str:
    """The daemon's token: its token_file wins."""
    if not token_file:
        return token
    file = Path(token_file)
    try:
        return file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise AddressError(f"control_token_file {file}: {exc.strerror}; run as the daemon's "
                           "user, or pass --token") from None


def resolve(path: str | None, url: str | None, port: int | None, host: str,
            token: str | None, warn: Callable[[str], None] = lambda text: None
            ) -> tuple[str, str | None]:
    """The control API's URL and token from what the user gave: ``--url``, ``--port`` (on
    ``--host``), or ``-c`` with the daemon's configuration; ``--token`` wins over the file's."""
    if url is None and port is not None:
        url = f"http://{host}:{port}"
    if url is not None:
        return url, token
    if path is None:
        raise AddressError("which daemon? give --port, --url, or -c with the daemon's "
                           "configuration")
    c_host, c_port, c_token = control_of(path, warn)
    if not c_port:
        raise AddressError(f"{path}: control_port is 0 (the control API is off); set "
                           "control_port in [radlogger] and restart the daemon")
    return f"http://{c_host}:{c_port}", token or c_token or None
