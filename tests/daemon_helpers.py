"""Helpers for the configuration, CLI and daemon tests.

* :func:`make_test_plugins` writes a real installed distribution (a ``.dist-info`` with
  ``entry_points.txt`` and a module) into a directory: it registers test plugins the way a
  third-party package would, including broken entry points, so the registry, ``plugins``,
  ``ports``, ``simulate`` and plugin commands are exercised without mocks.
* :class:`DaemonProcess` runs ``python -m radlogger.cli`` as a real subprocess, collects its
  log lines, and receives its ``sd_notify`` datagrams on a Unix socket (the readiness signal a
  test waits on instead of sleeping).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

from conftest import wait_for

PLUGIN_MODULE = '''
"""Test plugins registered through a real dist-info (see tests/daemon_helpers.py)."""
import threading

import click

from radlogger.device import Device
from radlogger.endpoint import Endpoint
from radlogger.processing import PublishingEndpoint
from radlogger.options import Option


class NeedsHost(Device):
    kind = "needs_host"
    summary = "test device with a required option"
    quantities = ("x",)
    finite = False  # an instrument: runs until stopped
    options = (
        Option("host", str, None, "instrument host", required=True),
        Option("port", int, 5025, "instrument port", min=1, max=65535),
    )

    def poll(self):
        self.wait(0.2)

    @classmethod
    def discover(cls):
        from serial.tools import list_ports

        found = ["a plain description"]
        ports = sorted(p.device for p in list_ports.comports())
        if ports:
            found.append({"port": ports[0], "description": "test instrument"})
        return found


class BrokenDiscovery(Device):
    kind = "broken_discovery"
    summary = "test device whose discovery fails"
    quantities = ("y",)

    def poll(self):
        self.wait(0.2)

    @classmethod
    def discover(cls):
        raise PermissionError("no access to the bus")


class Undeclared(Device):
    kind = "undeclared"
    summary = "test device that does not declare its quantities"

    def poll(self):
        self.wait(0.2)


class Doubler(PublishingEndpoint):
    kind = "doubler"
    summary = "test processing endpoint: republishes values times two"
    produces = ("{topic}_x2",)

    def handle(self, m):
        out = m.topic + "_x2"
        if self.has_subscribers(out):
            self.publish(m.derive(self.name, out, m.value * 2))


class Slow(Endpoint):
    """Stands for storage on a slow disk: every batch takes 50 ms."""

    kind = "slow"
    summary = "test endpoint that needs 50 ms per batch"

    def open(self):
        self._disk = threading.Event()  # never set: wait() is the slow write

    def handle_batch(self, batch):
        self._disk.wait(0.05)


class FailingOpen(Endpoint):
    kind = "failing_open"
    summary = "test endpoint whose open() fails"

    def open(self):
        raise OSError("disk on fire")

    def handle(self, m):
        pass


class PickyInit(Endpoint):
    kind = "picky"
    summary = "test endpoint whose constructor rejects a value"
    options = (Option("mode_of_file", str, "a", "a or w"),)

    def __init__(self, name, settings=None, **kw):
        super().__init__(name, settings, **kw)
        if self.settings.mode_of_file not in ("a", "w"):
            raise ValueError(f"mode_of_file must be a or w, not {self.settings.mode_of_file!r}")

    def handle(self, m):
        pass


@click.command()
@click.option("--port", type=int, default=0)
@click.argument("rest", nargs=-1)
def echo_sim(port, rest):
    """A test simulator that prints its arguments."""
    click.echo(f"echo_sim port={port} rest={' '.join(rest)}")


@click.command()
@click.argument("who", default="world")
def hello(who):
    """A test command from a plugin package."""
    click.echo(f"hello {who} from a plugin")
'''

ENTRY_POINTS = '''
[radlogger.devices]
needs_host = rl_testplug:NeedsHost
broken_discovery = rl_testplug:BrokenDiscovery
undeclared = rl_testplug:Undeclared
ghost_dev = rl_testplug_missing:Nope

[radlogger.endpoints]
doubler = rl_testplug:Doubler
failing_open = rl_testplug:FailingOpen
slow = rl_testplug:Slow
picky = rl_testplug:PickyInit
ghost_ep = rl_testplug:DoesNotExist

[radlogger.commands]
hello = rl_testplug:hello
ghost_cmd = rl_testplug_missing:cmd

[radlogger.simulators]
echo_sim = rl_testplug:echo_sim
ghost_sim = rl_testplug_missing:cli
'''


def make_test_plugins(root: Path) -> Path:
    """Write the test plugin distribution under ``root``; return the directory for sys.path."""
    site = root / "site"
    info = site / "rl_testplug-0.1.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: rl-testplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS.lstrip())
    (site / "rl_testplug.py").write_text(PLUGIN_MODULE.lstrip())
    return site


def write_ini(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def cli_env(site: Path | None = None, **extra: str) -> dict[str, str]:
    """The environment of a CLI subprocess: no inherited RADLOGGER_*, test plugins if given."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("RADLOGGER_") and k != "NOTIFY_SOCKET"}
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")]).rstrip(
            os.pathsep)
    env.update(extra)
    return env


def run_cli(*args: str, site: Path | None = None, timeout: float = 30,
            env: dict[str, str] | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "radlogger.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=env or cli_env(site), cwd=cwd)


class DaemonProcess:
    """``radloggerd run`` as a real subprocess, with its log lines and sd_notify messages."""

    def __init__(self, *args: str, site: Path | None = None, cwd: Path | None = None) -> None:
        self._dir = tempfile.mkdtemp(prefix="rld")  # short: AF_UNIX paths are limited
        self.notify_path = os.path.join(self._dir, "notify")
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(self.notify_path)
        self.notifications: list[str] = []
        self.lines: list[str] = []
        env = cli_env(site, NOTIFY_SOCKET=self.notify_path)
        self.proc = subprocess.Popen([sys.executable, "-m", "radlogger.cli", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=env, cwd=cwd)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_notify(self, message: str, timeout: float = 20.0) -> None:
        """Wait for an sd_notify datagram containing ``message`` (e.g. READY=1)."""
        deadline = time.monotonic() + timeout
        while not any(message in n for n in self.notifications):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.proc.poll() is not None and not self._pending():
                raise AssertionError(f"no {message} from the daemon; log:\n{self.log()}")
            self.notify.settimeout(min(remaining, 0.5))
            try:
                self.notifications.append(self.notify.recv(4096).decode())
            except TimeoutError:
                continue

    def _pending(self) -> bool:
        self.notify.settimeout(0)
        try:
            self.notifications.append(self.notify.recv(4096).decode())
            return True
        except (BlockingIOError, TimeoutError):
            return False

    def wait_ready(self, timeout: float = 20.0) -> None:
        self.wait_notify("READY=1", timeout)

    def wait_line(self, text: str, timeout: float = 20.0, after: int = 0,
                  regex: bool = False) -> str:
        """The first log line (from index ``after``) containing ``text`` (or matching it)."""
        def hit(line: str) -> bool:
            return bool(re.search(text, line)) if regex else text in line

        def found() -> str | None:
            return next((ln for ln in self.lines[after:] if hit(ln)), None)

        try:
            return str(wait_for(found, timeout, message=f"log line containing {text!r}"))
        except AssertionError:
            raise AssertionError(f"no log line with {text!r}; log:\n{self.log()}") from None

    def send(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def finish(self, timeout: float = 30.0) -> int:
        rc = self.proc.wait(timeout)
        self._reader.join(5)
        return rc

    def log(self) -> str:
        return "\n".join(self.lines)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        self.notify.close()
        try:
            os.unlink(self.notify_path)
            os.rmdir(self._dir)
        except OSError:
            pass

    def __enter__(self) -> DaemonProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def read_stats(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def assert_conserved(stats: dict[str, Any]) -> None:
    """The accounting invariant over a final stats snapshot, removed endpoints included."""
    assert stats["queue"]["depth"] == 0
    for p in stats["producers"].values():
        assert p["produced"] == p["published"] + p["dropped"], p
    for e in [*stats["endpoints"].values(), *stats["retired_endpoints"]]:
        assert e["received"] == e["handled"] + e["dropped"], e
        assert e["inbox_depth"] == 0, e
        assert "shutdown" not in e["dropped_by_reason"], e
    assert stats["balanced"] is True
    assert stats["drained"] is True


def signal_name(sig: int) -> str:
    return signal.Signals(sig).name


# ------------------------------------------------------------------------------------------
# Every kind of configuration mistake, with its exact (golden) message.  Files are written
# under one directory ({dir}); {drivers}/{types} are the installed plugin names, which other
# packages may extend.  Used in-process by test_config.py and through the CLI by test_cli.py.
SINE = "[device:sine]\ndriver = synthetic\n"
ERROR_CASES: list[tuple[str, dict[str, str], dict[str, str], str]] = [
    ("unknown_section", {"main.ini": "[radlogger]\nstats_interval = 1\n\n[devcie:sine]\n"
                         "driver = synthetic\n"}, {},
     "{dir}/main.ini:4: [devcie:sine] unknown section: did you mean [device:sine]?"),
    ("unknown_daemon_key", {"main.ini": "[radlogger]\nqueue_sise = 10\n"}, {},
     "{dir}/main.ini:2: [radlogger] unknown key 'queue_sise': did you mean 'queue_size'?"),
    ("unknown_plugin_key", {"main.ini": SINE + "rat = 10\n"}, {},
     "{dir}/main.ini:3: [device:sine] unknown key 'rat': did you mean 'rate'?"),
    ("wrong_type", {"main.ini": SINE + "rate = fast\n"}, {},
     "{dir}/main.ini:3: [device:sine] rate = 'fast': expected number (could not convert string "
     "to float: 'fast')"),
    ("out_of_range", {"main.ini": SINE + "rate = -5\n"}, {},
     "{dir}/main.ini:3: [device:sine] rate = '-5': must be >= 0"),
    ("bad_choice", {"main.ini": "[radlogger]\nqueue_policy = drop_all\n"}, {},
     "{dir}/main.ini:2: [radlogger] queue_policy = 'drop_all': must be one of drop_newest, "
     "drop_oldest, block"),
    ("missing_driver", {"main.ini": "[device:sine]\nrate = 10\n"}, {},
     "{dir}/main.ini:1: [device:sine] missing required key 'driver': set driver = one of "
     "{drivers}"),
    ("type_in_device", {"main.ini": "[device:sine]\ntype = synthetic\n"}, {},
     "{dir}/main.ini:1: [device:sine] missing required key 'driver' (a device uses 'driver', "
     "not 'type'): set driver = one of {drivers}"),
    ("unknown_driver", {"main.ini": "[device:sine]\ndriver = synthtic\n"}, {},
     "{dir}/main.ini:2: [device:sine] driver = synthtic: unknown driver; did you mean "
     "'synthetic'? known: {drivers}"),
    ("unknown_type", {"main.ini": "[endpoint:out]\ntype = nul\nsubscribe = *\n"}, {},
     "{dir}/main.ini:2: [endpoint:out] type = nul: unknown endpoint type; did you mean 'null'? "
     "known: {types}"),
    ("missing_required", {"main.ini": "[device:box]\ndriver = needs_host\nport = 80\n"}, {},
     "{dir}/main.ini:1: [device:box] missing required key 'host' (instrument host): add "
     "host = <value>"),
    ("duplicate_name", {"main.ini": "[device:x]\ndriver = synthetic\n\n[endpoint:x]\n"
                        "type = null\nsubscribe = x\n"}, {},
     "{dir}/main.ini:4: [endpoint:x] duplicate name 'x': already defined as [device:x] in "
     "{dir}/main.ini:1; names must be unique across devices and endpoints, rename one"),
    ("duplicate_section", {"main.ini": "[device:x]\ndriver = synthetic\n[device:x]\n"
                           "driver = synthetic\n"}, {},
     "{dir}/main.ini:3: [device:x] appears twice in this file; merge the two or rename one"),
    ("duplicate_across_files", {"main.ini": "[device:x]\ndriver = synthetic\n",
                                "conf.d/10-x.ini": "[device:x]\ndriver = synthetic\n"}, {},
     "{dir}/conf.d/10-x.ini:1: [device:x] duplicate name 'x': already defined as [device:x] "
     "in {dir}/main.ini:1; names must be unique across devices and endpoints, rename one"),
    ("duplicate_key", {"main.ini": SINE + "rate = 1\nrate = 2\n"}, {},
     "{dir}/main.ini:4: [device:sine] key 'rate' is set twice; keep one"),
    ("bad_name", {"main.ini": "[device:a.b]\ndriver = synthetic\n"}, {},
     "{dir}/main.ini:1: [device:a.b] name 'a.b' is not valid: use letters, digits, '_' and '-' "
     "(no dots: the name is the first part of its topics)"),
    ("bad_pattern", {"main.ini": "[endpoint:o]\ntype = null\nsubscribe = a..b\n"}, {},
     "{dir}/main.ini:3: [endpoint:o] subscribe: 'a..b' is not a topic (dotted names of "
     "letters, digits, '_' and '-', e.g. wsa1.iq) nor a glob"),
    ("parse_error", {"main.ini": "[radlogger]\nthis is not ini\n"}, {},
     "{dir}/main.ini:2: [radlogger] cannot parse 'this is not ini': expected 'key = value', a "
     "[section] or a # comment"),
    ("no_section_header", {"main.ini": "rate = 1\n"}, {},
     "{dir}/main.ini:1: 'rate = 1' comes before any section; start with [radlogger], "
     "[device:NAME] or [endpoint:NAME]"),
    ("file_not_found", {}, {},
     "{dir}/main.ini: file not found; pass an existing configuration file (radloggerd config "
     "sample > radloggerd.ini writes one)"),
    ("plugin_unloadable", {"main.ini": "[device:g]\ndriver = ghost_dev\n"}, {},
     "{dir}/main.ini:2: [device:g] driver = ghost_dev: driver 'ghost_dev' cannot be loaded: No "
     "module named 'rl_testplug_missing' (install the package it needs, e.g. pip install -e "
     "'.[all]')"),
    ("plugin_broken", {"main.ini": "[endpoint:g]\ntype = ghost_ep\n"}, {},
     "{dir}/main.ini:2: [endpoint:g] type = ghost_ep: the plugin failed to load "
     "(AttributeError: module 'rl_testplug' has no attribute 'DoesNotExist'); reinstall or fix "
     "it"),
    ("rejected_by_plugin", {"main.ini": "[endpoint:p]\ntype = picky\nsubscribe = *\n"
                            "mode_of_file = x\n"}, {},
     "{dir}/main.ini:1: [endpoint:p] rejected by picky: mode_of_file must be a or w, not 'x'"),
    ("include_in_dropin", {"main.ini": SINE, "conf.d/10.ini": "[radlogger]\ninclude = x\n"}, {},
     "{dir}/conf.d/10.ini:2: [radlogger] include is only read from the main file; remove it "
     "here"),
    ("dropin_bad_value", {"main.ini": SINE, "conf.d/20-bad.ini":
                          "[radlogger]\nstats_interval = -1\n"}, {},
     "{dir}/conf.d/20-bad.ini:2: [radlogger] stats_interval = '-1': must be >= 0"),
    ("env_bad_value", {"main.ini": SINE}, {"RADLOGGER_QUEUE_SIZE": "lots"},
     "environment RADLOGGER_QUEUE_SIZE: queue_size = 'lots': expected integer (invalid literal "
     "for int() with base 0: 'lots')"),
]


def write_case(root: Path, files: dict[str, str]) -> Path:
    """Write one case's files under ``root``; return the main file's path."""
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "main.ini"


def expected_message(template: str, root: Path) -> str:
    from radlogger import plugins

    return template.format(dir=root, drivers=", ".join(plugins.names(plugins.DEVICE_GROUP)),
                           types=", ".join(plugins.names(plugins.ENDPOINT_GROUP)))
