"""``GET /metrics`` of a running daemon (real subprocess), parsed with prometheus_client's own
text parser: names and labels per Prometheus conventions, the control API's token rules."""

from __future__ import annotations

import signal
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from daemon_helpers import DaemonProcess, write_ini
from prometheus_client.parser import text_string_to_metric_families

from conftest import free_port, wait_for


def _get(url: str, token: str = "", accept: str = "") -> tuple[int, str, str]:
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if accept:
        req.add_header("Accept", accept)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, "", exc.read().decode()


def _samples(text: str) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append(s)
    return out


def _value(samples: dict[str, list[Any]], name: str, **labels: str) -> float:
    found = [s.value for s in samples.get(name, [])
             if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (name, labels, samples.get(name))
    return float(found[0])


def test_metrics_of_a_running_daemon(tmp_path: Path) -> None:
    port = free_port()
    cfg = write_ini(tmp_path / "d.ini", f"""
[radlogger]
include =
control_port = {port}
control_token = s3cret
queue_size = 64

[device:syn]
driver = synthetic
rate = 2000

[endpoint:slow]
type = null
subscribe = syn
""")
    url = f"http://127.0.0.1:{port}/metrics"
    with DaemonProcess("run", "-c", str(cfg)) as d:
        d.wait_ready()
        d.wait_line("status API on")
        denied = _get(url)
        wait_for(lambda: _value(_samples(_get(url, "s3cret")[2]), "radlogger_device_produced_total",
                                device="syn") > 100, message="syn produced")
        # rates need two samples of the tracker at least half a second apart
        wait_for(lambda: "radlogger_device_rate_per_second" in _samples(_get(url, "s3cret")[2]),
                 message="rates")
        code, ctype, text = _get(url, "s3cret")
        om_code, om_type, om_text = _get(url, "s3cret", "application/openmetrics-text")
        d.proc.send_signal(signal.SIGTERM)
        assert d.finish() == 0
    assert denied[0] == 401
    assert code == 200 and ctype.startswith("text/plain")
    assert om_code == 200 and om_type.startswith("application/openmetrics-text")
    assert om_text.rstrip().endswith("# EOF")
    from prometheus_client.openmetrics.parser import (
        text_string_to_metric_families as openmetrics_families,
    )

    om = {f.name: f for f in openmetrics_families(om_text)}
    assert om["radlogger_device_produced"].type == "counter"
    assert om["radlogger_endpoint_dropped"].type == "counter"
    m = _samples(text)
    for family in text_string_to_metric_families(text):
        assert family.name.startswith("radlogger_"), family.name
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples)
    produced = _value(m, "radlogger_device_produced_total", device="syn")
    published = _value(m, "radlogger_device_published_total", device="syn")
    assert produced >= published > 0
    assert _value(m, "radlogger_endpoint_received_total", endpoint="slow") > 0
    assert _value(m, "radlogger_device_state", device="syn", state="running") == 1
    assert _value(m, "radlogger_device_state", device="syn", state="backoff") == 0
    assert _value(m, "radlogger_endpoint_state", endpoint="slow", state="running") == 1
    assert _value(m, "radlogger_device_ok", device="syn") == 1
    assert _value(m, "radlogger_device_info", device="syn", kind="synthetic") == 1
    assert _value(m, "radlogger_queue_capacity") == 64
    assert "radlogger_queue_depth" in m and "radlogger_endpoint_inbox_depth" in m
    assert _value(m, "radlogger_device_rate_per_second", device="syn", counter="produced") > 0
    # the plugins' own counters(): the synthetic device's, the null endpoint's
    assert _value(m, "radlogger_device_connects", device="syn") == 1
    assert _value(m, "radlogger_device_emitted", device="syn") > 0
    assert _value(m, "radlogger_endpoint_count", endpoint="slow") > 0


def test_own_counters_by_reason_become_labelled_counters() -> None:
    """Every own number is untyped under its name (a series that never changes name); a
    ``by_reason`` count is also one counter with a ``reason`` label."""
    from prometheus_client import CollectorRegistry, generate_latest

    from radlogger.metrics import PipelineCollector

    class Pipe:
        devices: dict[str, Any] = {}
        endpoints: dict[str, Any] = {}

        def snapshot(self) -> dict[str, Any]:
            own = {"bad_frames": 5, "bad_frames.crc": 3, "bad_frames.short": 1, "queued": 7,
                   "worker0.pid": 12, "received": 9, "counters_error": "text is skipped"}
            return {"queue": {"depth": 0, "capacity": 8, "dropped": 2}, "broker": {},
                    "producers": {"wsa1": {"produced": 4, "dropped_by_reason": {"full": 2},
                                           "own": own}},
                    "endpoints": {}}

    class Tracker:
        def update(self, pipeline: Any) -> Any:
            return type("S", (), {"components": []})()

    registry = CollectorRegistry(auto_describe=False)
    registry.register(PipelineCollector(Pipe(), Tracker()))
    m = _samples(generate_latest(registry).decode())
    assert _value(m, "radlogger_device_bad_frames", device="wsa1") == 5
    by_reason = "radlogger_device_bad_frames_by_reason_total"
    assert _value(m, by_reason, device="wsa1", reason="crc") == 3
    assert _value(m, by_reason, device="wsa1", reason="short") == 1
    assert len(m[by_reason]) == 2
    assert _value(m, "radlogger_device_queued", device="wsa1") == 7
    assert _value(m, "radlogger_device_worker0_pid", device="wsa1") == 12
    assert _value(m, "radlogger_device_dropped_total", device="wsa1", reason="full") == 2
    assert _value(m, "radlogger_device_produced_total", device="wsa1") == 4
    assert _value(m, "radlogger_device_own_received", device="wsa1") == 9
    assert _value(m, "radlogger_queue_dropped_total") == 2
