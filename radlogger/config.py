"""INI configuration: the daemon section, one section per device and endpoint, drop-ins, env.

Layout of a configuration::

    [radlogger]            daemon options (DAEMON_OPTIONS below)
    [device:NAME]          driver = <plugin>, then that driver's declared options
    [endpoint:NAME]        type = <plugin>, subscribe = <patterns>, then the type's options

After the main file, every ``*.ini`` of the ``include`` directory (``conf.d`` next to the main
file unless configured) is read in name order: its ``[radlogger]`` keys override the main
file's, its devices and endpoints are added.  Then ``RADLOGGER_<KEY>`` environment variables
override daemon keys (``RADLOGGER_QUEUE_SIZE=100000``), which suits containers and systemd
``Environment=`` lines.

Every mistake a user can make raises :class:`ConfigError` whose one-line message names the file
(and line), the section, the key and the fix.  Validation uses the plugins' own option
declarations, and constructs each plugin (without starting it) so a plugin's own checks run and
its declared topics feed the dataflow graph, from which unmatched subscriptions become warnings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import plugins
from .broker import DEFAULT_LINGER
from .control import CONTROL_OPTIONS
from .graph import Graph, build_graph
from .inifile import DAEMON_SECTION, ConfigError, Section, include_files, read_file
from .options import Option, OptionError, Settings, closest, resolve_options
from .topics import NAME_RE, is_glob, pattern_matches, validate_pattern

__all__ = ["ConfigError", "Config", "PluginSection", "DAEMON_OPTIONS", "DAEMON_SECTION",
           "RESTART_ONLY", "ENV_PREFIX", "load_config", "default_config_path"]

ENV_PREFIX = "RADLOGGER_"
ENV_RESERVED = {"RADLOGGER_CONFIG"}  # read by the command line, not a daemon option
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

DAEMON_OPTIONS: tuple[Option, ...] = (
    Option("queue_size", int, 65536, "measurements the central queue holds before "
           "queue_policy applies", min=1),
    Option("queue_policy", str, "drop_newest", "what a full queue does: refuse the new "
           "measurement, evict the oldest, or make the device wait up to block_timeout",
           choices=("drop_newest", "drop_oldest", "block")),
    Option("block_timeout", float, 1.0, "seconds a device waits for room when queue_policy = "
           "block; then the measurement is dropped (counted)", min=0),
    Option("max_topics", int, 10_000, "distinct topics the broker accepts; measurements on "
           "further new topics are dropped and counted (too_many_topics): a peer inventing "
           "topics cannot grow memory without bound", min=1, max=10_000_000),
    Option("batch_max", int, 8192, "most measurements the broker takes from the queue at once",
           min=1),
    Option("linger", float, DEFAULT_LINGER, "seconds the broker lets measurements gather "
           "before it publishes them (like Kafka's linger.ms): fewer wake-ups per measurement "
           "at low rates for that much added latency; 0 = publish at once", min=0, max=1.0),
    Option("pool_workers", int, 2, "threads of the shared pool that runs endpoints with "
           "mode = shared", min=1),
    Option("shutdown_deadline", float, 10.0, "seconds allowed at stop (and per reload step) to "
           "drain the queue and inboxes; what misses it is counted as dropped", min=0),
    Option("stats_interval", float, 60.0, "seconds between one-line stats summaries in the log "
           "(0 = only the final one at exit)", min=0),
    Option("loss_interval", float, 5.0, "seconds between summaries of later drops (the first "
           "drop of each component and reason is a WARNING at once)", min=0.1, max=86400),
    Option("log_level", str, "INFO", "least severe log messages written", choices=LOG_LEVELS),
    Option("log_file", str, "", "write the log to this file (reopened when logrotate moves "
           "it); empty = standard error (the journal under systemd)"),
    Option("include", str, "conf.d", "directory of drop-in *.ini files merged in name order, "
           "relative to the main file; empty = none"),
    *CONTROL_OPTIONS,
)
#: daemon options that size the running pipeline: a reload cannot change them
RESTART_ONLY = ("queue_size", "queue_policy", "block_timeout", "batch_max", "pool_workers",
                "max_topics", "linger",
                "control_port", "control_host", "control_token", "status_interval",
                "status_down_after")

_ROLES = {"device": ("driver", plugins.DEVICE_GROUP), "endpoint": ("type", plugins.ENDPOINT_GROUP)}


def default_config_path() -> Path:
    """The packaged configuration ``radloggerd run`` uses without ``-c``."""
    return Path(__file__).with_name("default.ini")


# ------------------------------------------------------------------------------ the result
@dataclass
class PluginSection:
    """A validated ``[device:NAME]`` or ``[endpoint:NAME]``, with its plugin constructed."""

    role: str  # "device" | "endpoint"
    name: str
    plugin: str  # the driver or endpoint type
    cls: type
    settings: Settings
    raw: dict[str, str]
    file: str
    line: int = 0
    instance: Any = None  # built by the loader, not started
    key_lines: dict[str, int] = field(default_factory=dict)

    def where(self, key: str | None = None) -> str:
        """``file:line`` of the section, or of one of its keys."""
        line = self.key_lines.get(key or "", 0) or self.line
        return f"{self.file}:{line}" if line else self.file

    @property
    def section(self) -> str:
        return f"{self.role}:{self.name}"

    def same_as(self, other: PluginSection) -> bool:
        """Unchanged by a reload: same plugin, same resolved settings."""
        return self.plugin == other.plugin and self.settings == other.settings

    def fresh(self) -> Any:
        """A new, unstarted instance (the loader's one is used once)."""
        return self.cls(self.name, self.raw)


@dataclass
class Config:
    files: list[str]
    daemon: Settings
    devices: dict[str, PluginSection] = field(default_factory=dict)
    endpoints: dict[str, PluginSection] = field(default_factory=dict)
    graph: Graph = field(default_factory=Graph)
    warnings: list[str] = field(default_factory=list)

    def resolved_ini(self) -> str:
        """Every effective value, including defaults, as INI (``check --resolved``)."""
        out = [f"[{DAEMON_SECTION}]"]
        out += [f"{k} = {Option.format(v) if v is not None else ''}"
                for k, v in self.daemon.items()]
        for spec in [*self.devices.values(), *self.endpoints.values()]:
            out += ["", f"[{spec.section}]", f"{_ROLES[spec.role][0]} = {spec.plugin}"]
            out += [f"{k} = {Option.format(v) if v is not None else ''}"
                    for k, v in spec.settings.items()]
        return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------ loading
def load_config(path: str | os.PathLike[str] | None = None,
                env: Mapping[str, str] | None = None) -> Config:
    """Read, merge, validate; raise :class:`ConfigError` on the first mistake."""
    main = Path(path) if path is not None else default_config_path()
    env = os.environ if env is None else env
    main_sections = read_file(main)
    files = [main]
    sections = list(main_sections)
    extras, include_warnings = include_files(main, main_sections)
    for extra in extras:
        extra_sections = read_file(extra)
        for s in extra_sections:
            if s.name.strip() == DAEMON_SECTION and "include" in s.items:
                raise ConfigError("include is only read from the main file; remove it here",
                                  str(extra), DAEMON_SECTION, "include", s.lines["include"])
        files.append(extra)
        sections.extend(extra_sections)

    daemon_raw: dict[str, str] = {}
    daemon_where: dict[str, tuple[str, int | None]] = {}
    roles: dict[str, list[tuple[str, Section]]] = {"device": [], "endpoint": []}
    seen: dict[str, Section] = {}  # plugin name -> where it was defined
    for s in sections:
        head = s.name.strip()
        if head == DAEMON_SECTION:
            for k, v in s.items.items():
                daemon_raw[k] = v
                daemon_where[k] = (s.file, s.lines.get(k))
            continue
        role, sep, name = (p.strip() for p in head.partition(":"))
        if not sep or role not in _ROLES:
            guess = closest(role, list(_ROLES) + [DAEMON_SECTION])
            fix = (f"did you mean [{guess}{':' + name if name and guess in _ROLES else ''}]?"
                   if guess else "sections are [radlogger], [device:NAME] and [endpoint:NAME]")
            raise ConfigError(f"unknown section: {fix}", s.file, head, line=s.line)
        if not NAME_RE.match(name):
            raise ConfigError(f"name '{name}' is not valid: use letters, digits, '_' and '-' "
                              "(no dots: the name is the first part of its topics)",
                              s.file, head, line=s.line)
        if name in seen:
            first = seen[name]
            raise ConfigError(f"duplicate name '{name}': already defined as [{first.name.strip()}]"
                              f" in {first.file}:{first.line}; names must be unique across "
                              "devices and endpoints, rename one", s.file, head, line=s.line)
        seen[name] = s
        roles[role].append((name, s))

    daemon_names = [o.name for o in DAEMON_OPTIONS]
    env_warnings = []
    for key, value in sorted(env.items()):
        if not key.startswith(ENV_PREFIX) or key in ENV_RESERVED:
            continue
        option = key[len(ENV_PREFIX):].lower()
        if option not in daemon_names:  # ambient: warn, do not refuse to start
            guess = closest(option, daemon_names)
            known = ", ".join(ENV_PREFIX + n.upper() for n in daemon_names)
            fix = f"did you mean {ENV_PREFIX}{guess.upper()}?" if guess else f"known: {known}"
            env_warnings.append(f"environment {key} is not a daemon option and is ignored; {fix}")
            continue
        daemon_raw[option] = value
        daemon_where[option] = (f"environment {key}", None)
    daemon = _resolve_daemon(daemon_raw, daemon_where)
    if not daemon_raw.get("include", "x").strip():
        daemon["include"] = ""  # explicitly empty: no drop-ins (not "unset, use the default")

    config = Config([str(f) for f in files], daemon, warnings=include_warnings + env_warnings)
    for role, entries in roles.items():
        target = config.devices if role == "device" else config.endpoints
        for name, s in entries:
            target[name] = _plugin_section(role, name, s)
    _check_graph(config)
    return config


def _resolve_daemon(raw: dict[str, str], where: dict[str, tuple[str, int | None]]) -> Settings:
    try:
        return resolve_options(DAEMON_OPTIONS, raw)
    except OptionError as exc:
        file, line = where.get(exc.key, (None, None))
        if file and file.startswith("environment "):
            raise ConfigError(str(exc), file, None, exc.key) from None
        raise ConfigError(str(exc), file, DAEMON_SECTION, exc.key, line) from None


def _plugin_section(role: str, name: str, s: Section) -> PluginSection:
    kind_key, group = _ROLES[role]
    head = s.name.strip()
    raw = dict(s.items)
    plugin = raw.pop(kind_key, "").strip()
    known = plugins.names(group)
    if not plugin:
        wrong = ({"device": "type", "endpoint": "driver"}[role])
        hint = f" (a {role} uses '{kind_key}', not '{wrong}')" if wrong in raw else ""
        raise ConfigError(f"missing required key '{kind_key}'{hint}: set {kind_key} = one of "
                          f"{', '.join(known)}", s.file, head, kind_key, s.line)
    where = s.lines.get(kind_key)
    if plugin not in known:
        guess = closest(plugin, known)
        fix = f"did you mean '{guess}'? " if guess else ""
        what = "driver" if role == "device" else "endpoint type"
        raise ConfigError(f"{kind_key} = {plugin}: unknown {what}; {fix}known: "
                          f"{', '.join(known)}", s.file, head, kind_key, where)
    try:
        cls = plugins.load(group, plugin)
    except plugins.PluginError as exc:
        raise ConfigError(f"{kind_key} = {plugin}: {exc}", s.file, head, kind_key, where) from None
    except Exception as exc:  # noqa: BLE001 - a broken plugin module is reported, not raised
        raise ConfigError(f"{kind_key} = {plugin}: the plugin failed to load "
                          f"({type(exc).__name__}: {exc}); reinstall or fix it", s.file, head,
                          kind_key, where) from None
    try:
        settings = resolve_options(cls.declared_options(), raw)
    except OptionError as exc:
        line = s.lines.get(exc.key) or s.line
        problem = str(exc)
        option = next((o for o in cls.declared_options() if o.name == exc.key), None)
        if option is not None and option.required and not raw.get(exc.key, "").strip():
            problem = (f"missing required key '{exc.key}' ({option.help}): add "
                       f"{exc.key} = <value>")
        raise ConfigError(problem, s.file, head, exc.key, line) from None
    if role == "endpoint":
        for pattern in settings.subscribe:
            bad = validate_pattern(pattern)
            if bad:
                raise ConfigError(f"subscribe: {bad}", s.file, head, "subscribe",
                                  s.lines.get("subscribe"))
    try:
        instance = cls(name, raw)
    except (OptionError, ValueError, TypeError) as exc:
        key = exc.key if isinstance(exc, OptionError) else None
        raise ConfigError(f"rejected by {plugin}: {exc}", s.file, head, key,
                          s.lines.get(key or "") or s.line) from None
    return PluginSection(role, name, plugin, cls, settings, raw, s.file, s.line, instance,
                         dict(s.lines))


def known_topics(graph: Graph) -> list[str]:
    """Topics something publishes (not the placeholders of unmatched subscriptions)."""
    return [n.id.split(":", 1)[1] for n in graph.nodes.values()
            if n.kind == "topic" and not n.label.endswith("(nothing publishes)")]


def _hint(pattern: str, known: list[str]) -> str:
    near = closest(pattern, known + sorted({t.split(".", 1)[0] for t in known}))
    if near:
        return f"did you mean '{near}'?"
    if known:
        return f"known topics: {', '.join(known[:8])}{', ...' if len(known) > 8 else ''}"
    return "no device publishes any topic"


def _check_graph(config: Config) -> None:
    """Build the dataflow graph; warn (file, line, closest topic) about subscriptions nothing
    can feed.  A device that declares no topics may publish anything under its name."""
    from .pipeline import Pipeline  # local: the graph needs a pipeline, loading does not

    draft = Pipeline(queue_size=1)  # never started: it only wires the plugins for the graph
    for spec in config.endpoints.values():
        draft.add_endpoint(spec.instance)
    for spec in config.devices.values():
        draft.add_device(spec.instance)
    config.graph = graph = build_graph(draft)
    known = known_topics(graph)
    undeclared = [n for n, spec in config.devices.items() if not spec.instance.topics()]
    for spec in config.endpoints.values():
        patterns = spec.settings.subscribe
        if not patterns:
            config.warnings.append(f"{spec.where()}: [{spec.section}] subscribes to nothing and "
                                   "will receive no data; set subscribe = <topics or patterns>")
        for pattern in patterns:
            if any(pattern_matches(pattern, t) for t in known) or any(
                    is_glob(pattern) or pattern == d or pattern.startswith(d + ".")
                    for d in undeclared):
                continue
            config.warnings.append(
                f"{spec.where('subscribe')}: [{spec.section}] subscribe: '{pattern}' matches no "
                f"topic any configured device or endpoint produces; {_hint(pattern, known)}")
