"""The first hour of a new user: the sample configuration runs as printed, ``check`` finds
what would fail at run time, ``check``/``graph`` need no ``-c``, option names agree, and the
log says what the daemon is doing (connected, which files, what a stop waits for)."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any

from daemon_helpers import run_cli, write_ini

from conftest import free_port, wait_for
from radlogger.device import Device
from radlogger.endpoint import Endpoint
from radlogger.measurement import Measurement
from radlogger.pipeline import Pipeline


def test_the_sample_runs_as_printed_with_data_in_every_store(tmp_path: Path) -> None:
    sample = run_cli("config", "sample")
    assert sample.returncode == 0, sample.stderr
    ini = tmp_path / "radloggerd.ini"
    ini.write_text(sample.stdout)
    checked = run_cli("check", "-c", str(ini), cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert "warning" not in checked.stderr and "error" not in checked.stderr
    run = run_cli("run", "-c", str(ini), "--duration", "3", cwd=tmp_path, timeout=60)
    assert run.returncode == 0, run.stderr[-3000:]
    log = run.stderr + run.stdout
    assert "device synthetic1 (synthetic): connected" in log
    data = tmp_path / "radlogger-data"
    stores = {p.suffix: p for p in data.iterdir()}
    assert set(stores) == {".csv", ".jsonl", ".sqlite", ".h5"}, sorted(stores)
    for path in stores.values():  # each store's path is logged when opened
        assert f"writing {path.resolve()}" in log
    assert len(stores[".csv"].read_text().splitlines()) > 2
    rows = [json.loads(line) for line in stores[".jsonl"].read_text().splitlines()]
    assert len(rows) > 1
    with sqlite3.connect(stores[".sqlite"]) as db:
        tables = [r[0] for r in db.execute("select name from sqlite_master where type='table'")]
        assert sum(db.execute(f'select count(*) from "{t}"').fetchone()[0] for t in tables) > 1
    import h5py

    with h5py.File(stores[".h5"], "r") as h5:
        sizes: list[int] = []
        h5.visititems(lambda name, obj: sizes.append(obj.shape[0] if
                                                     isinstance(obj, h5py.Dataset) and
                                                     obj.shape else 0))
        assert max(sizes) > 1


def _check(tmp_path: Path, text: str) -> Any:
    return run_cli("check", "-c", str(write_ini(tmp_path / "c.ini", text)), cwd=tmp_path)


def test_check_finds_two_services_on_one_port(tmp_path: Path) -> None:
    port = free_port()
    out = _check(tmp_path, f"""
[radlogger]
include =
control_port = {port}

[device:syn]
driver = synthetic

[endpoint:poll]
type = longpoll
subscribe = syn
port = {port}
""")
    assert out.returncode == 2
    assert f"[endpoint:poll] listens on tcp port {port}, as [radlogger] control_port" in \
        out.stderr


def test_check_finds_store_paths_that_fail(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("not a directory")
    out = _check(tmp_path, f"""
[radlogger]
include =

[device:syn]
driver = synthetic

[endpoint:a]
type = csv
subscribe = syn
path = {tmp_path}/same.csv

[endpoint:b]
type = csv
subscribe = syn
path = {tmp_path}/same.csv

[endpoint:c]
type = jsonl
subscribe = syn
path = {tmp_path}/afile/sub/x.jsonl
""")
    assert out.returncode == 2
    assert "[endpoint:b] writes" in out.stderr and "two stores cannot share a file" in out.stderr
    assert f"[endpoint:c] cannot write {tmp_path}/afile/sub/x.jsonl" in out.stderr
    assert "is not a directory" in out.stderr


def test_check_finds_a_subscription_loop_and_data_an_endpoint_cannot_take(
        tmp_path: Path) -> None:
    out = _check(tmp_path, """
[radlogger]
include =

[device:m]
driver = mqtt

[endpoint:out]
type = mqtt
subscribe = m
""")
    assert out.returncode == 2 and "subscription loop: m (mqtt)" in out.stderr, out.stderr
    out = _check(tmp_path, """
[radlogger]
include =

[device:syn]
driver = synthetic

[endpoint:spectra]
type = spectrum
subscribe = *
""")
    assert out.returncode == 0
    assert "[endpoint:spectra] takes spectrum*, but subscribes to syn.value" in out.stderr


def test_check_and_graph_default_to_the_packaged_configuration(tmp_path: Path) -> None:
    for command in ("check", "graph"):
        out = run_cli(command, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        assert "wsa1 (wsa4000)" in out.stdout
    # and the graph shows where stores write
    assert "(sqlite: radlogger-data/pico.sqlite)" in out.stdout


def test_widar_replay_paces_like_replay_and_rate_is_deprecated(caplog: Any) -> None:
    from radlogger.devices.replay import ReplayDevice
    from radlogger.devices.widar.replay import WidarReplayDevice

    assert WidarReplayDevice("w", path="x.pcap").settings.speed == \
        ReplayDevice("r", path="x.csv").settings.speed == 1.0
    with caplog.at_level(logging.WARNING):
        old = WidarReplayDevice("w", path="x.pcap", rate="50")
    assert old.settings.rate == 50
    assert "option rate is deprecated: use speed" in caplog.text


class _Flaky(Device):
    kind = "flaky"
    quantities = ("x",)

    def __init__(self, name: str, **kw: Any) -> None:
        super().__init__(name, {"backoff_initial": 0.05}, **kw)
        self.polls = 0

    def describe(self) -> str:
        return "FLAKY,SN123,fw 1.2"

    def poll(self) -> None:
        self.polls += 1
        if self.polls == 2:
            raise ConnectionResetError("cable pulled")
        self.emit("x", self.polls)
        self.wait(0.01)


class _Stuck(Endpoint):
    kind = "stuck"

    def __init__(self, name: str) -> None:
        super().__init__(name, {"subscribe": "flaky"})
        self.release = threading.Event()

    def handle_batch(self, batch: list[Measurement]) -> None:
        self.release.wait(10)


def test_lifecycle_lines(pipeline: Pipeline, caplog: Any) -> None:
    caplog.set_level(logging.INFO)
    stuck = pipeline.add_endpoint(_Stuck("stuck"))
    pipeline.add_device(_Flaky("flaky"))
    pipeline.start()
    wait_for(lambda: "reconnected after" in caplog.text, message="reconnected line")
    assert "device flaky (flaky): connected: FLAKY,SN123,fw 1.2" in caplog.text
    assert "device flaky (flaky): reconnected after" in caplog.text
    stopper = threading.Thread(target=pipeline.stop, args=(10.0,))
    stopper.start()
    try:
        wait_for(lambda: "stopping: waiting for stuck:" in caplog.text, message="waiting line")
    finally:
        stuck.release.set()
        stopper.join(15)
    assert "unsent" in caplog.text
