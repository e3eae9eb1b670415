"""Tokens by default off loopback: a server refuses a non-loopback address without a token
unless told `allow_unauthenticated = yes`; a token file is generated at first start (0600) and
`radloggerd status -c` reads it."""

from __future__ import annotations

import os
import signal
import stat
from pathlib import Path

import pytest
from daemon_helpers import DaemonProcess, run_cli, write_ini

from conftest import free_port
from radlogger.web import WebError, WebServer, is_loopback


@pytest.mark.parametrize(("host", "loop"), [("127.0.0.1", True), ("::1", True),
                                            ("localhost", True), ("0.0.0.0", False),
                                            ("192.168.1.5", False), ("::", False)])
def test_loopback(host: str, loop: bool) -> None:
    assert is_loopback(host) is loop


def test_no_token_off_loopback_is_refused_unless_allowed() -> None:
    with pytest.raises(WebError, match="without a token"):
        WebServer("0.0.0.0", 0, None)
    WebServer("0.0.0.0", 0, "s3cret")  # a token: fine
    WebServer("0.0.0.0", 0, None, allow_unauthenticated=True)  # explicit: fine
    WebServer("127.0.0.1", 0, None)  # loopback: fine


def test_daemon_refuses_status_api_on_all_interfaces_without_a_token(tmp_path: Path) -> None:
    ini = write_ini(tmp_path / "open.ini", f"""
        [radlogger]
        control_host = 0.0.0.0
        control_port = {free_port()}
        [device:gen]
        driver = synthetic
        [endpoint:n]
        type = null
        subscribe = gen
        """)
    out = run_cli("run", "-c", str(ini), "--duration", "1", timeout=60)
    assert out.returncode == 1 and "without a token" in out.stderr


def test_token_file_is_generated_private_and_used_by_status(tmp_path: Path) -> None:
    token_file = tmp_path / "control.token"
    port = free_port()
    ini = write_ini(tmp_path / "tok.ini", f"""
        [radlogger]
        control_port = {port}
        control_token_file = {token_file}
        [device:gen]
        driver = synthetic
        [endpoint:n]
        type = null
        subscribe = gen
        """)
    with DaemonProcess("run", "-c", str(ini)) as d:
        d.wait_ready()
        d.wait_line("status API on")
        assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
        assert len(token_file.read_text().strip()) >= 32
        ok = run_cli("status", "-c", str(ini))
        refused = run_cli("status", "--port", str(port))
        d.proc.send_signal(signal.SIGTERM)
        assert d.finish() == 0
    assert ok.returncode == 0, ok.stderr
    assert refused.returncode == 1 and "401" in refused.stderr
