"""The example configurations in etc/: they validate, and the simulated one runs the chain."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import wait_for
from radlogger.config import known_topics, load_config
from radlogger.devices.wsa4000.simulator import WSA4000Simulator
from radlogger.pipeline import Pipeline

ETC = Path(__file__).resolve().parent.parent / "etc"


@pytest.mark.parametrize("name", ["wsa4000.ini", "wsa4000-sim.ini"])
def test_example_configurations_validate(name: str) -> None:
    cfg = load_config(ETC / name, env={})
    assert not cfg.warnings  # among them: a subscription nothing could feed
    assert cfg.devices["wsa1"].plugin == "wsa4000"
    assert sorted(e.plugin for e in cfg.endpoints.values()) == ["calibrate", "fft", "spectrum"]
    # the endpoints' `produces` templates resolve the chain for the graph
    assert {"wsa1.iq", "wsa1.spectrum", "wsa1.spectrum_dbm"} <= set(known_topics(cfg.graph))


def test_simulated_configuration_runs_iq_to_stored_spectra(tmp_path: Path) -> None:
    with WSA4000Simulator(control_port=0, data_port=0, tones=["5e6:-40dBm"],
                          ring_samples=8192) as sim:
        text = (ETC / "wsa4000-sim.ini").read_text()
        text = text.replace("37001", str(sim.control_port)).replace("37000", str(sim.data_port))
        text = text.replace("/tmp/radlogger-wsa", str(tmp_path))
        (tmp_path / "wsa.ini").write_text(text)
        cfg = load_config(tmp_path / "wsa.ini", env={})
        p = Pipeline()
        for spec in cfg.devices.values():
            p.add_device(spec.fresh())
        for spec in cfg.endpoints.values():
            p.add_endpoint(spec.fresh())  # subscriptions come from the INI
        sink = p.endpoints["spectra"]
        p.start()
        try:
            wait_for(lambda: sink.stats.handled >= 16, 10, message="16 stored spectra")
        finally:
            assert p.stop(5.0)
    freqs, dbm, meta = sink.latest("wsa1.spectrum_dbm")  # type: ignore[attr-defined]
    peak = int(np.argmax(dbm))
    assert abs(freqs[peak] - (2.4e9 + 5e6)) <= 125e6 / 1024 / 2  # the nearest bin
    assert dbm[peak] == pytest.approx(-40.0, abs=1.5)  # off bin centre: Hann scalloping
    stored = np.load(tmp_path / "wsa1.spectrum_dbm_N1024.npy")
    assert len(stored) == sink.stats.handled and stored["rf_freq"][0] == 2.4e9
    assert (tmp_path / "wsa1.spectrum_dbm.png").read_bytes()[:4] == b"\x89PNG"
    assert p.balanced()
