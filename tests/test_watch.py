"""``radloggerd watch`` in a pseudo-terminal (pexpect): the screen shows every component with its
state and the matching topics' latest values, refreshes in place, and q quits; the token rules
are the control API's."""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Iterator

import pytest

from conftest import free_port
from radlogger.config import default_config_path, load_config
from radlogger.daemon import Daemon

pexpect = pytest.importorskip("pexpect")

TOKEN = "watch-token"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, int]]:
    """The packaged default configuration with a control port and a token."""
    tmp = tmp_path_factory.mktemp("watch")
    port = free_port()
    text = default_config_path().read_text(encoding="utf-8")
    text = text.replace("[radlogger]\n", f"[radlogger]\ncontrol_port = {port}\n"
                        f"control_token = {TOKEN}\n", 1).replace("radlogger-data/",
                                                                 f"{tmp}/data/")
    path = tmp / "simulated.ini"
    path.write_text(text, encoding="utf-8")
    d = Daemon(load_config(path, env={}), path, env={}, embedded=True)
    thread = threading.Thread(target=d.run, daemon=True)
    thread.start()
    try:
        assert d.wait_ready(30)
        yield d, port
    finally:
        d.request_stop()
        thread.join(30)
        assert not thread.is_alive()


def spawn(*args: str) -> object:
    env = dict(os.environ, COLUMNS="160", LINES="60", TERM="xterm-256color")
    env.pop("RADLOGGER_CONTROL_TOKEN", None)
    return pexpect.spawn(sys.executable, ["-m", "radlogger.cli", "watch", *args], env=env,
                         dimensions=(60, 160), encoding="utf-8", timeout=30)


def test_watch_shows_components_and_topics_and_q_quits(daemon: tuple[Daemon, int]) -> None:
    d, port = daemon
    child = spawn("--port", str(port), "--token", TOKEN, "--interval", "0.3", "pico1.*")
    try:
        child.expect("components")
        for name in ("wsa1", "pico1", "widar", "fft", "integrate", "pico_db"):
            child.expect(re.escape(name))
        child.expect("running")
        # the pico board's evaluations arrive: a pulse count shows as the latest value
        child.expect(r"pico1\.pulses\s+│?\s*[\d.]*\s*│?\s*[\d,]+\s*│?\s*[\d,.]+\s*│?\s*pulses")
        # refreshes in place: rich moves the cursor up and redraws the frame
        child.expect(r"\x1b\[\d*A", timeout=10)
        child.expect("pico1.pulses")
        child.send("q")
        child.expect(pexpect.EOF, timeout=10)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0


def test_watch_pattern_filters_topics(daemon: tuple[Daemon, int]) -> None:
    _, port = daemon
    child = spawn("--port", str(port), "--token", TOKEN, "--once", "wsa1.*")
    child.expect(pexpect.EOF)
    out = child.before
    child.close()
    assert child.exitstatus == 0
    assert "wsa1.spectrum_dbm" in out and "dBm" in out
    topic_part = out.split("topics wsa1.*", 1)[1]
    assert "pico1.pulses" not in topic_part and "widar.lagset" not in topic_part


def test_watch_needs_the_token(daemon: tuple[Daemon, int]) -> None:
    _, port = daemon
    child = spawn("--port", str(port), "--once")
    child.expect(pexpect.EOF)
    out = child.before
    child.close()
    assert child.exitstatus == 1
    assert "401" in out and "--token" in out


def test_watch_unreachable_daemon_is_one_line() -> None:
    child = spawn("--port", str(free_port()), "--once")
    child.expect(pexpect.EOF)
    out = child.before
    child.close()
    assert child.exitstatus == 1
    assert "cannot reach the daemon" in out and "Traceback" not in out
