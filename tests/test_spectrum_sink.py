"""The spectrum sink: frequency axis, stores (.npy append/resume, .npz), PNG rendering."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import wait_for
from radlogger.endpoints.spectrum.sink import SpectrumSink
from radlogger.endpoints.spectrum.store import NpyAppender, frequency_axis, record_dtype
from radlogger.measurement import Measurement
from radlogger.pipeline import Pipeline

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def spectra(n: int, count: int, start: int = 0) -> list[np.ndarray]:
    return [np.full(n, float(start + i), dtype=np.float32) for i in range(count)]


def run(sink: SpectrumSink, topic: str, values: list[np.ndarray], meta: dict) -> Pipeline:
    p = Pipeline()
    p.add_endpoint(sink, subscribe=[topic])
    p.start()
    out = p.outlet("src")
    for i, v in enumerate(values):
        out.push(Measurement("src", topic, v, t_ns=1_000_000_000 * (i + 1), unit="dBm",
                             device_time=5_000 + i, meta=dict(meta)))
    wait_for(lambda: sink.stats.handled + sink.stats.dropped >= len(values), 10,
             message="sink took everything")
    return p


def test_latest_spectrum_carries_its_frequency_axis(tmp_path: Path) -> None:
    sink = SpectrumSink("s")
    p = run(sink, "wsa1.spectrum_dbm", spectra(256, 3),
            {"rf_freq": 2.4e9, "bandwidth": 125e6 / 4, "decimation": 4})
    assert p.stop(5.0)
    freqs, latest, meta = sink.latest("wsa1.spectrum_dbm")  # type: ignore[misc]
    assert latest[0] == 2.0 and meta["rf_freq"] == 2.4e9
    assert freqs[128] == 2.4e9  # the DC bin is the centre frequency
    assert np.allclose(np.diff(freqs), 125e6 / 4 / 256)
    assert freqs[0] == 2.4e9 - 125e6 / 8
    assert sink.latest("nothing") is None


def test_span_from_decimation(tmp_path: Path) -> None:
    sink = SpectrumSink("s", span_from="decimation")
    p = run(sink, "a.spectrum_dbm", spectra(64, 1), {"rf_freq": 1e9, "bandwidth": 1.0,
                                                     "decimation": 8})
    assert p.stop(5.0)
    freqs, _, _ = sink.latest("a.spectrum_dbm")  # type: ignore[misc]
    np.testing.assert_allclose(freqs, frequency_axis(1e9, 125e6 / 8, 64))


def test_waterfall_keeps_the_last_rows_oldest_first() -> None:
    sink = SpectrumSink("s", history=3)
    p = run(sink, "a.spectrum_dbm", spectra(16, 5), {"rf_freq": 1e9, "bandwidth": 1e6})
    assert p.stop(5.0)
    rows, times = sink.waterfall("a.spectrum_dbm")  # type: ignore[misc]
    assert rows[:, 0].tolist() == [2.0, 3.0, 4.0]
    assert times.tolist() == [3e9, 4e9, 5e9]


def test_npy_store_appends_and_resumes_after_restart(tmp_path: Path) -> None:
    meta = {"rf_freq": 915e6, "bandwidth": 31.25e6}
    first = SpectrumSink("s", directory=str(tmp_path), flush_rows=4, render_on_stop=False)
    assert run(first, "wsa1.spectrum_dbm", spectra(32, 10), meta).stop(5.0)
    [path] = sorted(tmp_path.glob("*.npy"))
    assert path.name == "wsa1.spectrum_dbm_N32.npy"
    a = np.load(path)
    assert a.shape == (10,) and a["dbm"].shape == (10, 32)
    assert a["dbm"][:, 0].tolist() == list(range(10))
    assert a["rf_freq"][0] == 915e6 and a["span"][0] == 31.25e6
    assert a["device_time"].tolist() == [5_000 + i for i in range(10)]
    assert first.stored == 10
    second = SpectrumSink("s", directory=str(tmp_path), flush_rows=4, render_on_stop=False)
    assert run(second, "wsa1.spectrum_dbm", spectra(32, 5, start=100), meta).stop(5.0)
    b = np.load(path, mmap_mode="r")
    assert b.shape == (15,) and b["dbm"][10:, 0].tolist() == [100, 101, 102, 103, 104]


def test_npy_appender_starts_a_new_file_for_a_different_layout(tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    NpyAppender(path, record_dtype(8)).append(np.zeros(2, record_dtype(8)))
    other = NpyAppender(path, record_dtype(16))
    assert other.path != path and other.path.name == "x.1.npy"
    other.append(np.zeros(3, record_dtype(16)))
    assert np.load(path).shape == (2,) and np.load(other.path).shape == (3,)
    path.write_bytes(b"not an npy file")
    again = NpyAppender(path, record_dtype(8))
    assert again.path != path and again.rows == 0


def test_npz_store_and_fft_size_change(tmp_path: Path) -> None:
    sink = SpectrumSink("s", directory=str(tmp_path), format="npz", flush_rows=100,
                        render_on_stop=False)
    values = spectra(32, 3) + spectra(64, 2, start=50)
    assert run(sink, "a.spectrum_dbm", values, {"rf_freq": 1e9, "bandwidth": 1e6}).stop(5.0)
    files = sorted(tmp_path.glob("*.npz"))
    assert [f.name.split("_")[2] for f in files] == ["N32", "N64"]
    with np.load(files[0]) as z:
        assert z["dbm"].shape == (3, 32) and z["t_ns"].tolist() == [1e9, 2e9, 3e9]
    with np.load(files[1]) as z:
        assert z["dbm"][:, 0].tolist() == [50, 51]


def test_renders_latest_and_waterfall_png(tmp_path: Path) -> None:
    n = 128
    rng = np.random.default_rng(0)
    values = [(rng.normal(-100, 3, n)).astype(np.float32) for _ in range(20)]
    for v in values:
        v[80] = -30
    sink = SpectrumSink("s", directory=str(tmp_path), format="none", render_interval=0.001)
    p = run(sink, "wsa1.spectrum_dbm", values, {"rf_freq": 2.4e9, "bandwidth": 125e6})
    wait_for(lambda: sink.renders >= 1, 10, message="periodic render")
    assert p.stop(5.0)
    png = tmp_path / "wsa1.spectrum_dbm.png"
    assert png.read_bytes()[:8] == PNG_MAGIC
    other = tmp_path / "elsewhere"
    other.mkdir()
    [path] = sink.render(other)
    assert path.read_bytes()[:8] == PNG_MAGIC and not list(tmp_path.glob("*.npy"))


def test_bad_input_and_bad_directory_give_clear_errors(tmp_path: Path) -> None:
    sink = SpectrumSink("s")
    p = run(sink, "a.spectrum_dbm", [np.zeros((2, 2, 2), np.float32), "x", spectra(8, 1)[0]],
            {})  # type: ignore[list-item]
    assert p.stop(5.0)
    assert sink.stats.errors == 2 and sink.latest("a.spectrum_dbm") is not None
    with pytest.raises(ValueError, match="no directory"):
        sink.render()
    blocker = tmp_path / "file"
    blocker.write_text("")
    bad = SpectrumSink("s", directory=str(blocker / "sub"))
    with pytest.raises(OSError, match="fix 'directory'"):
        bad.open()


def test_concurrent_renders_never_collide_on_a_temporary_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 14 item 7: the worker (render_interval, stop) and the timer thread rendered to the
    same ``.png.tmp``, and one renamed it away under the other (FileNotFoundError, counted as
    endpoint_failed).  Two renders are held between writing and renaming their images (until
    both have written, or 1 s) so that the old collision happens every time."""
    from matplotlib.figure import Figure

    both = threading.Event()
    count = [0]
    lock = threading.Lock()
    savefig = Figure.savefig

    def held_savefig(self: Figure, *args: object, **kw: object) -> None:
        savefig(self, *args, **kw)
        with lock:
            count[0] += 1
            if count[0] == 2:
                both.set()
        both.wait(1.0)

    sink = SpectrumSink("s", directory=str(tmp_path), format="none", render_on_stop=False)
    assert run(sink, "a.spectrum_dbm", spectra(64, 3), {"rf_freq": 1e9,
                                                        "bandwidth": 1e6}).stop(5.0)
    monkeypatch.setattr(Figure, "savefig", held_savefig)
    errors: list[BaseException] = []

    def renderer() -> None:
        try:
            sink.render()
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=renderer) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == [] and not any(t.is_alive() for t in threads)
    assert sink.renders == 2
    assert (tmp_path / "a.spectrum_dbm.png").read_bytes()[:8] == PNG_MAGIC
    assert [p.name for p in tmp_path.iterdir()] == ["a.spectrum_dbm.png"]  # no tmp left


def test_interleaved_topics_and_runs_longer_than_history_and_flush_rows(tmp_path: Path) -> None:
    """The sink stores a batch in runs of one topic: interleaving, a run longer than the
    waterfall and than flush_rows must still give every spectrum, in order, in files of
    exactly flush_rows records (the rest at stop)."""
    sink = SpectrumSink("s", directory=str(tmp_path), flush_rows=4, history=3)
    sink.open()
    meta = {"rf_freq": 1e9, "bandwidth": 1e6}
    batch = [Measurement("src", "a.spectrum_dbm" if i % 5 else "b.spectrum_dbm",
                         np.full(8, float(i), np.float32), t_ns=i + 1, device_time=i, meta=meta)
             for i in range(23)]
    sink.handle_batch(batch)
    a = [float(i) for i in range(23) if i % 5]
    b = [float(i) for i in range(23) if not i % 5]
    assert sink.stored == len(a) // 4 * 4 + len(b) // 4 * 4  # only whole files so far
    sink.flush()
    assert sink.stored == 23
    stored_a = np.load(tmp_path / "a.spectrum_dbm_N8.npy")
    stored_b = np.load(tmp_path / "b.spectrum_dbm_N8.npy")
    assert list(stored_a["dbm"][:, 0]) == a and list(stored_b["dbm"][:, 0]) == b
    assert list(stored_a["device_time"]) == [int(v) for v in a]
    rows, times = sink.waterfall("a.spectrum_dbm")  # type: ignore[misc]
    assert list(rows[:, 0]) == a[-3:] and list(times) == [int(v) + 1 for v in a[-3:]]
    _, latest, _ = sink.latest("a.spectrum_dbm")  # type: ignore[misc]
    assert latest[0] == a[-1]


def test_stop_waits_for_a_periodic_render_and_none_starts_after(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A timer render still running when the sink closed wrote its PNG after the stop, when
    the directory could already be gone (bench_wsa4000: render failed, FileNotFoundError on
    the temporary file).  close() now waits for it, and no timer render starts after."""
    from matplotlib.figure import Figure

    started = threading.Event()
    release = threading.Event()
    savefig = Figure.savefig

    def slow_savefig(self: Figure, *args: object, **kw: object) -> None:
        started.set()
        release.wait(5.0)
        savefig(self, *args, **kw)

    monkeypatch.setattr(Figure, "savefig", slow_savefig)
    sink = SpectrumSink("s", directory=str(tmp_path), format="none", render_on_stop=False,
                        render_interval=0.001)
    p = run(sink, "a.spectrum_dbm", spectra(64, 3), {"rf_freq": 1e9, "bandwidth": 1e6})
    assert started.wait(10.0)
    stopper = threading.Thread(target=p.stop, args=(10.0,))
    stopper.start()
    wait_for(lambda: sink.stats.state in ("stopping", "stopped") or not stopper.is_alive(), 10,
             message="stop begun")
    release.set()
    stopper.join(15.0)
    assert not stopper.is_alive()
    assert sink.renders == 1 and sink.stats.errors == 0  # finished before close returned
    assert [q.name for q in tmp_path.iterdir()] == ["a.spectrum_dbm.png"]
    sink._on_timer()  # a timer that fires after close renders nothing
    assert sink.renders == 1
