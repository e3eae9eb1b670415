"""Every counter visible (issue 13): rates, last errors with their time, a device that never
connects or keeps cycling through backoff marked not ok, `status` from the control port alone,
the plugins' own counters in --stats-json and the final stats line."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from daemon_helpers import DaemonProcess, read_stats, run_cli, write_ini

from conftest import free_port, wait_for


def _config(tmp_path: Path, port: int) -> Path:
    return write_ini(tmp_path / "d.ini", f"""
[radlogger]
include =
control_port = {port}
status_down_after = 1
stats_interval = 0

[device:syn]
driver = synthetic
rate = 500

[device:wsa]
driver = wsa4000
host = 127.0.0.1
control_port = {free_port()}
backoff_initial = 0.05
backoff_max = 0.2

[endpoint:data]
type = null
subscribe = syn, wsa
""")


def _status(*args: str) -> tuple[int, dict]:
    out = run_cli("status", *args, "--json")
    return out.returncode, json.loads(out.stdout) if out.stdout.strip() else {}


def test_status_rates_errors_and_a_device_that_never_connected(tmp_path: Path) -> None:
    port = free_port()
    cfg = _config(tmp_path, port)
    stats = tmp_path / "stats.json"
    with DaemonProcess("run", "-c", str(cfg), "--stats-json", str(stats)) as d:
        d.wait_ready()
        d.wait_line("status API on")

        def settled() -> dict | None:
            rc, st = _status("--port", str(port))
            comps = {c["name"]: c for c in st.get("components", [])}
            wsa, syn = comps.get("wsa"), comps.get("syn")
            if rc == 1 and wsa and wsa["problem"] and syn and syn["rates"].get("produced"):
                return comps
            return None

        comps = wait_for(settled, 30, 0.2, "status not ok for the absent instrument, rates")
        assert isinstance(comps, dict)
        wsa, syn, data = comps["wsa"], comps["syn"], comps["data"]
        assert wsa["problem"].startswith("never connected for ")
        assert "Connection refused" in wsa["last_error"] or "refused" in wsa["last_error"]
        assert wsa["last_error_at"].endswith("+00:00") and "T" in wsa["last_error_at"]
        assert 200 < syn["rates"]["produced"] < 1000  # configured at 500/s
        assert data["rates"]["handled"] > 0
        assert syn["problem"] == ""
        text = run_cli("status", "--port", str(port))
        assert text.returncode == 1 and "never connected" in text.stdout
        assert "/s)" in text.stdout and "last error" in text.stdout
        # the configuration was edited since: status still finds the daemon by its port
        cfg.write_text(cfg.read_text() + "\n[device:broken]\ndriver = no_such_driver\n")
        again = run_cli("status", "-c", str(cfg))
        assert "does not load" in again.stderr and "syn" in again.stdout
        d.proc.send_signal(signal.SIGTERM)
        assert d.finish() == 0
    final = read_stats(stats)
    assert final["producers"]["syn"]["own"]["emitted"] == final["producers"]["syn"]["produced"]
    wsa_own = final["producers"]["wsa"]["own"]
    assert wsa_own["connects"] >= 2 and wsa_own["packets"] == 0  # attempts, none succeeded
    assert {"gaps", "missing_packets", "bad_packets"} <= set(wsa_own)
    line = next(x for x in d.lines if "final stats" in x)
    assert "syn[" in line and "{emitted=" in line
