"""Every file radloggerd writes is readable by radloggerd: the WSA4000 chain's output (the
spectrum sink's .npy/.npz record files) goes through export, plot and the replay device."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import Collector, wait_for
from radlogger.device import DeviceState
from radlogger.devices.replay import ReplayDevice
from radlogger.devices.wsa4000.driver import WSA4000Device
from radlogger.devices.wsa4000.simulator import WSA4000Simulator
from radlogger.endpoints.spectrum.calibrate import CalibrateEndpoint
from radlogger.endpoints.spectrum.fft import FFTEndpoint
from radlogger.endpoints.spectrum.sink import SpectrumSink
from radlogger.endpoints.storage.cli import export, plot
from radlogger.measurement import Measurement
from radlogger.pipeline import Pipeline
from radlogger.store import reader

SPP = 256


def record_chain(directory: Path, fmt: str, n: int = 6) -> list[Measurement]:
    """Simulator -> wsa4000 -> fft -> calibrate -> spectrum sink; returns what the sink got."""
    with WSA4000Simulator(control_port=0, data_port=0, tones=[f"{10 * 125e6 / SPP}:0.5"],
                          noise=1e-4, ring_samples=4 * SPP) as sim:
        p = Pipeline()
        p.add_device(WSA4000Device("wsa1", host="127.0.0.1", control_port=sim.control_port,
                                   data_port=sim.data_port, rate=50, timeout=2.0, spp=SPP,
                                   ppb=2))
        p.add_endpoint(FFTEndpoint("fft", subscribe=["wsa1.iq"]))
        p.add_endpoint(CalibrateEndpoint("cal", subscribe=["wsa1.spectrum"]))
        sink = p.add_endpoint(SpectrumSink("spectra", directory=str(directory), format=fmt,
                                           flush_rows=4, render_on_stop=False),
                              subscribe=["wsa1.spectrum_dbm"])
        seen = p.add_endpoint(Collector("seen"), subscribe=["wsa1.spectrum_dbm"])
        p.start()
        try:
            wait_for(lambda: len(seen.items) >= n, 10, message="calibrated spectra")
        finally:
            assert p.stop(5.0)
    assert p.balanced()
    got = seen.snapshot()
    assert sink.stored == sink.stats.handled == len(got)
    return got


def same_spectra(recorded: list[Measurement], back: list[Measurement]) -> None:
    assert len(back) == len(recorded)
    for a, b in zip(recorded, back, strict=True):
        assert b.topic == a.topic == "wsa1.spectrum_dbm" and b.t_ns == a.t_ns
        assert b.unit == "dBm" and b.device_time == a.device_time
        np.testing.assert_array_equal(b.value, a.value)
        assert b.meta == {"rf_freq": a.meta["rf_freq"], "bandwidth": a.meta["bandwidth"]}


@pytest.mark.parametrize("fmt", ["npy", "npz"])
def test_sink_output_reads_exports_and_plots(fmt: str, tmp_path: Path) -> None:
    recorded = record_chain(tmp_path / "spectra", fmt)
    same_spectra(recorded, list(reader.read(tmp_path / "spectra")))  # the sink's directory
    assert reader.topics(tmp_path / "spectra") == ["wsa1.spectrum_dbm"]
    runner = CliRunner()
    out = tmp_path / "spectra.h5"
    result = runner.invoke(export, [str(tmp_path / "spectra"), str(out)])
    assert result.exit_code == 0, result.output
    assert f"exported {len(recorded)} measurements" in result.output
    same_spectra(recorded, list(reader.read(out)))
    result = runner.invoke(plot, [str(tmp_path / "spectra" / f"*.{fmt}"), "-o",
                                  str(tmp_path / "png")])
    assert result.exit_code == 0, result.output
    png = tmp_path / "png" / "wsa1.spectrum_dbm.png"
    assert png.read_bytes().startswith(b"\x89PNG")


def test_sink_output_replays(tmp_path: Path) -> None:
    recorded = record_chain(tmp_path / "spectra", "npy")
    [npy] = (tmp_path / "spectra").glob("*.npy")
    p = Pipeline()
    device = p.add_device(ReplayDevice("replay", path=str(npy), speed=0, prefix="again"))
    seen = p.add_endpoint(Collector("seen"), subscribe=["again"])
    resink = p.add_endpoint(SpectrumSink("resink", render_on_stop=False),
                            subscribe=["again.wsa1.spectrum_dbm"])
    p.start()
    try:
        wait_for(lambda: device.state is DeviceState.FINISHED, message="replay ended")
        wait_for(lambda: len(seen.items) == len(recorded), message="replayed all")
    finally:
        assert p.stop(5.0)
    assert p.balanced()
    back = seen.snapshot()
    assert [m.topic for m in back] == ["again.wsa1.spectrum_dbm"] * len(recorded)
    for a, b in zip(recorded, back, strict=True):
        np.testing.assert_array_equal(b.value, a.value)
        assert b.t_ns == a.t_ns and b.meta["rf_freq"] == a.meta["rf_freq"]
    # the sink rebuilds the same frequency axis from the replayed meta
    freqs, latest, _ = resink.latest("again.wsa1.spectrum_dbm")  # type: ignore[misc]
    assert freqs[SPP // 2] == recorded[-1].meta["rf_freq"]
    np.testing.assert_array_equal(latest, recorded[-1].value)
