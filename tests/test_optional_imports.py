"""Optional packages are imported where they are used: a daemon without the ``web`` extra (no
aiohttp) or without the ``mqtt`` extra (no paho) still loads its configuration, lists its plugins
and runs the plugins that do not need the missing package (the ``remote`` device is a plain
HTTP client), and the store reader reads a CSV recording without h5py or matplotlib.  Each
check runs in a fresh interpreter whose import system refuses the package, as if it were not
installed."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

BLOCKER = """
import importlib.abc, sys
BLOCKED = {blocked!r}
class _NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, _NotInstalled())
for _name in list(sys.modules):
    assert _name.split(".")[0] not in BLOCKED, _name
"""

CONFIG = """
[radlogger]
[device:up]
driver = remote
url = http://127.0.0.1:9/
[device:old]
driver = replay
path = {store}
[endpoint:csv]
type = csv
path = {out}
subscribe = up, old
"""


def _run(blocked: str, code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    script = BLOCKER.format(blocked=(blocked,)) + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    store = tmp_path / "old.csv"
    from radlogger.endpoints.storage.csv import CSVEndpoint
    from radlogger.measurement import Measurement
    CSVEndpoint("rec", path=str(store)).write_all(
        [Measurement("old", "old.t", float(i), 1_000 + i) for i in range(3)])
    path = tmp_path / "radlogger.ini"
    path.write_text(CONFIG.format(store=store, out=tmp_path / "out.csv"))
    return path


@pytest.mark.parametrize("blocked", ["aiohttp", "paho", "h5py", "matplotlib"])
def test_remote_device_and_replay_work_without(blocked: str, tmp_path: Path,
                                               config_file: Path) -> None:
    result = _run(blocked, f"""
        from radlogger.devices.remote import RemoteDevice
        from radlogger.devices.replay import ReplayDevice
        from radlogger.store import reader
        device = RemoteDevice("up", url="http://127.0.0.1:9/")
        assert device.client is not None
        assert [m.value for m in reader.read({str(tmp_path / 'old.csv')!r})] == [0.0, 1.0, 2.0]
        ReplayDevice("old", path={str(tmp_path / 'old.csv')!r})
        # the core modules around the missing package load; only using it needs it
        from radlogger.mqtt import CONNECTION_OPTIONS, from_mqtt_topic, to_mqtt_topic
        from radlogger.web import WebServer, resolve_token
        assert from_mqtt_topic("p", to_mqtt_topic("p", "wsa1.iq")) == "wsa1.iq"
        assert CONNECTION_OPTIONS and resolve_token("t", None, "x") == "t" and WebServer
        assert {blocked!r} not in __import__("sys").modules
        print("ok")
    """, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@pytest.mark.parametrize("blocked", ["aiohttp", "paho"])
def test_config_loads_and_plugins_list_without(blocked: str, tmp_path: Path,
                                               config_file: Path) -> None:
    result = _run(blocked, f"""
        import sys
        from radlogger.config import load_config
        config = load_config({str(config_file)!r})
        assert sorted(config.devices) == ["old", "up"], config.devices
        from radlogger.cli import main
        sys.argv = ["radloggerd", "plugins"]
        try:
            main()
        except SystemExit as exc:
            assert not exc.code, exc.code
        sys.argv = ["radloggerd", "check", "-c", {str(config_file)!r}]
        try:
            main()
        except SystemExit as exc:
            assert not exc.code, exc.code
        assert {blocked!r} not in sys.modules
    """, tmp_path)
    assert result.returncode == 0, result.stderr
    listing = result.stdout
    assert "remote: long-polls another radloggerd" in listing
    assert "replay: plays a recorded store" in listing
    assert "2 devices, 1 endpoints: ok" in listing
    # what does need the missing package says so, in one line, instead of breaking the list
    needs = {"aiohttp": "longpoll", "paho": "mqtt"}[blocked]
    line = next(x for x in listing.splitlines() if x.strip().startswith(f"{needs}:"))
    assert "unavailable" in line and blocked in line
