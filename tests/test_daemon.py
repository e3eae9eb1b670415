"""The daemon: signals on a real ``radloggerd run`` subprocess, reload, idle CPU, ``--once``.

Proof of delivery comes from the daemon's own final stats (``--stats-json``), checked against
the accounting invariant; readiness from its sd_notify READY=1 datagram, never from sleeping.
"""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import threading
from pathlib import Path

import psutil
import pytest
from daemon_helpers import (
    DaemonProcess,
    assert_conserved,
    make_test_plugins,
    read_stats,
    write_ini,
)

from conftest import wait_for
from radlogger.config import load_config
from radlogger.daemon import Daemon


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_test_plugins(tmp_path_factory.mktemp("plugins"))


def stats_count(line: str, name: str, field: str) -> int:
    m = re.search(rf"\b{re.escape(name)}\[\w+\] .*?\b{field}=(\d+)", line)
    assert m, f"no {name} {field} in {line!r}"
    return int(m.group(1))


# ------------------------------------------------------------------------------ SIGTERM, SIGINT
def test_sigterm_delivers_every_accepted_measurement(tmp_path: Path) -> None:
    path = write_ini(tmp_path / "term.ini", """
        [radlogger]
        queue_size = 1000000
        queue_policy = block
        stats_interval = 0.05
        shutdown_deadline = 30
        [device:d]
        driver = synthetic
        pattern = counter
        rate = 0
        count = 300000
        [endpoint:sink]
        type = null
        subscribe = d
        inbox_size = 1000000
        """)
    stats_file = tmp_path / "stats.json"
    with DaemonProcess("run", "-c", str(path), "--stats-json", str(stats_file)) as daemon:
        daemon.wait_ready()
        line = daemon.wait_line(r"stats: .*\bd\[\w+\] prod=[1-9]", regex=True)
        assert stats_count(line, "d", "prod") > 0
        daemon.send(signal.SIGTERM)
        assert daemon.finish() == 0, daemon.log()
        daemon.wait_notify("STOPPING=1")
        assert any("received SIGTERM" in ln for ln in daemon.lines)
        assert any("final stats: " in ln for ln in daemon.lines)
    stats = read_stats(stats_file)
    assert_conserved(stats)
    d, sink = stats["producers"]["d"], stats["endpoints"]["sink"]
    assert d["produced"] > 0
    assert d["dropped"] == 0  # queue_policy = block with room: every measurement accepted
    assert sink["received"] == d["published"] == d["produced"]
    assert sink["handled"] == sink["received"]  # every accepted one reached the endpoint


def test_missed_shutdown_deadline_is_counted_and_exits_1(tmp_path: Path, site: Path) -> None:
    path = write_ini(tmp_path / "slow.ini", """
        [radlogger]
        queue_policy = block
        stats_interval = 0
        shutdown_deadline = 0.3
        [device:d]
        driver = synthetic
        rate = 0
        count = 5000
        [endpoint:disk]
        type = slow
        subscribe = d
        batch_max = 10
        inbox_size = 100000
        """)
    stats_file = tmp_path / "stats.json"
    with DaemonProcess("run", "-c", str(path), "--stats-json", str(stats_file),
                       site=site) as daemon:
        daemon.wait_ready()
        daemon.send(signal.SIGTERM)
        assert daemon.finish() == 1, daemon.log()
        assert any("shutdown deadline of 0.3 s missed" in ln for ln in daemon.lines)
    stats = read_stats(stats_file)
    disk, d = stats["endpoints"]["disk"], stats["producers"]["d"]
    assert stats["drained"] is False and stats["balanced"] is True
    assert disk["dropped_by_reason"].get("shutdown", 0) > 0  # counted, not silently lost
    assert disk["received"] == disk["handled"] + disk["dropped"]
    assert d["produced"] == d["published"] + d["dropped"]
    assert disk["handled"] + disk["dropped"] + d["dropped"] == d["produced"]


def test_sigint_stops_and_sigusr1_logs_stats(tmp_path: Path) -> None:
    path = write_ini(tmp_path / "int.ini", """
        [radlogger]
        stats_interval = 0
        [device:d]
        driver = synthetic
        rate = 200
        [endpoint:sink]
        type = null
        subscribe = d
        """)
    stats_file = tmp_path / "stats.json"
    with DaemonProcess("run", "-c", str(path), "--stats-json", str(stats_file)) as daemon:
        daemon.wait_ready()
        daemon.send(signal.SIGUSR1)
        line = daemon.wait_line("stats: queue ")
        assert "sink[running]" in line
        daemon.wait_notify("STATUS=queue ")
        daemon.send(signal.SIGINT)
        assert daemon.finish() == 0, daemon.log()
        assert any("received SIGINT" in ln for ln in daemon.lines)
        assert "Traceback" not in daemon.log()
    assert_conserved(read_stats(stats_file))


# ------------------------------------------------------------------------------ SIGHUP
RELOAD_BEFORE = """
    [radlogger]
    queue_size = 1000000
    queue_policy = block
    stats_interval = 0
    shutdown_deadline = 30
    [device:d]
    driver = synthetic
    pattern = counter
    rate = 5000
    [device:gone]
    driver = synthetic
    rate = 100
    [endpoint:keep]
    type = null
    subscribe = d
    inbox_size = 1000000
    [endpoint:old]
    type = null
    subscribe = d
    inbox_size = 1000000
    [endpoint:swap]
    type = null
    subscribe = d
    inbox_size = 1000000
    """
RELOAD_AFTER = """
    [radlogger]
    queue_size = 1000000
    queue_policy = block
    stats_interval = 0.05
    shutdown_deadline = 30
    [device:d]
    driver = synthetic
    pattern = counter
    rate = 5000
    [device:fresh]
    driver = synthetic
    rate = 0
    count = 1000
    [endpoint:keep]
    type = null
    subscribe = d
    inbox_size = 1000000
    [endpoint:swap]
    type = null
    subscribe = d
    inbox_size = 1000000
    latency = yes
    [endpoint:new]
    type = null
    subscribe = d
    inbox_size = 1000000
    """


def test_sighup_adds_removes_and_restarts_without_loss(tmp_path: Path) -> None:
    path = write_ini(tmp_path / "hup.ini", RELOAD_BEFORE)
    stats_file = tmp_path / "stats.json"
    with DaemonProcess("run", "-c", str(path), "--stats-json", str(stats_file)) as daemon:
        daemon.wait_ready()
        write_ini(path, RELOAD_AFTER)
        daemon.send(signal.SIGHUP)
        daemon.wait_line("reload applied: added device:fresh, endpoint:new, removed device:gone, "
                         "endpoint:old, restarted endpoint:swap")
        daemon.wait_notify("RELOADING=1")
        # traffic after the reload reaches the new and the restarted endpoint
        daemon.wait_line(r"stats: .*\bswap\[running\] recv=[1-9].*\bnew\[running\] recv=[1-9]",
                         regex=True)
        daemon.send(signal.SIGTERM)
        assert daemon.finish() == 0, daemon.log()
    stats = read_stats(stats_file)
    assert_conserved(stats)
    assert stats["reloads"] == {"applied": 1, "rejected": 0}
    producers, endpoints = stats["producers"], stats["endpoints"]
    retired = {e["name"]: e for e in stats["retired_endpoints"]}
    assert set(endpoints) == {"keep", "swap", "new"} and set(retired) == {"old", "swap"}
    published = producers["d"]["published"]
    assert producers["d"]["dropped"] == 0
    # an unchanged endpoint is untouched by the reload: it saw everything
    assert endpoints["keep"]["received"] == endpoints["keep"]["handled"] == published
    # a restarted endpoint: old and new instance together saw everything, exactly once
    assert retired["swap"]["handled"] + endpoints["swap"]["handled"] == published
    assert retired["swap"]["handled"] > 0 and endpoints["swap"]["handled"] > 0
    # a removed endpoint drained what it had; an added one got data from then on
    assert 0 < retired["old"]["handled"] < published
    assert 0 < endpoints["new"]["handled"] < published
    assert producers["gone"]["state"] == "stopped" and producers["gone"]["produced"] > 0
    assert producers["fresh"]["produced"] == 1000


def test_bad_config_on_sighup_keeps_the_running_one(tmp_path: Path) -> None:
    good = """
        [radlogger]
        stats_interval = 0.05
        [device:d]
        driver = synthetic
        rate = 500
        [endpoint:sink]
        type = null
        subscribe = d
        """
    path = write_ini(tmp_path / "bad.ini", good)
    stats_file = tmp_path / "stats.json"
    with DaemonProcess("run", "-c", str(path), "--stats-json", str(stats_file)) as daemon:
        daemon.wait_ready()
        write_ini(path, good.replace("driver = synthetic", "driver = synthtic"))
        daemon.send(signal.SIGHUP)
        line = daemon.wait_line("reload rejected")
        assert line.endswith(f"reload rejected, the running configuration stays: {path}:4: "
                             "[device:d] driver = synthtic: unknown driver; did you mean "
                             f"'synthetic'? known: {line.split('known: ')[1]}")
        after = len(daemon.lines)
        first = daemon.wait_line(r"stats: .*\bsink\[running\] recv=", regex=True, after=after)
        # still running the old configuration: data keeps flowing
        daemon.wait_line(rf"stats: .*\bsink\[running\] recv=(?!{stats_count(first, 'sink', 'recv')}"
                         r"\b)\d+", regex=True, after=after)
        assert daemon.proc.poll() is None
        daemon.send(signal.SIGTERM)
        assert daemon.finish() == 0, daemon.log()
    stats = read_stats(stats_file)
    assert_conserved(stats)
    assert stats["reloads"] == {"applied": 0, "rejected": 1}
    assert set(stats["endpoints"]) == {"sink"} and stats["retired_endpoints"] == []


# ------------------------------------------------------------------------------ idle, --once
def test_idle_daemon_uses_no_cpu(tmp_path: Path) -> None:
    path = write_ini(tmp_path / "idle.ini", """
        [radlogger]
        stats_interval = 0
        [device:quiet]
        driver = synthetic
        rate = 0.001
        [endpoint:sink]
        type = null
        subscribe = quiet
        mode = shared
        [endpoint:log]
        type = log
        subscribe = quiet
        """)
    with DaemonProcess("run", "-c", str(path)) as daemon:
        daemon.wait_ready()
        proc = psutil.Process(daemon.proc.pid)
        before = proc.cpu_times()
        with pytest.raises(subprocess.TimeoutExpired):  # the window: an idle daemon keeps running
            daemon.proc.wait(timeout=1.0)
        after = proc.cpu_times()
        used = (after.user - before.user) + (after.system - before.system)
        assert used < 0.05, f"idle daemon used {used:.3f} s of CPU in 1 s"
        daemon.send(signal.SIGTERM)
        assert daemon.finish() == 0, daemon.log()


def test_once_stops_when_finite_devices_finish(tmp_path: Path) -> None:
    path = write_ini(tmp_path / "once.ini", """
        [radlogger]
        queue_policy = block
        stats_interval = 0
        [device:a]
        driver = synthetic
        rate = 0
        count = 20000
        [device:b]
        driver = synthetic
        pattern = counter
        rate = 0
        count = 500
        [endpoint:sink]
        type = null
        subscribe = *
        inbox_size = 100000
        """)
    stats_file = tmp_path / "stats.json"
    with DaemonProcess("run", "-c", str(path), "--once", "--stats-json",
                       str(stats_file)) as daemon:
        assert daemon.finish(60) == 0, daemon.log()
        assert any("stopping (every finite device finished)" in ln for ln in daemon.lines)
    stats = read_stats(stats_file)
    assert_conserved(stats)
    assert stats["producers"]["a"]["produced"] == 20000
    assert stats["producers"]["b"]["produced"] == 500
    assert stats["producers"]["a"]["state"] == "finished"
    assert stats["endpoints"]["sink"]["handled"] == 20500


def test_endpoint_that_cannot_open_fails_the_start(tmp_path: Path, site: Path) -> None:
    path = write_ini(tmp_path / "fail.ini", """
        [device:d]
        driver = synthetic
        [endpoint:broken]
        type = failing_open
        subscribe = d
        """)
    with DaemonProcess("run", "-c", str(path), site=site) as daemon:
        assert daemon.finish() == 1
        assert any(ln.endswith("cannot start endpoint broken: OSError: disk on fire")
                   for ln in daemon.lines), daemon.log()
        assert "Traceback" not in daemon.log()


# ------------------------------------------------------------------------------ in process
def test_reload_in_process_restarts_a_device_in_sequence(
        tmp_path: Path, site: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Details a subprocess cannot show: sequence continuity across a device restart, an
    endpoint failing to open on reload, and daemon options that need a restart."""
    monkeypatch.syspath_prepend(str(site))
    path = write_ini(tmp_path / "inproc.ini", """
        [radlogger]
        queue_policy = block
        stats_interval = 0
        [device:d]
        driver = synthetic
        pattern = counter
        rate = 20000
        [endpoint:sink]
        type = null
        subscribe = d
        inbox_size = 1000000
        """)
    daemon = Daemon(load_config(path, env={}), path, env={}, embedded=True)
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(daemon.run()), name="test-daemon")
    thread.start()
    try:
        assert daemon.wait_ready(20)
        assert daemon.pipeline is not None
        first = daemon.pipeline.devices["d"]
        wait_for(lambda: first.outlet.stats.produced > 100)
        write_ini(path, path.read_text().replace("rate = 20000", "rate = 10000")
                  .replace("queue_policy = block", "queue_policy = block\nqueue_size = 99")
                  + "[endpoint:broken]\ntype = failing_open\nsubscribe = d\n")
        with caplog.at_level(logging.INFO, logger="radlogger.daemon"):
            daemon.request_reload()
            wait_for(lambda: daemon.reloads == 1)
        second = daemon.pipeline.devices["d"]
        assert second is not first and not first.alive
        stats = daemon.pipeline.producers["d"]
        assert second.outlet.stats is stats  # the counters carry on across the restart
        at_reload = stats.produced
        wait_for(lambda: stats.produced > at_reload + 100)
        messages = [r.getMessage() for r in caplog.records]
        assert "reload applied: restarted device:d; failed to start endpoint:broken" in messages
        assert "reload: queue_size = 99 needs a restart; keeping 65536" in messages
        assert any(m.startswith("reload: endpoint broken cannot start (OSError: disk on fire)")
                   for m in messages), messages
        assert "broken" not in daemon.pipeline.endpoints
        assert daemon.config.daemon.queue_size == 65536
    finally:
        daemon.request_stop()
        thread.join(30)
    assert result == [0]
    sink = daemon.pipeline.endpoints["sink"]
    produced = daemon.pipeline.producers["d"].produced
    assert sink.out_of_order == 0  # the restarted device continued the sequence
    assert sink.count == produced and sink.last_seq["d"] == produced - 1
    assert daemon.pipeline.balanced()
