"""`radloggerd status` asks a running daemon (real subprocess) through its HTTP status API;
`radloggerd graph` draws a configuration; the status topic reaches endpoints."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

from daemon_helpers import DaemonProcess, read_stats, run_cli, write_ini

from conftest import free_port


def _config(tmp_path: Path, port: int, token: str = "") -> Path:
    return write_ini(tmp_path / "d.ini", f"""
[radlogger]
include =
control_port = {port}
control_token = {token}
status_interval = 0.05

[device:syn]
driver = synthetic
rate = 200

[endpoint:health]
type = null
subscribe = radlogger.status

[endpoint:data]
type = null
subscribe = syn
""")


def test_status_of_a_running_daemon(tmp_path: Path) -> None:
    cfg = _config(tmp_path, free_port(), token="s3cret")
    stats = tmp_path / "stats.json"
    with DaemonProcess("run", "-c", str(cfg), "--stats-json", str(stats)) as d:
        d.wait_ready()
        d.wait_line("status API on")
        out = run_cli("status", "-c", str(cfg))
        assert out.returncode == 0, out.stderr
        assert "syn" in out.stdout and "health" in out.stdout and out.stdout.rstrip().endswith("ok")
        # each plugin's own counters (Configurable.counters()) under its line
        assert "emitted=" in out.stdout and "connects=" in out.stdout  # the synthetic device
        assert "count=" in out.stdout and "out_of_order=" in out.stdout  # the null endpoints
        js = run_cli("status", "-c", str(cfg), "--json")
        status = json.loads(js.stdout)
        assert status["ok"] is True
        names = {c["name"] for c in status["components"]}
        assert {"syn", "health", "data"} <= names
        syn = next(c for c in status["components"] if c["name"] == "syn")
        assert syn["own"]["connects"] == 1 and syn["counters"]["emitted"] == syn["own"]["emitted"]
        bad = run_cli("status", "-c", str(cfg), "--token", "wrong")
        url = run_cli("status", "--url", "http://127.0.0.1:1")
        d.proc.send_signal(signal.SIGTERM)
        assert d.finish() == 0
    assert bad.returncode == 1 and "401" in bad.stderr and "token" in bad.stderr
    assert url.returncode == 1 and "cannot reach" in url.stderr
    final = read_stats(stats)
    assert final["endpoints"]["health"]["handled"] > 0  # the status topic was delivered


def test_status_needs_a_control_port(tmp_path: Path) -> None:
    cfg = _config(tmp_path, 0)
    out = run_cli("status", "-c", str(cfg))
    assert out.returncode == 2 and "control_port is 0" in out.stderr


def test_graph_text_dot_and_rendered(tmp_path: Path) -> None:
    cfg = _config(tmp_path, 0)
    text = run_cli("graph", "-c", str(cfg))
    assert text.returncode == 0 and "syn" in text.stdout and "data" in text.stdout
    dot = run_cli("graph", "-c", str(cfg), "-o", str(tmp_path / "g.dot"))
    assert dot.returncode == 0 and "digraph" in (tmp_path / "g.dot").read_text()
    svg = run_cli("graph", "-c", str(cfg), "-o", str(tmp_path / "g.svg"))
    assert svg.returncode == 0
    body = (tmp_path / "g.svg").read_text()
    if shutil.which("dot"):  # installed by etc/install-system-deps.sh
        assert "<svg" in body
    else:
        assert "Graphviz" in svg.stdout and "syn" in body
