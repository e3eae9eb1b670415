"""FFT -> calibrate: the math, batching, laziness, and the chain against the WSA simulator."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from conftest import Collector, wait_for
from radlogger.devices.wsa4000.driver import WSA4000Device
from radlogger.devices.wsa4000.simulator import WSA4000Simulator
from radlogger.endpoints.spectrum.calibrate import (
    REFLEVEL_ERROR,
    CalibrateEndpoint,
    flip_spectrum,
    repair_dc,
)
from radlogger.endpoints.spectrum.fft import FFTEndpoint, iq_correct, power_db
from radlogger.measurement import Measurement
from radlogger.pipeline import Pipeline

FS = 125e6


def tone(n: int, k: float, amplitude: float, phase: float = 0.3) -> np.ndarray:
    return (amplitude * np.exp(1j * (2 * np.pi * k * np.arange(n) / n + phase))).astype(
        np.complex64)


# ------------------------------------------------------------------ the math
@pytest.mark.parametrize("n,k,a", [(128, 5, 0.5), (1024, -100, 0.1), (4096, 1000, 0.9)])
def test_tone_on_a_bin_reads_hann_coherent_gain(n: int, k: int, a: float) -> None:
    db = power_db(tone(n, k, a)[None, :])[0]
    assert int(np.argmax(db)) == n // 2 + k
    assert db[n // 2 + k] == pytest.approx(20 * np.log10(0.5 * a), abs=0.01)


def test_dc_offset_is_removed() -> None:
    x = tone(256, 10, 0.25) + np.complex64(0.3 + 0.2j)
    with_dc = power_db(x[None, :], dc_removal=False)[0]
    without = power_db(x[None, :])[0]
    assert with_dc[128] > -15 and without[128] < -100


def test_iq_correction_removes_the_image_of_an_imbalanced_tone() -> None:
    n, k = 1024, 37
    t = np.arange(n)
    i = 0.5 * np.cos(2 * np.pi * k * t / n)
    q = 0.5 * 1.1 * np.sin(2 * np.pi * k * t / n + 0.05)  # 10 % gain and 3 degree phase error
    x = (i + 1j * q).astype(np.complex64)[None, :]
    raw = power_db(x)[0]
    fixed = power_db(x, correct=True)[0]
    image = n // 2 - k
    assert raw[image] > -40  # the imbalance makes a strong mirror image
    assert fixed[image] < raw[image] - 40
    assert fixed[n // 2 + k] == pytest.approx(raw[n // 2 + k], abs=0.5)
    np.testing.assert_array_equal(iq_correct(x), iq_correct(x))  # deterministic


def test_flip_maps_bin_k_to_minus_k_and_is_an_involution() -> None:
    n = 64
    x = np.arange(n, dtype=np.float32)[None, :]
    flipped = flip_spectrum(x)[0]
    for i in range(n):
        assert flipped[i] == x[0, (n - i) % n]
    np.testing.assert_array_equal(flip_spectrum(flip_spectrum(x)), x)


def test_repair_dc_uses_the_neighbours() -> None:
    x = np.array([[1, 2, 3, 50, 5, 6], [0, 0, 10, 99, 20, 0]], dtype=np.float32)
    repair_dc(x)  # the centre of 6 fftshifted bins (DC) is index 3
    np.testing.assert_array_equal(x, [[1, 2, 3, 4, 5, 6], [0, 0, 10, 15, 20, 0]])


# ------------------------------------------------------------------ endpoints in a pipeline
def push_iq(p: Pipeline, topic: str, values: list[np.ndarray], meta: dict | None = None
            ) -> None:
    out = p.outlet(topic.split(".")[0])
    for v in values:
        out.push(Measurement(topic.split(".")[0], topic, v, meta=dict(meta or {})))


@pytest.mark.parametrize("batch", [True, False])
def test_waiting_packets_are_transformed_as_one_array(batch: bool) -> None:
    p = Pipeline()
    fft = p.add_endpoint(FFTEndpoint("fft", batch=batch), subscribe=["src.iq"])
    sink = p.add_endpoint(Collector("out"), subscribe=["src.spectrum"])
    rng = np.random.default_rng(0)
    values = [tone(256, k, 0.5) + (rng.normal(size=256) * 1e-3).astype(np.complex64)
              for k in range(1, 11)]  # not k = 0: DC removal takes a tone at DC away
    push_iq(p, "src.iq", [v * 8192 for v in values])  # queued before start: one batch
    p.start()
    try:
        wait_for(lambda: len(sink.items) == 10, 10, message="10 spectra")
    finally:
        assert p.stop(5.0)
    assert fft.spectra == 10
    assert fft.fft_calls == (1 if batch else 10)
    for k, m in enumerate(sink.items, start=1):
        assert m.topic == "src.spectrum" and m.unit == "dBFS" and m.value.dtype == np.float32
        assert int(np.argmax(m.value)) == 128 + k
        np.testing.assert_allclose(m.value, power_db(values[k - 1][None, :])[0], atol=1e-3)
    assert p.balanced()


def test_int16_pairs_are_accepted_and_bad_values_are_counted() -> None:
    p = Pipeline()
    fft = p.add_endpoint(FFTEndpoint("fft"), subscribe=["src.iq"])
    sink = p.add_endpoint(Collector("out"), subscribe=["src.spectrum"])
    z = tone(128, 3, 0.5) * 8192
    pairs = np.stack([np.rint(z.real), np.rint(z.imag)], axis=-1).astype(np.int16)
    push_iq(p, "src.iq", [pairs, np.zeros(3, dtype=np.float64), "nonsense"])  # type: ignore
    p.start()
    try:
        wait_for(lambda: fft.stats.handled + fft.stats.dropped == 3, 10, message="3 handled")
    finally:
        assert p.stop(5.0)
    assert len(sink.items) == 1 and int(np.argmax(sink.items[0].value)) == 64 + 3
    assert fft.stats.errors == 2 and fft.stats.dropped == 2
    assert p.balanced()


def test_lazy_fft_and_calibrate_do_no_work_without_downstream() -> None:
    p = Pipeline()
    fft = p.add_endpoint(FFTEndpoint("fft"), subscribe=["src.iq"])
    cal = p.add_endpoint(CalibrateEndpoint("cal"), subscribe=["src.spectrum"])
    p.start()
    try:
        push_iq(p, "src.iq", [tone(128, 1, 0.5) * 8192] * 10, {"reflevel": -10.0})
        wait_for(lambda: fft.stats.handled == 10, 10, message="fft took 10")
        assert p.wait_quiescent(time.monotonic() + 5)
        assert fft.fft_calls == 0 and fft.spectra == 0 and fft.skipped == 10
        assert p.producers["fft"].produced == 0 and cal.stats.received == 0
        # fft now has a consumer (calibrate) but calibrate has none: only fft works
        sink = p.add_endpoint(Collector("late"), subscribe=["src.spectrum_dbm"])
        push_iq(p, "src.iq", [tone(128, 1, 0.5) * 8192] * 5, {"reflevel": -10.0})
        wait_for(lambda: len(sink.items) == 5, 10, message="5 calibrated spectra")
        assert fft.spectra == 5 and cal.calibrated == 5 and cal.skipped == 0
    finally:
        assert p.stop(5.0)
    p2 = Pipeline()
    cal2 = p2.add_endpoint(CalibrateEndpoint("cal"), subscribe=["src.spectrum"])
    p2.start()
    try:
        push_iq(p2, "src.spectrum", [np.zeros(64, np.float32)] * 4, {"reflevel": 0.0})
        wait_for(lambda: cal2.stats.handled == 4, 10, message="calibrate took 4")
        assert cal2.calibrated == 0 and cal2.skipped == 4
    finally:
        assert p2.stop(5.0)


def test_calibrate_needs_a_reference_level_or_a_configured_one() -> None:
    p = Pipeline()
    strict = p.add_endpoint(CalibrateEndpoint("strict"), subscribe=["a.spectrum"])
    assumed = p.add_endpoint(CalibrateEndpoint("assumed", reflevel=-20.0),
                             subscribe=["b.spectrum"])
    out = p.add_endpoint(Collector("out"), subscribe=["a.spectrum_dbm", "b.spectrum_dbm"])
    p.start()
    try:
        push_iq(p, "a.spectrum", [np.zeros(8, np.float32)])
        push_iq(p, "b.spectrum", [np.zeros(8, np.float32)])
        wait_for(lambda: strict.stats.dropped == 1 and len(out.items) == 1, 10,
                 message="one refused, one calibrated")
    finally:
        assert p.stop(5.0)
    assert out.items[0].value[0] == pytest.approx(-20.0 + REFLEVEL_ERROR, abs=1e-4)
    assert assumed.calibrated == 1 and strict.stats.errors == 1


# ------------------------------------------------------------------ the chain, on the simulator
def run_chain(sim: WSA4000Simulator, n_spectra: int = 6, **dev: Any
              ) -> tuple[list[Measurement], list[Measurement], CalibrateEndpoint]:
    p = Pipeline()
    p.add_device(WSA4000Device("wsa1", host="127.0.0.1", control_port=sim.control_port,
                               data_port=sim.data_port, rate=0, timeout=2.0, **dev))
    p.add_endpoint(FFTEndpoint("fft", subscribe=["wsa1.iq"]))
    cal = p.add_endpoint(CalibrateEndpoint("cal", subscribe=["wsa1.spectrum"]))
    raw = p.add_endpoint(Collector("raw"), subscribe=["wsa1.spectrum"])
    dbm = p.add_endpoint(Collector("dbm"), subscribe=["wsa1.spectrum_dbm"])
    p.start()
    try:
        wait_for(lambda: len(dbm.items) >= n_spectra, 10, message="calibrated spectra")
    finally:
        assert p.stop(5.0)
    assert p.balanced()
    return raw.items, dbm.items, cal


@pytest.mark.parametrize("spp,decimation,rf_gain,if_gain,k,amplitude", [
    (128, 1, "HIGH", 0, 9, 0.5),
    (512, 4, "LOW", 10, -40, 0.25),
    (1024, 16, "VLOW", -5, 200, 0.8),
    (256, 1, "MEDIUM", 20, -1, 0.05),
])
def test_simulated_tone_is_at_its_bin_and_calibrated_level(
        spp: int, decimation: int, rf_gain: str, if_gain: int, k: int,
        amplitude: float) -> None:
    fs = FS / decimation
    with WSA4000Simulator(control_port=0, data_port=0, tones=[f"{k * fs / spp}:{amplitude}"],
                          noise=1e-4, ring_samples=4 * spp) as sim:
        _, spectra, _ = run_chain(sim, spp=spp, decimation=decimation, rf_gain=rf_gain,
                                  if_gain=if_gain, ppb=2)
        reflevel = sim.reflevel()
    expected = 20 * np.log10(0.5 * amplitude) + reflevel + REFLEVEL_ERROR
    for m in spectra:
        assert m.topic == "wsa1.spectrum_dbm" and m.unit == "dBm"
        assert m.meta["reflevel"] == reflevel and m.meta["rf_freq"] == 2.4e9
        peak = int(np.argmax(m.value))
        assert peak == spp // 2 + k
        assert m.value[peak] == pytest.approx(expected, abs=0.05)


def test_tone_given_in_dbm_reads_back_in_dbm_whatever_the_gain() -> None:
    for rf_gain in ("HIGH", "VLOW"):
        with WSA4000Simulator(control_port=0, data_port=0, tones=[f"{12 * FS / 256}:-35dBm"],
                              noise=1e-5, ring_samples=1024) as sim:
            _, spectra, _ = run_chain(sim, n_spectra=2, spp=256, rf_gain=rf_gain)
        assert spectra[-1].value[128 + 12] == pytest.approx(-35.0, abs=0.05)


def test_spectral_inversion_is_flipped_back_by_calibrate() -> None:
    spp, k = 256, 21
    with WSA4000Simulator(control_port=0, data_port=0, tones=[f"{k * FS / spp}:0.5"],
                          noise=1e-4, spectral_inversion=True, ring_samples=1024) as sim:
        raw, spectra, cal = run_chain(sim, spp=spp)
    assert all(m.meta["spectral_inversion"] for m in spectra)
    assert int(np.argmax(raw[0].value)) == spp // 2 - k  # inverted as sent
    assert int(np.argmax(spectra[0].value)) == spp // 2 + k  # the true frequency
    assert cal.flipped >= len(spectra)
