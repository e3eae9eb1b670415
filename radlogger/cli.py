"""The ``radloggerd`` command line (click).

Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error.  A mistake a user can make
prints one line, ``radloggerd: error: ...``, never a traceback.

Start-up speed matters (``radloggerd --help`` is what people type first, and systemd's
ExecReload runs a shell, not us, but scripts call ``check`` in loops): this module imports only
click at the top; the configuration, the pipeline, numpy and the plugins are imported by the
commands that need them.  Commands from other packages (entry point group
``radlogger.commands``) are listed without being imported and loaded only when invoked.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import click

from . import __version__

COMMAND_GROUP = "radlogger.commands"
SIMULATOR_GROUP = "radlogger.simulators"
_LEVELS = click.Choice(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], case_sensitive=False)


def fail(message: str, code: int = 2) -> NoReturn:
    """One line on standard error, then exit (2: usage/configuration, 1: runtime)."""
    click.echo(f"radloggerd: error: {message}", err=True)
    sys.exit(code)


def warn(message: str) -> None:
    click.echo(f"radloggerd: warning: {message}", err=True)


def _entry_points(group: str) -> dict[str, Any]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=group)}


class _PluginGroup(click.Group):
    """A group that also offers the click commands of entry point group radlogger.commands."""

    def _external(self) -> dict[str, Any]:
        return {n: ep for n, ep in _entry_points(COMMAND_GROUP).items() if n not in self.commands}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*self.commands, *self._external()])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.commands:
            return self.commands[name]
        ep = self._external().get(name)
        if ep is None:
            return None
        try:
            command = ep.load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the CLI
            return _unavailable(name, f"{type(exc).__name__}: {exc}")
        if not isinstance(command, click.Command):
            return _unavailable(name, f"entry point {ep.value} is not a click command")
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Like click's, but plugin commands are described without importing them."""
        rows = [(n, c.get_short_help_str(60)) for n, c in sorted(self.commands.items())
                if not c.hidden]
        rows += [(n, f"(plugin command from {ep.value.split(':')[0]})")
                 for n, ep in sorted(self._external().items())]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _unavailable(name: str, reason: str) -> click.Command:
    @click.command(name, context_settings={"ignore_unknown_options": True},
                   add_help_option=False)
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def unavailable(args: tuple[str, ...]) -> None:
        fail(f"command '{name}' is not available: {reason}", 1)

    return unavailable


@click.group(cls=_PluginGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="radloggerd")
@click.option("--log-level", type=_LEVELS, default=None,
              help="Override [radlogger] log_level (DEBUG also shows tracebacks).")
@click.pass_context
def cli(ctx: click.Context, log_level: str | None) -> None:
    """radloggerd: a threaded data-logger daemon for streaming laboratory instruments.

    Devices push measurements through a bounded queue and a topic broker to endpoints
    (storage, processing, forwarding), configured by INI files.
    """
    ctx.obj = {"log_level": log_level.upper() if log_level else None}


def log_level_option(command: Any) -> Any:
    """``--log-level`` on a subcommand too (``radloggerd run --log-level DEBUG``)."""
    def store(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
        if value:
            ctx.ensure_object(dict)["log_level"] = value.upper()

    return click.option("--log-level", type=_LEVELS, expose_value=False, callback=store,
                        help="Override [radlogger] log_level.")(command)


def _tool_logging(ctx: click.Context) -> None:
    """Logging for the one-shot commands: warnings (or the asked level) on standard error."""
    import logging

    logging.basicConfig(level=(ctx.obj or {}).get("log_level") or "WARNING",
                        format="radloggerd: %(levelname)s %(name)s: %(message)s")


def _load(path: str | None) -> Any:
    from .config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        fail(str(exc))


def _address(path: str | None, url: str | None, port: int | None, host: str,
             token: str | None) -> tuple[str, str | None]:
    """The control API's URL and token (radlogger.controladdr), or a one-line failure."""
    from .controladdr import AddressError, resolve

    try:
        return resolve(path, url, port, host, token,
                       warn=lambda text: click.echo(f"warning: {text}", err=True))
    except AddressError as exc:
        fail(str(exc))


# ---------------------------------------------------------------------------------- run
@cli.command()
@click.option("-c", "--config", "path", type=click.Path(), envvar="RADLOGGER_CONFIG",
              help="Configuration file (default: $RADLOGGER_CONFIG, else the packaged demo).")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=None,
              metavar="S", help="Stop after S seconds.")
@click.option("--once", is_flag=True,
              help="Stop once every device has finished (a replay, a synthetic with count; "
                   "drivers declaring finite = False are not waited for) and all data is "
                   "delivered.")
@click.option("--stats-json", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Write the final stats snapshot to FILE as JSON at exit.")
@log_level_option
@click.pass_context
def run(ctx: click.Context, path: str | None, duration: float | None, once: bool,
        stats_json: str | None) -> None:
    """Run the daemon until SIGTERM/SIGINT (SIGHUP reloads, SIGUSR1 logs stats)."""
    from .daemon import Daemon

    config = _load(path)
    daemon = Daemon(config, path or config.files[0], log_level=ctx.obj["log_level"],
                    stats_json=stats_json)
    if once and not any(spec.instance.finite for spec in config.devices.values()):
        fail("--once needs at least one finite device (every configured device runs "
             "forever); use --duration instead")
    from .config import ConfigError

    try:
        code = daemon.run(duration=duration, once=once)
    except ConfigError as exc:
        fail(str(exc))
    sys.exit(code)


# ---------------------------------------------------------------------------------- check
@cli.command()
@click.option("-c", "--config", "path", type=click.Path(), default=None,
              envvar="RADLOGGER_CONFIG", help="Configuration file to validate (default: "
              "$RADLOGGER_CONFIG, else the packaged demo, as `run`).")
@click.option("--resolved", is_flag=True,
              help="Also print every effective value (defaults included) as INI.")
@log_level_option
@click.pass_context
def check(ctx: click.Context, path: str | None, resolved: bool) -> None:
    """Validate a configuration and print its dataflow graph (devices -> topics -> endpoints);
    also what would fail at run time: ports, store paths, subscription loops."""
    _tool_logging(ctx)
    config = _load(path)
    from .checks import check_config

    errors, warnings = check_config(config)
    for warning in [*config.warnings, *warnings]:
        warn(warning)
    if errors:
        for error in errors[:-1]:
            click.echo(f"radloggerd: error: {error}", err=True)
        fail(errors[-1])
    click.echo(f"configuration: {', '.join(config.files)}")
    click.echo(f"{len(config.devices)} devices, {len(config.endpoints)} endpoints: ok")
    from .graph import graph_text

    click.echo(graph_text(config.graph), nl=False)
    if resolved:
        click.echo("")
        click.echo(config.resolved_ini(), nl=False)


@cli.command()
@click.option("-c", "--config", "path", type=click.Path(), default=None,
              envvar="RADLOGGER_CONFIG", help="Configuration file to draw (default: "
              "$RADLOGGER_CONFIG, else the packaged demo, as `run`).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Write the graph here: .svg or .png rendered with Graphviz when it is "
                   "installed, .dot as DOT source, anything else as text.")
@log_level_option
@click.pass_context
def graph(ctx: click.Context, path: str | None, output: str | None) -> None:
    """Show the configured dataflow graph (devices, topics, endpoints, derived topics)."""
    _tool_logging(ctx)
    config = _load(path)
    from .graph import graph_dot, graph_text, render_graph

    if output is None:
        click.echo(graph_text(config.graph), nl=False)
        return
    if output.endswith(".dot"):
        with open(output, "w") as f:
            f.write(graph_dot(config.graph))
        click.echo(f"wrote {output}")
        return
    written, rendered = render_graph(config.graph, output)
    click.echo(f"wrote {written}" + ("" if rendered else " (Graphviz `dot` not found: text)"))


@cli.command()
@click.option("-c", "--config", "path", type=click.Path(), default=None,
              envvar="RADLOGGER_CONFIG", help="The running daemon's configuration (its "
              "control_host, control_port and control_token are used).")
@click.option("--url", default=None, help="Status API address, e.g. http://127.0.0.1:8765.")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="The daemon's control_port (on --host); no configuration needed.")
@click.option("--host", default="127.0.0.1", show_default=True, help="With --port.")
@click.option("--token", default=None, envvar="RADLOGGER_CONTROL_TOKEN",
              help="Bearer token of the status API.")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.option("--timeout", type=float, default=5.0, show_default=True, help="Seconds to wait.")
@log_level_option
@click.pass_context
def status(ctx: click.Context, path: str | None, url: str | None, port: int | None, host: str,
           token: str | None, as_json: bool, timeout: float) -> None:
    """Ask a running daemon for the state and counters of every device and endpoint.

    Exit code 0 when every component is healthy, 1 when some report a problem or the daemon
    cannot be reached.
    """
    import json
    import urllib.error
    import urllib.request

    _tool_logging(ctx)
    url, token = _address(path, url, port, host, token)
    req = urllib.request.Request(url.rstrip("/") + ("/status" if as_json else "/status.txt"))
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - our own API
            body = resp.read().decode()
    except urllib.error.HTTPError as exc:
        fail(f"{url}: HTTP {exc.code} {exc.reason}" + (" (wrong or missing token: --token)"
                                                       if exc.code == 401 else ""), 1)
    except (urllib.error.URLError, OSError) as exc:
        fail(f"{url}: cannot reach the daemon ({getattr(exc, 'reason', exc)}); is it running "
             "with control_port set?", 1)
    click.echo(body, nl=not body.endswith("\n"))
    healthy = json.loads(body)["ok"] if as_json else body.rstrip().endswith("ok")
    sys.exit(0 if healthy else 1)


# ---------------------------------------------------------------------------------- config
@cli.group("config")
def config_group() -> None:
    """Configuration helpers."""


@config_group.command()
@click.option("--plugin", default=None, metavar="NAME",
              help="Only the section of this device driver or endpoint type.")
@log_level_option
@click.pass_context
def sample(ctx: click.Context, plugin: str | None) -> None:
    """Print an annotated INI generated from the option declarations."""
    _tool_logging(ctx)
    from .plugins import PluginError
    from .sample import sample_ini

    try:
        click.echo(sample_ini(plugin), nl=False)
    except PluginError as exc:
        fail(str(exc))


# ---------------------------------------------------------------------------------- plugins
@cli.command("plugins")
@click.argument("name", required=False)
@log_level_option
@click.pass_context
def plugins_command(ctx: click.Context, name: str | None) -> None:
    """List installed devices and endpoints with their options (or one, by NAME)."""
    _tool_logging(ctx)
    from .plugins import PluginError
    from .sample import plugin_listing

    try:
        click.echo(plugin_listing(name), nl=False)
    except PluginError as exc:
        fail(str(exc))


# ---------------------------------------------------------------------------------- ports
@cli.command()
@log_level_option
@click.pass_context
def ports(ctx: click.Context) -> None:
    """List serial ports and USB devices, marking those a driver recognises."""
    _tool_logging(ctx)
    from .ports import describe_ports

    click.echo(describe_ports(), nl=False)


# ---------------------------------------------------------------------------------- simulate
@cli.command(context_settings={"ignore_unknown_options": True,
                               "allow_interspersed_args": False})
@click.argument("name", required=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def simulate(name: str | None, args: tuple[str, ...]) -> None:
    """Run instrument simulator NAME standalone (ARGS go to it; NAME --help for its options)."""
    eps = _entry_points(SIMULATOR_GROUP)
    if name is None or name not in eps:
        known = ", ".join(sorted(eps)) or "(none installed)"
        fail(f"unknown simulator '{name}'; known: {known}" if name else
             f"which simulator? known: {known}")
    try:
        command = eps[name].load()
    except Exception as exc:  # noqa: BLE001
        fail(f"simulator '{name}' is not available: {type(exc).__name__}: {exc}", 1)
    if not isinstance(command, click.Command):
        fail(f"simulator '{name}' ({eps[name].value}) is not a click command", 1)
    command.main(args=list(args), prog_name=f"radloggerd simulate {name}")


def _register() -> None:
    from .watch import make_command

    cli.add_command(make_command(_address, fail))


_register()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (``radloggerd``)."""
    debug = any("DEBUG" in a.upper() for a in (argv if argv is not None else sys.argv[1:]))
    try:
        cli.main(args=argv, prog_name="radloggerd")
    except Exception as exc:  # noqa: BLE001 - last resort: one line unless debugging
        if debug:
            raise
        fail(f"internal error: {type(exc).__name__}: {exc} (run with --log-level DEBUG for the "
             "traceback)", 1)


if __name__ == "__main__":
    main()
