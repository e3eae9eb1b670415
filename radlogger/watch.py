"""``radloggerd watch [PATTERN]``: a terminal live view of a running daemon.

It reads the control port's ``/live`` (:mod:`radlogger.dashboard`: the status with rates, and
what the viewer tap keeps of each topic) once per ``--interval`` and redraws in place with
``rich``: every component with its state, rates and drops (drops by design, the viewer's own,
are dim; losses red), then the latest value of each topic matching PATTERN (a topic, a subtree
prefix or a glob, as in ``subscribe``).  ``q`` or Ctrl-C quits.  It needs only the control port,
so it works from another machine (``--host``/``--url`` and ``--token``).
"""

from __future__ import annotations

import json
import select
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import click

__all__ = ["make_command", "render", "fetch_live"]

_WARN_STATES = ("connecting", "backoff", "restarting", "stopping")
_BAD_STATES = ("reconnecting", "error", "failed")


def fetch_live(url: str, token: str | None, pattern: str, timeout: float) -> dict[str, Any]:
    query = urllib.parse.urlencode({"pattern": pattern, "arrays": "0"})
    req = urllib.request.Request(f"{url.rstrip('/')}/live?{query}")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - our own API
        data: dict[str, Any] = json.loads(resp.read())
    return data


def _num(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:,.1f}" if abs(x) >= 100 else f"{x:.4g}"
    if isinstance(x, int):
        return f"{x:,}"
    return "" if x is None else str(x)


class _View:
    """What one frame needs from the previous ones: topic rates, devices that ran."""

    def __init__(self) -> None:
        self.counts: dict[str, tuple[float, int]] = {}
        self.rates: dict[str, float] = {}
        self.ran: set[str] = set()

    def shown_state(self, c: dict[str, Any]) -> str:
        state = str(c["state"])
        if c["role"] == "device":
            if state in ("running", "finished"):
                self.ran.add(c["name"])
            elif c["name"] in self.ran and state in ("connecting", "backoff", "error"):
                return "reconnecting"
        return state

    def topic_rates(self, live: dict[str, Any]) -> None:
        t = float(live["t"])
        for topic, e in live["view"]["topics"].items():
            before = self.counts.get(topic)
            if before is not None and t > before[0]:
                self.rates[topic] = (e["count"] - before[1]) / (t - before[0])
            self.counts[topic] = (t, int(e["count"]))


def render(live: dict[str, Any], view: _View, url: str, pattern: str) -> Any:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    status = live["status"]
    by_design = set(live.get("by_design", ("viewer_decimated",)))
    q = status["queue"]
    problems = [c for c in status["components"] if c["problem"]]
    head = Text.assemble(
        ("radloggerd ", "bold"), (url, "cyan"), "  ",
        time.strftime("%H:%M:%S", time.localtime(live["t"])),
        f"  queue {q['depth']}/{q['capacity']} dropped {q['dropped']}  ",
        ("ok", "green") if not problems else (f"{len(problems)} problem(s)", "bold red"),
        "   (q quits)")
    comps = Table(title="components", title_justify="left", expand=True, pad_edge=False)
    for col, justify in (("name", "left"), ("kind", "left"), ("state", "left"),
                         ("in/s", "right"), ("out/s", "right"), ("count", "right"),
                         ("drops", "left"), ("last error / problem", "left")):
        comps.add_column(col, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for c in status["components"]:
        state = view.shown_state(c)
        style = "red" if state in _BAD_STATES else "yellow" if state in _WARN_STATES else \
            "green" if state in ("running", "finished") else ""
        r, k = c["rates"], c["counters"]
        if c["role"] == "device":
            rin, rout, count = "", _num(r.get("produced", 0.0)), _num(k.get("produced", 0))
        else:
            rin, rout = _num(r.get("received", 0.0)), _num(r.get("handled", 0.0))
            count = _num(k.get("handled", 0))
        drops = Text()
        for reason, n in sorted((k.get("dropped_by_reason") or {}).items()):
            if n:
                drops.append(f"{reason} {_num(n)} ", style="dim" if reason in by_design
                             else "bold red")
        note = c["problem"] or (f"{c['last_error_at']}: {c['last_error']}"
                                if c["last_error"] else "")
        comps.add_row(c["name"], c["kind"], Text(state, style=style), rin, rout, count, drops,
                      Text(note, style="red" if c["problem"] else "dim"))
    topics = Table(title=f"topics {pattern or '*'}", title_justify="left", expand=True,
                   pad_edge=False)
    for col in ("topic", "rate/s", "count", "last value", "unit"):
        topics.add_column(col, justify="right" if col in ("rate/s", "count") else "left",
                          overflow="fold")
    for topic, e in sorted(live["view"]["topics"].items()):
        value = _num(e["value"]) if "value" in e else \
            f"{'x'.join(map(str, e.get('shape', [])))} {e.get('dtype', '')}"
        rate = view.rates.get(topic)
        topics.add_row(topic, "" if rate is None else _num(rate), _num(e["count"]), value,
                       e.get("unit", ""))
    return Group(head, comps, topics)


@contextmanager
def _keys() -> Iterator[Any]:
    """stdin in cbreak mode (a key press is read at once) while watching, if it is a tty."""
    if not sys.stdin.isatty():
        yield None
        return
    import termios
    import tty

    fd = sys.stdin.fileno()
    old = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    try:
        yield sys.stdin
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)


def _quit_pressed(stdin: Any, wait: float) -> bool:
    if stdin is None:
        time.sleep(wait)  # no terminal: nothing to read, Ctrl-C still quits
        return False
    ready, _, _ = select.select([stdin], [], [], wait)
    return bool(ready) and stdin.read(1) in ("q", "Q")


def make_command(address: Callable[..., tuple[str, str | None]],
                 fail: Callable[..., NoReturn]) -> click.Command:
    """The ``watch`` command; the CLI passes in how it finds the control API (``address``:
    the same as ``status``) and how it fails (so this module never imports the CLI back)."""

    @click.command()
    @click.argument("pattern", required=False, default="")
    @click.option("-c", "--config", "path", type=click.Path(), default=None,
                  envvar="RADLOGGER_CONFIG", help="The running daemon's configuration (its "
                  "control_host, control_port and control_token are used).")
    @click.option("--url", default=None, help="Control API address, e.g. http://127.0.0.1:8765.")
    @click.option("--port", type=click.IntRange(1, 65535), default=None,
                  help="The daemon's control_port (on --host); no configuration needed.")
    @click.option("--host", default="127.0.0.1", show_default=True, help="With --port.")
    @click.option("--token", default=None, envvar="RADLOGGER_CONTROL_TOKEN",
                  help="Bearer token of the control API.")
    @click.option("--interval", type=click.FloatRange(0.1, 60), default=1.0, show_default=True,
                  help="Seconds between refreshes.")
    @click.option("--once", is_flag=True, help="Print one frame and exit.")
    @click.option("--timeout", type=float, default=5.0, show_default=True, help="Seconds to wait.")
    def watch(pattern: str, path: str | None, url: str | None, port: int | None, host: str,
              token: str | None, interval: float, once: bool, timeout: float) -> None:
        """Watch a running daemon live: components with state, rates and drops, and the latest
        values of the topics matching PATTERN (default: all).  q or Ctrl-C quits."""
        try:
            from rich.console import Console
            from rich.live import Live
        except ImportError:
            fail("watch needs rich: pip install 'radloggerd[watch]'", 1)
        url, token = address(path, url, port, host, token)

        def get() -> dict[str, Any]:
            assert url is not None
            try:
                return fetch_live(url, token, pattern, timeout)
            except urllib.error.HTTPError as exc:
                fail(f"{url}: HTTP {exc.code} {exc.reason}" + (
                    " (wrong or missing token: --token)" if exc.code == 401 else
                    " (a daemon without the live view? update it)" if exc.code == 404 else ""), 1)

        view = _View()
        console = Console()
        try:
            live = get()
        except (urllib.error.URLError, OSError) as exc:
            fail(f"{url}: cannot reach the daemon ({getattr(exc, 'reason', exc)}); is it running "
                 "with control_port set?", 1)
        view.topic_rates(live)
        if once:
            console.print(render(live, view, url, pattern))
            return
        try:
            with _keys() as stdin, Live(render(live, view, url, pattern), console=console,
                                        auto_refresh=False, transient=False) as screen:
                while not _quit_pressed(stdin, interval):
                    try:
                        live = get()
                    except (urllib.error.URLError, OSError) as exc:
                        from rich.text import Text

                        screen.update(Text(f"{url}: cannot reach the daemon "
                                           f"({getattr(exc, 'reason', exc)}); retrying",
                                           style="bold red"), refresh=True)
                        continue
                    view.topic_rates(live)
                    screen.update(render(live, view, url, pattern), refresh=True)
        except KeyboardInterrupt:
            pass

    return watch
