"""The WSA4000's SCPI subset: one command table shared by the client (driver) and the simulator.

Keeping the table in one place means the driver's option ranges, the commands it sends and what
the simulator accepts cannot drift apart.  Header matching follows SCPI (IEEE 488.2): each node
is a mnemonic whose upper-case letters are the short form (``FREQuency`` matches ``FREQ`` and
``FREQUENCY``), nodes in brackets are optional (``[:SENSe]``), case is ignored and the leading
``:`` is optional.  Several commands may share a line separated by ``;``.
"""

from __future__ import annotations

import re
import socket
import time
from dataclasses import dataclass
from typing import Any

from radlogger.errors import ConnectionFailure

__all__ = ["Command", "COMMANDS", "RF_GAINS", "DEFAULT_CONTROL_PORT", "DEFAULT_DATA_PORT",
           "parse_line", "lookup", "SCPIClient", "SCPIError", "MAX_LINE",
           "check_value"]

RF_GAINS = ("HIGH", "MEDIUM", "LOW", "VLOW")
DEFAULT_CONTROL_PORT = 37001  # SCPI
DEFAULT_DATA_PORT = 37000  # VRT stream
#: longest reply line accepted: replies are short words and numbers; more means garbage
MAX_LINE = 64 << 10


class SCPIError(ConnectionFailure, ConnectionError):
    """The control connection failed or the instrument answered nonsense."""


@dataclass(frozen=True)
class Command:
    """One SCPI command: its SCPI mnemonic pattern, the form clients send, and its values."""

    key: str
    pattern: str
    form: str
    set: bool = True
    query: bool = True
    kind: str = "none"  # none | int | float | word | bool | text
    min: float | None = None
    max: float | None = None
    step: float | None = None
    choices: tuple[str, ...] | None = None

    @property
    def nodes(self) -> list[tuple[str, str, bool]]:
        """(short, long, optional) per node of :attr:`pattern`."""
        out = []
        for raw in re.findall(r"\[?:?[*A-Za-z0-9]+\]?", self.pattern):
            optional = raw.startswith("[")
            word = raw.strip("[]:")
            short = "".join(c for c in word if c.isupper() or c.isdigit() or c == "*")
            out.append((short, word.upper(), optional))
        return out


COMMANDS: dict[str, Command] = {c.key: c for c in (
    Command("idn", "*IDN", "*IDN", set=False),
    Command("rst", "*RST", "*RST", query=False),
    Command("lock_request", ":SYSTem:LOCK:REQuest", ":SYSTEM:LOCK:REQUEST", set=False,
            kind="word", choices=("ACQ", "ACQUISITION")),
    Command("lock_have", ":SYSTem:LOCK:HAVE", ":SYSTEM:LOCK:HAVE", set=False, kind="word",
            choices=("ACQ", "ACQUISITION")),
    Command("lock_release", ":SYSTem:LOCK:RELease", ":SYSTEM:LOCK:RELEASE", query=False,
            kind="word", choices=("ACQ", "ACQUISITION")),
    Command("freq", "[:SENSe]:FREQuency:CENTer", ":FREQ:CENTER", kind="int", min=0, max=10e9,
            step=100e3),
    Command("shift", "[:SENSe]:FREQuency:SHIFt", ":FREQ:SHIFT", kind="float", min=0,
            max=125e6),
    Command("decimation", "[:SENSe]:DECimation", ":SENSE:DECIMATION", kind="int", min=1,
            max=1023),
    Command("rf_gain", ":INPut:GAIN:RF", ":INPUT:GAIN:RF", kind="word", choices=RF_GAINS),
    Command("if_gain", ":INPut:GAIN:IF", ":INPUT:GAIN:IF", kind="int", min=-10, max=34),
    Command("preselect", ":INPut:FILTer:PRESelect", ":INPUT:FILTER:PRESELECT", kind="bool"),
    Command("antenna", ":INPut:ANTenna", ":INPUT:ANTENNA", kind="int", min=1, max=2),
    Command("trigger_type", ":TRIGger:TYPE", ":TRIGGER:TYPE", kind="word",
            choices=("NONE", "LEVEL")),
    Command("trigger_level", ":TRIGger:LEVel", ":TRIGGER:LEVEL", kind="text"),
    Command("spp", ":TRACe:SPP", ":TRACE:SPP", kind="int", min=128, max=65520, step=16),
    Command("ppb", ":TRACe:BLOCk:PACKets", ":TRACE:BLOCK:PACKETS", kind="int", min=1,
            max=2 ** 31 - 1),
    Command("block_data", ":TRACe:BLOCk:DATA", ":TRACE:BLOCK:DATA", set=False),
    Command("stream_start", ":TRACe:STReam:STARt", ":TRACE:STREAM:START", query=False,
            kind="text"),
    Command("stream_stop", ":TRACe:STReam:STOP", ":TRACE:STREAM:STOP", query=False),
    Command("stream_status", ":TRACe:STReam:STATus", ":TRACE:STREAM:STATUS", set=False),
    Command("abort", ":SYSTem:ABORt", ":SYSTEM:ABORT", query=False),
    Command("flush", ":SYSTem:FLUSh", ":SYSTEM:FLUSH", query=False),
    Command("error", ":SYSTem:ERRor", ":SYSTEM:ERROR", set=False),
    Command("lock_rf", "[:SENSe]:LOCK:RF", ":SENSE:LOCK:RF", set=False),
    Command("lock_reference", "[:SENSe]:LOCK:REFerence", ":SENSE:LOCK:REFERENCE", set=False),
)}


@dataclass(frozen=True)
class Parsed:
    header: str  # as received, without a trailing '?'
    query: bool
    args: list[str]


def parse_line(line: str) -> list[Parsed]:
    """Split one received line into commands; blank pieces are ignored."""
    out = []
    for piece in line.split(";"):
        piece = piece.strip()
        if not piece:
            continue
        head, _, rest = piece.partition(" ")
        head = head.strip()
        query = head.endswith("?")
        if query:
            head = head[:-1]
        args = [a.strip() for a in rest.split(",")] if rest.strip() else []
        out.append(Parsed(head, query, args))
    return out


def _match(nodes: list[tuple[str, str, bool]], tokens: list[str]) -> bool:
    if not nodes:
        return not tokens
    short, long, optional = nodes[0]
    if tokens and tokens[0] in (short, long) and _match(nodes[1:], tokens[1:]):
        return True
    return optional and _match(nodes[1:], tokens)


_LOOKUP_CACHE: dict[str, Command | None] = {}


def lookup(header: str) -> Command | None:
    """The command a received header names (``FREQ:CENTER``, ``:sense:freq:cent``), or None."""
    key = header.upper()
    try:
        return _LOOKUP_CACHE[key]
    except KeyError:
        pass
    tokens = [t for t in key.lstrip(":").split(":")]
    found = None
    if all(tokens):
        for cmd in COMMANDS.values():
            if _match(cmd.nodes, tokens):
                found = cmd
                break
    if len(_LOOKUP_CACHE) < 4096:
        _LOOKUP_CACHE[key] = found
    return found


def check_value(cmd: Command, raw: str) -> Any:
    """Convert and range-check a set value; ValueError says what is accepted."""
    kind = cmd.kind
    if kind == "int" or kind == "float":
        try:
            number = float(raw.split()[0]) if raw.strip() else float("nan")
        except ValueError:
            raise ValueError(f"{cmd.form}: '{raw}' is not a number") from None
        if number != number:
            raise ValueError(f"{cmd.form}: a value is required")
        if (cmd.min is not None and number < cmd.min) or \
                (cmd.max is not None and number > cmd.max):
            raise ValueError(f"{cmd.form}: {raw} is outside {cmd.min:g}..{cmd.max:g}")
        if cmd.step and abs(number / cmd.step - round(number / cmd.step)) > 1e-9:
            raise ValueError(f"{cmd.form}: {raw} is not a multiple of {cmd.step:g}")
        return int(round(number)) if kind == "int" else number
    if kind == "word":
        word = raw.strip().upper()
        if cmd.choices and word not in cmd.choices:
            raise ValueError(f"{cmd.form}: '{raw}' is not one of {', '.join(cmd.choices)}")
        return word
    if kind == "bool":
        word = raw.strip().upper()
        if word in ("1", "ON"):
            return True
        if word in ("0", "OFF"):
            return False
        raise ValueError(f"{cmd.form}: '{raw}' is not 0/1/ON/OFF")
    return raw.strip()


class SCPIClient:
    """A blocking SCPI line client on TCP (the WSA's control port 37001).

    Set commands get no reply; a query reads exactly one line.  ``TCP_NODELAY`` because every
    command is a tiny write the instrument should see at once.
    """

    def __init__(self, host: str, port: int, timeout: float = 5.0) -> None:
        self.host = host
        self.port = port
        try:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise SCPIError(f"cannot connect to the WSA control port {host}:{port}: {exc}") \
                from exc
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(timeout)
        self.timeout = timeout
        self._rx = b""

    def send(self, command: str) -> None:
        try:
            self.sock.sendall(command.encode("ascii") + b"\n")
        except OSError as exc:
            raise SCPIError(f"control connection lost sending {command!r}: {exc}") from exc

    def readline(self) -> str:
        """One reply line within ``timeout`` in all: the timeout is a deadline for the whole
        line, not per ``recv`` (a peer trickling a byte at a time cannot hold a query)."""
        deadline = time.monotonic() + self.timeout
        while b"\n" not in self._rx:
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise TimeoutError
                self.sock.settimeout(left)
                chunk = self.sock.recv(4096)
            except TimeoutError:
                raise SCPIError(f"no complete reply from the WSA control port within "
                                f"{self.timeout:g} s ({len(self._rx)} bytes so far)") from None
            except OSError as exc:
                raise SCPIError(f"no reply from the WSA control port: {exc}") from exc
            if not chunk:
                raise SCPIError("the WSA closed the control connection")
            self._rx += chunk
            if len(self._rx) > MAX_LINE and b"\n" not in self._rx:
                raise SCPIError(f"the WSA control port sent {len(self._rx)} bytes without a "
                                "line end; is control_port the SCPI port?")
        line, _, self._rx = self._rx.partition(b"\n")
        return line.decode("ascii", "replace").strip()

    def query(self, command: str) -> str:
        self.send(command if command.endswith("?") or "?" in command else command + "?")
        return self.readline()

    def set(self, key: str, value: Any = None) -> None:
        """Send the set form of the table entry ``key`` with ``value``."""
        cmd = COMMANDS[key]
        self.send(cmd.form if value is None else f"{cmd.form} {value}")

    def get(self, key: str, arg: str = "") -> str:
        cmd = COMMANDS[key]
        return self.query(f"{cmd.form}?{(' ' + arg) if arg else ''}")

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def shutdown(self) -> None:
        """Unblock a thread waiting in :meth:`readline` (called from another thread)."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
