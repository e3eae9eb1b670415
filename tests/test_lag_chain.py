"""Lag processing: normalize -> lag_fft -> integrate, in a real pipeline."""

from __future__ import annotations

import socket
import time

import numpy as np
import pytest

from conftest import Collector, free_port, wait_for
from radlogger.device import DeviceState
from radlogger.devices.widar.driver import WidarDevice
from radlogger.devices.widar.simulator import WidarSimulator
from radlogger.endpoints.lag.fft import LagFFTEndpoint, lags_to_spectra
from radlogger.endpoints.lag.integrate import IntegrateEndpoint
from radlogger.endpoints.lag.normalize import LagNormalizeEndpoint, normalize
from radlogger.measurement import Measurement
from radlogger.options import OptionError
from radlogger.pipeline import Pipeline


def test_normalize_divides_by_interpolated_counts() -> None:
    n, frames = 16, 2
    true = (np.arange(n) + 1j).astype(np.complex64)
    centre = np.array([[1000, 2000]])
    edge = np.array([[600, 1200]])
    dist = np.abs(np.arange(n) - n // 2) / (n // 2)
    c = np.repeat(centre, n // frames, axis=1)[0]
    e = np.repeat(edge, n // frames, axis=1)[0]
    weight = c + (e - c) * dist
    out, flagged = normalize((true * weight)[None, :].astype(np.complex64), centre, edge)
    np.testing.assert_allclose(out[0], true, rtol=1e-6)
    assert not flagged.any()
    assert weight[n // 2] == 2000  # the centre lag uses the centre count
    assert weight[0] == 600  # the first lag uses the edge count
    assert weight[n // 4] == pytest.approx((1000 + 600) / 2)  # halfway: halfway between


def test_zero_counts_are_flagged_not_divided() -> None:
    lags = np.ones((1, 8), np.complex64) * 5
    out, flagged = normalize(lags, np.array([[0, 10]]), np.array([[10, 10]]))
    assert flagged.tolist() == [[True, False]]
    assert np.isfinite(out).all() and not out[0, :4].any()
    np.testing.assert_allclose(out[0, 4:], 0.5)


def test_a_known_spectral_line_comes_out_at_its_channel(pipeline: Pipeline) -> None:
    lags, lines = 256, [(37, 1.0), (200, 0.5)]
    dev = pipeline.add_device(WidarDevice("widar", port=free_port(socket.SOCK_DGRAM),
                                          lags=lags, lags_per_frame=64, timeout=0.2))
    pipeline.add_endpoint(LagNormalizeEndpoint("norm"), subscribe=["widar.lagset"])
    pipeline.add_endpoint(LagFFTEndpoint("fft"), subscribe=["widar.lagset_norm"])
    pipeline.add_endpoint(IntegrateEndpoint("integ", count=5), subscribe=["widar.spectrum"])
    spectra = pipeline.add_endpoint(Collector("spectra"), subscribe=["widar.spectrum"])
    integrated = pipeline.add_endpoint(Collector("int"), subscribe=["widar.spectrum_int"])
    pipeline.start()
    wait_for(lambda: dev.state is DeviceState.RUNNING)
    sim = WidarSimulator(baselines=1, lags=lags, lags_per_frame=64, lines=lines, noise=0.01,
                         seed=4, start_ns=10**18)
    sim.send(("127.0.0.1", dev.bound_port), rate=20000, frames=10 * sim.frames_per_integration)
    wait_for(lambda: len(spectra.items) == 20 and len(integrated.items) == 4)
    for m in spectra.items + integrated.items:
        amp = np.abs(m.value)
        assert m.value.dtype == np.complex64 and len(amp) == lags
        assert set(np.argsort(amp)[-2:].tolist()) == {37, 200}
        assert amp[37] == pytest.approx(1.0, abs=0.05)
        assert amp[200] == pytest.approx(0.5, abs=0.05)
        assert np.median(amp) < 0.05
        assert m.meta["polarization"] in ("AA", "BB") and m.meta["baseline"] == "1-2"
    for m in integrated.items:
        assert m.meta["integrated"] == 5 and m.meta["closed_by"] == "count"
        assert m.topic == "widar.spectrum_int"
    assert pipeline.stop(5.0) and pipeline.balanced()


def test_channels_and_windows() -> None:
    n = 64
    spec = np.zeros(n, complex)
    spec[20] = 1
    lags = np.fft.fftshift(np.fft.ifft(np.fft.ifftshift(spec)))[None, :]
    assert np.argmax(np.abs(lags_to_spectra(lags)[0])) == 20
    assert np.argmax(np.abs(lags_to_spectra(lags, window="hann")[0])) == 20
    coarse = lags_to_spectra(lags, channels=16)[0]
    assert coarse.shape == (16,) and np.argmax(np.abs(coarse)) == 5


def _lagset(source: str, pol: str, t: int, value: float, n: int = 8) -> Measurement:
    meta = {"station_x": 1, "station_y": 2, "baseband": 0, "subband": 0, "polarization": pol,
            "phase_bin": 0, "complete": True, "dv_centre": np.full(2, 100, np.uint32),
            "dv_edge": np.full(2, 100, np.uint32)}
    return Measurement(source, f"{source}.spectrum", np.full(n, value, np.complex64),
                       device_time=t, meta=meta)


def test_integrate_by_count_and_by_time_per_product(pipeline: Pipeline) -> None:
    pipeline.add_endpoint(IntegrateEndpoint("k", count=3, output="{quantity}_k"),
                          subscribe=["w.spectrum", "w.control"])
    pipeline.add_endpoint(IntegrateEndpoint("t", seconds=0.02, output="{quantity}_t"),
                          subscribe=["w.spectrum"])
    by_k = pipeline.add_endpoint(Collector("ck"), subscribe=["w.spectrum_k"])
    by_t = pipeline.add_endpoint(Collector("ct"), subscribe=["w.spectrum_t"])
    pipeline.start()
    out = pipeline.outlet("w")
    for i in range(7):  # 10 ms apart, two products interleaved
        for pol in ("AA", "BB"):
            out.push(_lagset("w", pol, 10**18 + i * 10_000_000, i + (100 if pol == "BB" else 0)))
    wait_for(lambda: len(by_k.items) == 4 and len(by_t.items) == 6)
    k = {(m.meta["polarization"], m.device_time): m for m in by_k.items}
    assert k[("AA", 10**18)].value[0] == pytest.approx(1.0)  # mean of 0, 1, 2
    assert k[("BB", 10**18 + 30_000_000)].value[0] == pytest.approx(104.0)  # 103..105
    assert all(m.meta["integrated"] == 3 for m in by_k.items)
    t = sorted((m.meta["polarization"], m.device_time, m.meta["integrated"], m.value[0].real)
               for m in by_t.items)
    assert t[:3] == [("AA", 10**18, 2, 0.5), ("AA", 10**18 + 20_000_000, 2, 2.5),
                     ("AA", 10**18 + 40_000_000, 2, 4.5)]
    integ = pipeline.endpoints["k"]
    assert isinstance(integ, IntegrateEndpoint) and integ.partial() == 2
    out.push(Measurement("w", "w.control", "flush"))
    wait_for(lambda: len(by_k.items) == 6)
    assert sorted(m.meta["closed_by"] for m in by_k.items[4:]) == ["flush", "flush"]
    assert pipeline.stop(5.0) and pipeline.balanced()


def test_lazy_when_nobody_subscribes(pipeline: Pipeline) -> None:
    norm = pipeline.add_endpoint(LagNormalizeEndpoint("norm"), subscribe=["w.lagset"])
    pipeline.start()
    out = pipeline.outlet("w")
    m = _lagset("w", "AA", 1, 1.0)
    m.topic = "w.lagset"
    out.push(m)
    wait_for(lambda: norm.stats.handled == 1)
    assert isinstance(norm, LagNormalizeEndpoint) and norm.skipped == 1
    assert pipeline.producers.get("norm") is None or pipeline.producers["norm"].produced == 0
    assert pipeline.stop(5.0)


def test_laziness_is_transitive_through_the_chain(pipeline: Pipeline) -> None:
    """lag_normalize does no work while lag_fft, its only consumer, has no consumer itself."""
    norm = pipeline.add_endpoint(LagNormalizeEndpoint("norm"), subscribe=["w.lagset"])
    fft = pipeline.add_endpoint(LagFFTEndpoint("fft"), subscribe=["w.lagset_norm"])
    pipeline.start()
    out = pipeline.outlet("w")

    def push(n: int) -> None:
        for i in range(n):
            m = _lagset("w", "AA", i, 1.0)
            m.topic = "w.lagset"
            out.push(m)

    push(10)
    wait_for(lambda: norm.stats.handled == 10, message="normalize took 10")
    assert pipeline.wait_quiescent(time.monotonic() + 5)
    assert isinstance(norm, LagNormalizeEndpoint) and norm.skipped == 10
    assert pipeline.producers.get("norm") is None or pipeline.producers["norm"].produced == 0
    assert fft.stats.received == 0
    # lag_fft now has a consumer: both stages work again
    sink = pipeline.add_endpoint(Collector("late"), subscribe=["w.spectrum"])
    push(5)
    wait_for(lambda: len(sink.items) == 5, message="5 spectra")
    assert isinstance(fft, LagFFTEndpoint) and fft.skipped == 0 and norm.skipped == 10
    assert pipeline.producers["norm"].produced == 5 and fft.stats.handled == 5
    assert pipeline.stop(5.0) and pipeline.balanced()


def test_bad_lag_sets_are_counted_and_the_rest_flows(pipeline: Pipeline) -> None:
    pipeline.add_endpoint(LagNormalizeEndpoint("norm", on_error="continue"),
                          subscribe=["w.lagset"])
    got = pipeline.add_endpoint(Collector("got"), subscribe=["w.lagset_norm"])
    pipeline.start()
    out = pipeline.outlet("w")
    good = _lagset("w", "AA", 1, 2.0)
    good.topic = "w.lagset"
    out.push(Measurement("w", "w.lagset", np.ones(8, np.complex64)))  # no counts
    out.push(Measurement("w", "w.lagset", "not an array"))
    out.push(good)
    wait_for(lambda: len(got.items) == 1)
    np.testing.assert_allclose(got.items[0].value, 0.02)
    stats = pipeline.endpoint_stats("norm")
    assert stats.errors == 2 and stats.by_reason["endpoint_failed"] == 2
    assert pipeline.stop(5.0) and pipeline.balanced()


@pytest.mark.parametrize(("cls", "kw", "key"), [
    (IntegrateEndpoint, {}, "count"),
    (LagFFTEndpoint, {"channels": 3}, "channels"),
    (LagNormalizeEndpoint, {"output": "a.b"}, "output"),
    (LagFFTEndpoint, {"output": "{nope}"}, "output"),
])
def test_option_errors_name_the_key(cls: type, kw: dict, key: str) -> None:
    with pytest.raises(OptionError) as exc:
        cls("x", **kw)
    assert exc.value.key == key and "\n" not in str(exc.value)


def test_lags_to_spectra_matches_the_double_precision_transform() -> None:
    """The single-precision FFT (scipy.fft where installed) agrees with numpy's float64 one."""
    rng = np.random.default_rng(7)
    lags = (rng.standard_normal((5, 1024)) + 1j * rng.standard_normal((5, 1024))).astype(
        np.complex64)
    before = lags.copy()
    want = np.fft.fftshift(np.fft.fft(np.fft.ifftshift(lags.astype(np.complex128), axes=1),
                                      axis=1), axes=1)
    got = lags_to_spectra(lags)
    assert got.dtype == np.complex64 and got.shape == (5, 1024)
    assert np.allclose(got, want, rtol=0, atol=1e-4 * np.abs(want).max())
    assert np.array_equal(lags, before)  # the input is not overwritten
