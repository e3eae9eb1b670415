"""Option declarations: every plugin declares its options once, here is what reads them.

From one tuple of :class:`Option` come validation (with messages naming the key and the fix),
the sample configuration, and the ``radloggerd plugins`` listing.  Values may arrive as INI
strings or as Python values (tests, code); both go through the same conversion.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from radlogger.errors import ConfigurationError

if TYPE_CHECKING:
    from .registries import Registries

__all__ = ["Option", "OptionError", "resolve_options", "parse_bool", "parse_list", "Settings",
           "Configurable", "by_reason"]

_TRUE = {"1", "yes", "true", "on"}
_FALSE = {"0", "no", "false", "off"}


class OptionError(ConfigurationError, ValueError):
    """A user-caused option problem; ``key`` names the option, the message says the fix."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"expected a boolean (yes/no, true/false, on/off, 1/0), got {value!r}")


def parse_list(value: Any) -> list[str]:
    """Comma- or newline-separated list; Python sequences pass through."""
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if str(v).strip()]
    return [p.strip() for p in str(value).replace("\n", ",").split(",") if p.strip()]


def _parse_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    text = str(value).strip().replace("_", "")
    return int(text, 0)


def _parse_float(value: Any) -> float:
    """A finite number: NaN and infinity are refused (a NaN backoff never reconnects, an
    infinite deadline overflows the clock)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    number = float(str(value).strip().replace("_", "")) if isinstance(value, str) \
        else float(value)
    if not math.isfinite(number):
        raise ValueError(f"expected a finite number, got {value!r}")
    return number


_PARSERS: dict[type, Callable[[Any], Any]] = {
    bool: parse_bool, int: _parse_int, float: _parse_float, str: lambda v: str(v).strip(),
    list: parse_list,
}
_TYPE_NAMES = {bool: "boolean", int: "integer", float: "number", str: "text", list: "list"}


@dataclass(frozen=True)
class Option:
    """One declared option of a plugin (or of the daemon).

    ``default`` of ``None`` with ``required=False`` means "unset".  ``choices`` restricts the
    value; ``min``/``max`` bound numbers (and list lengths are not checked).
    """

    name: str
    type: type
    default: Any = None
    help: str = ""
    choices: Sequence[Any] | None = None
    min: float | None = None
    max: float | None = None
    required: bool = False

    def parse(self, raw: Any) -> Any:
        try:
            value = _PARSERS[self.type](raw)
        except (TypeError, ValueError) as exc:
            raise OptionError(self.name, f"{self.name} = {raw!r}: expected "
                              f"{_TYPE_NAMES[self.type]} ({exc})") from None
        if self.choices is not None and value not in self.choices:
            raise OptionError(self.name, f"{self.name} = {raw!r}: must be one of "
                              f"{', '.join(map(str, self.choices))}")
        if self.min is not None and value < self.min:
            raise OptionError(self.name, f"{self.name} = {raw!r}: must be >= {self.min}")
        if self.max is not None and value > self.max:
            raise OptionError(self.name, f"{self.name} = {raw!r}: must be <= {self.max}")
        return value

    def describe(self) -> str:
        """One-line human description for samples and listings."""
        bits = [_TYPE_NAMES[self.type]]
        if self.choices is not None:
            bits.append("one of " + "|".join(map(str, self.choices)))
        if self.min is not None or self.max is not None:
            bits.append(f"range [{'' if self.min is None else self.min}, "
                        f"{'' if self.max is None else self.max}]")
        bits.append("required" if self.required else
                    f"default {self.format(self.default) or '(empty)'}")
        return f"{self.help} ({'; '.join(bits)})"

    @staticmethod
    def format(value: Any) -> str:
        if value is None:
            return "(unset)"
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, (list, tuple)):
            return ", ".join(map(str, value))
        return str(value)


class Settings(dict[str, Any]):
    """Resolved option values; attribute access for readability in plugin code."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def merge_options(*groups: Iterable[Option]) -> tuple[Option, ...]:
    """Later groups override earlier ones by name (a plugin may change a base default)."""
    merged: dict[str, Option] = {}
    for group in groups:
        for opt in group:
            merged[opt.name] = opt
    return tuple(merged.values())


def closest(name: str, known: Iterable[str]) -> str | None:
    match = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return match[0] if match else None


def resolve_options(declared: Iterable[Option], given: Mapping[str, Any],
                    ignore: Iterable[str] = ()) -> Settings:
    """Validate ``given`` against ``declared``; fill defaults; raise :class:`OptionError`."""
    decl = {o.name: o for o in declared}
    skip = set(ignore)
    for key in given:
        if key not in decl and key not in skip:
            hint = closest(key, decl)
            fix = f"did you mean '{hint}'?" if hint else \
                f"known keys: {', '.join(sorted(decl)) or '(none)'}"
            raise OptionError(key, f"unknown key '{key}': {fix}")
    out = Settings()
    for name, opt in decl.items():
        if name in given and given[name] is not None and given[name] != "":
            out[name] = opt.parse(given[name])
        elif opt.required:
            raise OptionError(name, f"missing required key '{name}': {opt.help}")
        else:
            out[name] = opt.default
    return out


def by_reason(name: str, counts: Mapping[str, int]) -> dict[str, int | float]:
    """Counts by reason, flat for ``counters()``: ``{name: total, "name.reason": n, ...}``.

    Status reads counters from another thread than the one counting: ``dict()`` copies the
    mapping in one step under the GIL, so a reason added meanwhile cannot break the iteration."""
    counts = dict(counts)
    out: dict[str, int | float] = {name: sum(counts.values())}
    out.update((f"{name}.{reason}", n) for reason, n in sorted(counts.items()))
    return out


class Configurable:
    """Base of devices and endpoints: a name plus settings resolved from declared options.

    ``base_options`` belong to the kind of plugin (device, endpoint); ``options`` to the plugin.
    """

    kind: str = ""
    summary: str = ""
    base_options: tuple[Option, ...] = ()
    options: tuple[Option, ...] = ()

    # Declared capabilities, read by the graph, the broker and the sample configuration; a
    # plugin overrides them (class attribute, instance attribute or property), nobody looks
    # them up by name.
    #: topic templates this component publishes, e.g. ``("{device}.spectrum",)``
    produces: tuple[str, ...] = ()
    #: quantity patterns (the topic after the device, globs allowed) an endpoint can take,
    #: e.g. ``("iq",)``; empty: anything.  ``radloggerd check`` warns about the rest.
    accepts: tuple[str, ...] = ()

    def listens(self) -> list[tuple[str, str, int]]:
        """Sockets this component serves on, ``(protocol, host, port)``; port 0 (any free
        port) is never listed.  ``radloggerd check`` reports two services on one port."""
        return []

    def writes(self) -> list[str]:
        """Files or directories this component writes (a store's path), for ``check``
        (writable? shared with another store?) and the graph."""
        return []

    @property
    def graph_target(self) -> str:
        """Where an endpoint sends data outside the pipeline (``mqtt://host:1883/x/#``), for
        the graph; empty: nowhere outside."""
        return ""

    @classmethod
    def declared_options(cls) -> tuple[Option, ...]:
        return merge_options(cls.base_options, cls.options)

    def __init__(self, name: str, settings: Mapping[str, Any] | None = None, **kw: Any) -> None:
        given = dict(settings or {})
        given.update(kw)
        self.name = name
        self.settings = resolve_options(self.declared_options(), given, ignore=("driver", "type"))

    def counters(self) -> dict[str, int | float]:
        """This plugin's own per-reason counters (bad packets, gaps, rows written ...).

        The one declared way a component reports what it counts: status (``/status``,
        ``radloggerd status``, the ``radlogger.status.*`` topic) reads it, never attributes
        looked up by name.
        Flat ``name -> number``; counts by reason are flattened with :func:`by_reason`
        (``bad_frames`` and ``bad_frames.<reason>``).  Empty by default."""
        return {}

    def wants(self, topic: str) -> bool:
        """Whether a measurement on ``topic`` is worth delivering here (``Broker.has_demand``).

        Always for a plain consumer; a lazy processing endpoint answers from the demand for
        its own output (``radlogger.processing``)."""
        return True

    # ---------------------------------------------------------------- pipeline lifecycle
    def attach(self, registries: Registries) -> None:
        """The pipeline is starting this component: register where others look it up.

        The constructor only validates (the loader and a reload build instances that never
        run); registration with the running pipeline happens here, and is undone in
        :meth:`detach` when the component stops."""

    def detach(self, registries: Registries) -> None:
        """The pipeline stopped this component: undo :meth:`attach`."""
