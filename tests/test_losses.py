"""Every loss is loud: the first drop of each (component, reason) warns at once with the fix,
later drops are summarised at most every interval, and a run's losses are said in words."""
from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest
from daemon_helpers import run_cli, write_ini

from conftest import Collector, wait_for
from radlogger.daemon import EXIT_LOSS
from radlogger.losses import LossReport, describe_losses, total_lost
from radlogger.measurement import Measurement
from radlogger.pipeline import Pipeline
from radlogger.stats import EndpointStats, ProducerStats


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _snapshot(*stats: ProducerStats | EndpointStats) -> dict[str, dict[str, object]]:
    snap: dict[str, dict[str, object]] = {"producers": {}, "endpoints": {}}
    for s in stats:
        snap["endpoints" if isinstance(s, EndpointStats) else "producers"][s.name] = s.snapshot()
    return snap


def test_first_drop_warns_once_with_the_fix(caplog: pytest.LogCaptureFixture) -> None:
    report = LossReport(lambda role, name: {"inbox_size": 65536})
    db = EndpointStats("db")
    db.on_first_drop = report.first_drop
    with caplog.at_level(logging.WARNING, "radlogger.losses"):
        db.drop("inbox_full", 1024)
        db.drop("inbox_full", 5)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["endpoint db: inbox full, 1,024 dropped "
                        "(inbox_size = 65536; raise it, or set queue_policy = block)"]


def test_later_drops_are_summarised_at_most_every_interval(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    report = LossReport(interval=5.0, clock=clock)
    dev = ProducerStats("udp")
    dev.on_first_drop = report.first_drop
    with caplog.at_level(logging.WARNING, "radlogger.losses"):
        dev.drop("queue_full", 3)
        dev.drop("queue_full", 7)
        assert report.poll(_snapshot(dev)) == []  # too soon
        clock.t = 5.0
        assert report.poll(_snapshot(dev)) == ["device udp: queue full, 7 more dropped (10 in all)"]
        clock.t = 10.0
        assert report.poll(_snapshot(dev)) == []  # nothing new
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2


def test_a_drop_the_hook_missed_is_reported_by_the_summary() -> None:
    report = LossReport()
    dev = ProducerStats("replay")
    dev.drop("shutdown", 4)  # no hook bound: the summary still finds it
    lines = report.poll(_snapshot(dev), force=True)
    assert lines == ["device replay: shutdown, 4 dropped "
                     "(raise it to let the pipeline drain)"]


def test_losses_in_words() -> None:
    dev, db = ProducerStats("d"), EndpointStats("db")
    assert describe_losses(_snapshot(dev, db)) == "" and total_lost(_snapshot(dev, db)) == 0
    dev.drop("queue_full", 2)
    db.drop("inbox_full", 1000)
    snap = _snapshot(dev, db)
    assert total_lost(snap) == 1002
    assert describe_losses(snap) == ("lost 1,002 measurements: device d queue full 2; "
                                     "endpoint db inbox full 1,000")


class Gated(Collector):
    """Holds its first batch until released, so its small inbox overflows for sure."""

    def __init__(self, name: str, **kw: object) -> None:
        super().__init__(name, **kw)
        self.gate = threading.Event()

    def handle_batch(self, batch: list[Measurement]) -> None:
        self.gate.wait(10.0)
        super().handle_batch(batch)


def test_pipeline_warns_at_the_first_inbox_drop(pipeline: Pipeline,
                                                caplog: pytest.LogCaptureFixture) -> None:
    sink = pipeline.add_endpoint(Gated("db", inbox_size=4, batch_max=1), ["d"])
    out = pipeline.outlet("d")
    pipeline.start()
    with caplog.at_level(logging.WARNING, "radlogger.losses"):
        for i in range(50):
            out.push(Measurement("d", "d.x", i, i))
        wait_for(lambda: pipeline.endpoints["db"].stats.dropped > 0)
        sink.gate.set()
        wait_for(lambda: any("inbox full" in r.getMessage() for r in caplog.records))
    warning = next(r.getMessage() for r in caplog.records if "inbox full" in r.getMessage())
    assert warning.startswith("endpoint db: inbox full, ")
    assert warning.endswith("(inbox_size = 4; raise it, or set queue_policy = block)")
    pipeline.stop(5.0)
    snap = pipeline.snapshot()
    assert "lost" in describe_losses(snap) and total_lost(snap) == sink.stats.dropped


def test_batch_run_that_lost_data_exits_3(tmp_path: Path) -> None:
    """``--once`` whose only endpoint rejects every measurement (a spectrum sink fed scalars):
    the loss is a WARNING at the first drop, the final line says it, and the exit code is 3."""
    ini = write_ini(tmp_path / "lossy.ini", f"""
        [device:gen]
        driver = synthetic
        rate = 0
        count = 100

        [endpoint:spec]
        type = spectrum
        subscribe = gen
        directory = {tmp_path / "spec"}
        """)
    result = run_cli("run", "-c", str(ini), "--once", timeout=60)
    assert result.returncode == EXIT_LOSS, result.stderr[-2000:]
    assert "endpoint spec: endpoint failed, 1 dropped" in result.stderr
    final = next(line for line in result.stderr.splitlines() if "final stats" in line)
    assert " WARNING " in final and "lost 100 measurements: endpoint spec endpoint failed 100" \
        in final
