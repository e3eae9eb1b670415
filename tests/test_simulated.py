"""``simulate = yes``: drivers that run their own simulator, and the packaged default config.

The default configuration (radlogger/default.ini) runs the three simulated instruments through
their chains into the log and files; here it runs as a real ``radloggerd`` process in a
temporary directory, and its files are read back with their standard tools (sqlite3, h5py,
numpy).  Per driver, ``simulate = yes`` in a Pipeline: data through the real transport and
protocol, one simulator per device across reconnects, and nothing left behind at stop
(threads, listening sockets, ptys).
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest
from daemon_helpers import read_stats, run_cli

from conftest import Collector, wait_for
from radlogger.config import default_config_path, load_config
from radlogger.device import DeviceState
from radlogger.devices.pico.driver import PicoDevice
from radlogger.devices.pico.simboard import expected_pulses
from radlogger.devices.pico.sources import sim_bitstream
from radlogger.devices.widar.driver import WidarDevice
from radlogger.devices.wsa4000.driver import WSA4000Device
from radlogger.options import OptionError
from radlogger.pipeline import Pipeline

ROOT = Path(__file__).resolve().parent.parent
SIM_THREADS = ("wsa-sim", "pico-sim", "widar-simulator")
FAST = {"backoff_initial": 0.02, "backoff_max": 0.2, "backoff_jitter": 0.0}


def sim_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(SIM_THREADS)]


def pty_fds() -> set[str]:
    """Open file descriptors of this process on a pseudo-terminal (master or slave)."""
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed meanwhile (the listing's own descriptor)
        if target == "/dev/ptmx" or target.startswith("/dev/pts/"):
            out.add(f"{fd}:{target}")
    return out


@pytest.fixture
def no_simulators_left() -> object:
    """Fails a test that leaves a simulator thread or a pty open after it stopped."""
    assert not sim_threads(), "a simulator was running before the test"
    ptys = pty_fds()
    yield None
    wait_for(lambda: not sim_threads(), 5, message=f"simulator threads ended: {sim_threads()}")
    assert pty_fds() == ptys


# ------------------------------------------------------------------------------ the default
def test_default_configuration_runs_every_simulated_chain(tmp_path: Path) -> None:
    stats_file = tmp_path / "stats.json"
    result = run_cli("run", "--duration", "3", "--stats-json", str(stats_file), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for topic in ("wsa1.spectrum_dbm", "widar.spectrum_int", "pico1.pulses"):
        assert f"last {topic} = " in result.stderr  # the log endpoint shows each chain
    assert "Traceback" not in result.stderr
    stats = read_stats(stats_file)
    assert stats["drained"] and stats["balanced"]
    producers, endpoints = stats["producers"], stats["endpoints"]
    for name in ("wsa1", "pico1", "widar"):
        assert producers[name]["produced"] > 0, producers[name]
    # the final endpoint of every chain handled data: spectra, integration, stores, log
    for name in ("spectra", "integrate", "widar_h5", "pico_db", "log"):
        assert endpoints[name]["handled"] > 0, endpoints[name]
    assert producers["integrate"]["published"] == endpoints["widar_h5"]["handled"]
    assert all(p["dropped"] == 0 for p in producers.values()), producers
    assert all(e["dropped"] == 0 for e in endpoints.values()), endpoints

    data = tmp_path / "radlogger-data"
    # pico: the sqlite store, read with sqlite3; every count is the simulator's known one
    with sqlite3.connect(data / "pico.sqlite") as db:
        rows = db.execute("SELECT topic, value, meta FROM measurement_view "
                          "ORDER BY id").fetchall()
    pulses = [(v, json.loads(meta)) for topic, v, meta in rows if topic == "pico1.pulses"]
    assert len(pulses) >= 1 and len(rows) == endpoints["pico_db"]["handled"]
    for value, meta in pulses:
        index = int(meta["evaluation"].removeprefix("sim").partition("#")[0])
        assert value == expected_pulses(sim_bitstream(index))
    # widar: integrated spectra in HDF5, read with h5py: the simulator's lines come back
    with h5py.File(data / "widar.h5", "r", swmr=True) as f:
        spectra = np.concatenate([seg["value"][()] for seg in f["widar.spectrum_int"].values()])
    assert len(spectra) == endpoints["widar_h5"]["handled"]
    power = np.abs(spectra).mean(axis=0)
    # lines at lags/4 (amplitude 1) and 5*lags/8 (0.5), widened by the hann lag window
    assert int(np.argmax(power)) == 64
    assert int(np.argmax(power[128:])) + 128 == 160 and power[160] > 20 * np.median(power)
    # wsa1: every calibrated spectrum in the .npy, the +5 MHz -40 dBm tone at its bin
    records = np.load(data / "spectra" / "wsa1.spectrum_dbm_N256.npy")
    assert len(records) == endpoints["spectra"]["handled"]
    dbm = records["dbm"][-1]
    freqs = records["rf_freq"][-1] + (np.arange(256) - 128) * records["span"][-1] / 256
    peak = int(np.argmax(dbm))
    assert abs(freqs[peak] - (2.4e9 + 5e6)) <= records["span"][-1] / 256
    assert dbm[peak] == pytest.approx(-40.0, abs=2.0)
    assert (data / "spectra" / "wsa1.spectrum_dbm.png").read_bytes()[:4] == b"\x89PNG"


def test_etc_copy_matches_the_packaged_default() -> None:
    packaged = load_config(default_config_path(), env={})
    copy = load_config(ROOT / "etc" / "simulated.ini", env={})
    assert copy.warnings == [] and copy.daemon == packaged.daemon
    for role in ("devices", "endpoints"):
        ours, theirs = getattr(packaged, role), getattr(copy, role)
        assert set(ours) == set(theirs)
        assert all(ours[n].same_as(theirs[n]) for n in ours), role


def test_loading_a_configuration_starts_no_simulator(no_simulators_left: object) -> None:
    config = load_config(None, env={})  # constructs every device, as `radloggerd check` does
    for spec in config.devices.values():
        assert spec.instance.sim is not None and spec.instance.sim.current is None
    assert not sim_threads()


# ------------------------------------------------------------------------------ WSA4000
def test_wsa4000_simulated_through_scpi_and_vrt(no_simulators_left: object) -> None:
    p = Pipeline()
    dev = p.add_device(WSA4000Device("wsa1", simulate=True, spp=256, rate=50, freq=1e9,
                                     **FAST))
    col = p.add_endpoint(Collector(), ["wsa1"])
    p.start()
    try:
        wait_for(lambda: len(col.items) >= 3, message="three I/Q packets")
        sim = dev.sim.current
        assert sim.captures >= 3 and dev.idn.split(",")[1].startswith("WSA4")
        m = col.items[0]
        assert m.value.dtype == np.complex64 and m.value.shape == (256,)
        assert m.meta["rf_freq"] == 1e9  # the context the simulator sent after the settings
        # a power cut: the same simulator comes back on its ports, the driver reconnects
        sim.stop()
        sim.start()
        seen = len(col.items)
        wait_for(lambda: dev.connects >= 2 and len(col.items) > seen + 2,
                 message="data again after the reconnect")
        assert dev.sim.current is sim and dev.sim.starts == 1
        ports = (sim.control_port, sim.data_port)
    finally:
        assert p.stop(5.0)
    assert dev.sim.current is None
    for port in ports:  # nothing listens any more
        with socket.socket() as s, pytest.raises(ConnectionRefusedError):
            s.connect(("127.0.0.1", port))
    assert p.balanced()


def test_wsa4000_options_without_host() -> None:
    with pytest.raises(OptionError) as err:
        WSA4000Device("wsa1")
    assert err.value.key == "host" and "simulate = yes" in str(err.value)
    with pytest.raises(OptionError) as err:
        WSA4000Device("wsa1", host="10.0.0.1", simulate="yes")
    assert err.value.key == "host" and "exclude each other" in str(err.value)
    with pytest.raises(OptionError) as err:
        WSA4000Device("wsa1", simulate=True, sim_tones="5e6:7")
    assert err.value.key == "sim_tones" and "\n" not in str(err.value)


# ------------------------------------------------------------------------------ pico
def test_pico_simulated_board_evaluates_generated_bitstreams(no_simulators_left: object) -> None:
    p = Pipeline()
    dev = p.add_device(PicoDevice("pico1", simulate=True, sim_bitstreams=3, repeat=1,
                                  count_window=0.02, **FAST))
    col = p.add_endpoint(Collector(), ["pico1"])
    assert dev.finite
    p.start()
    try:
        wait_for(lambda: dev.state is DeviceState.FINISHED, message="three evaluations")
        board = dev.sim.current
        assert board is not None  # finished, not stopped: the board stays until stop
        assert dev.board_serial == board.serial and board.evaluations == 3
    finally:
        assert p.stop(5.0)
    assert dev.sim.current is None
    got = {m.meta["evaluation"]: m.value for m in col.items}
    assert got == {f"sim{i}#0": expected_pulses(sim_bitstream(i)) for i in range(3)}
    assert all(m.meta["port"] == board.pts for m in col.items)
    assert p.balanced()


def test_pico_reconnect_reuses_the_simulated_board(no_simulators_left: object) -> None:
    p = Pipeline()
    dev = p.add_device(PicoDevice("pico1", simulate=True, count_window=0.02, **FAST))
    col = p.add_endpoint(Collector(), ["pico1.pulses"])
    p.start()
    try:
        wait_for(lambda: len(col.items) >= 2, message="two evaluations")
        board = dev.sim.current
        board.disconnect()  # the cable is pulled ...
        wait_for(lambda: dev.state is not DeviceState.RUNNING, message="lost")
        board.reconnect()  # ... and plugged back: a new pty
        seen = len(col.items)
        wait_for(lambda: len(col.items) >= seen + 2, message="evaluations after the reconnect")
        assert dev.sim.current is board and dev.sim.starts == 1
        assert board.disconnects == 1 and board.opens == 2 and dev.port_path == board.pts
    finally:
        assert p.stop(5.0)
    assert p.balanced()


@pytest.mark.parametrize("kw, key", [
    ({"simulate": True, "port": "/dev/ttyACM0"}, "port"),
    ({"simulate": True, "serial": "E6614C311B8E2F2A"}, "serial"),
    ({}, "port"),
])
def test_pico_simulate_excludes_port_and_serial(kw: dict[str, object], key: str) -> None:
    with pytest.raises(OptionError) as err:
        PicoDevice("pico1", **kw)
    assert err.value.key == key and "simulate = yes" in str(err.value)


# ------------------------------------------------------------------------------ WIDAR
def test_widar_simulated_lag_frames_over_udp(no_simulators_left: object) -> None:
    p = Pipeline()
    dev = p.add_device(WidarDevice("widar", simulate=True, sim_rate=2000, sim_baselines=2,
                                   polarizations="AA, BB", lags=256, lags_per_frame=64,
                                   rcvbuf=0, **FAST))
    col = p.add_endpoint(Collector(), ["widar"])
    p.start()
    try:
        wait_for(lambda: len(col.items) >= 12, message="three integrations")
        port = dev.bound_port
        sender = dev.sim.current
        assert port and sender.is_alive()
        # the socket fails under the driver: it reconnects on the port the simulator sends to
        dev.sock.close()
        wait_for(lambda: dev.outlet.stats.errors >= 1, message="the loss counted")
        seen = len(col.items)
        wait_for(lambda: len(col.items) >= seen + 12, message="lag sets after the reconnect")
        assert dev.bound_port == port and dev.sim.current is sender and dev.sim.starts == 1
    finally:
        assert p.stop(5.0)
    assert dev.sim.current is None
    products = {(m.meta["station_x"], m.meta["station_y"], m.meta["polarization"])
                for m in col.items}
    assert products == {(1, 2, "AA"), (1, 2, "BB"), (1, 3, "AA"), (1, 3, "BB")}
    assert all(m.value.shape == (256,) for m in col.items)
    assert not dev.bad_frames
    # device time follows the wall clock (integrate's `seconds` means seconds)
    times = sorted({m.device_time for m in col.items})
    assert 0 < (times[-1] - times[0]) / 1e9 < 10
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", port))  # the port was released
    assert p.balanced()


def test_widar_bad_simulated_line_is_an_option_error() -> None:
    with pytest.raises(OptionError) as err:
        WidarDevice("widar", simulate=True, lags=256, lags_per_frame=64, sim_lines="300:1")
    assert err.value.key == "sim_lines" and "\n" not in str(err.value)
