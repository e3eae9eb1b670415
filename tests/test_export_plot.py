"""radloggerd export (between formats, with filters) and radloggerd plot (PNG from any store)."""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path

import click
import matplotlib.image
import numpy as np
import pytest
from click.testing import CliRunner
from test_storage_helpers import (
    STORES,
    T0,
    assert_same,
    counter_measurements,
    every_measurement,
    make_store,
)

from radlogger.endpoints.storage import plot as plots
from radlogger.endpoints.storage.cli import export, plot
from radlogger.measurement import Measurement
from radlogger.store import reader

DESTINATIONS = {"csv": "out.csv", "csv.gz": "out.csv.gz", "jsonl": "out.jsonl",
                "sqlite": "out.db", "hdf5": "out.h5"}
PNG = b"\x89PNG\r\n\x1a\n"


def _invoke(command: click.Command, *args: str) -> str:
    result = CliRunner().invoke(command, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def test_commands_are_registered_for_radloggerd() -> None:
    found = {ep.name: ep for ep in entry_points(group="radlogger.commands")}
    assert found["export"].load() is export and found["plot"].load() is plot


@pytest.mark.parametrize("source", [s for s in STORES if s[0] != "hdf5-noswmr"],
                         ids=[s[0] for s in STORES if s[0] != "hdf5-noswmr"])
@pytest.mark.parametrize("dest", sorted(DESTINATIONS))
def test_export_between_every_pair_of_formats(source, dest: str, tmp_path: Path) -> None:
    recorded = every_measurement()
    src = make_store(source, tmp_path / "src")
    src.write_all(recorded)
    out = tmp_path / DESTINATIONS[dest]
    text = _invoke(export, src.path, out)
    assert f"exported {len(recorded)} measurements" in text
    assert_same(recorded, list(reader.read(out)))


def test_export_filters_and_rotated_sources(tmp_path: Path) -> None:
    data = [m for pair in zip(counter_measurements(200, "wsa1.power"),
                              counter_measurements(200, "pico3.rate"), strict=True) for m in pair]
    src = make_store(STORES[2], tmp_path, rotate_bytes=2000)
    src.write_all(data)
    assert len(src.files) > 3
    since, until = (T0 + 50 * 1_000_000) / 1e9, (T0 + 150 * 1_000_000) / 1e9
    out = tmp_path / "power.h5"
    _invoke(export, tmp_path / "run.jsonl", out, "--topic", "wsa1", "--since", since,
            "--until", f"{until}")
    assert [(m.topic, m.value) for m in reader.read(out)] == \
        [("wsa1.power", i) for i in range(50, 150)]
    _invoke(export, tmp_path / "run-*.jsonl", tmp_path / "all.txt", "--to", "csv", "--gzip")
    assert len(list(reader.read(tmp_path / "all.txt.gz"))) == 400


def test_export_user_errors_are_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    src = make_store(STORES[0], tmp_path)
    src.write_all(counter_measurements(3))
    cases = [
        ([tmp_path / "missing.csv", tmp_path / "o.csv"], "no store at"),
        ([src.path, tmp_path / "o.xyz"], "add --to"),
        ([src.path, src.path], "is also a source file"),
        ([src.path, tmp_path / "o.csv", "--since", "teatime"], "cannot read the time"),
        ([src.path, tmp_path / "o.h5", "--gzip"], "--gzip applies to csv and jsonl"),
    ]
    for args, message in cases:
        result = runner.invoke(export, [str(a) for a in args])
        assert result.exit_code != 0 and message in result.output, (args, result.output)
        assert "Traceback" not in result.output
    _invoke(export, src.path, tmp_path / "o.csv")
    result = runner.invoke(export, [str(src.path), str(tmp_path / "o.csv")])
    assert result.exit_code == 1 and "add --append" in result.output
    _invoke(export, src.path, tmp_path / "o.csv", "--append")
    assert [m.value for m in reader.read(tmp_path / "o.csv")] == [0, 1, 2, 0, 1, 2]


def _spectra(n: int = 40, bins: int = 64) -> list[Measurement]:
    rng = np.random.default_rng(1)
    return [Measurement("wsa1", "wsa1.spectrum", (rng.random(bins) + i).astype(np.float32),
                        T0 + i * 100_000_000, "dBm", None,
                        {"freq_start_hz": 1e9, "freq_stop_hz": 1.1e9}, i) for i in range(n)]


def test_timeseries_figure_shows_the_stored_values(tmp_path: Path) -> None:
    scalars = counter_measurements(30, "pico3.rate")
    for m in scalars:
        m.value = float(m.value) ** 2
    store = make_store(STORES[4], tmp_path)
    store.write_all(scalars + [Measurement("pico3", "pico3.ok", True, T0)])
    data = plots.collect(reader.read(store.path))
    fig = plots.timeseries_figure([data["pico3.rate"], data["pico3.ok"]])
    ax = fig.axes[0]
    (line,) = ax.get_lines()
    assert np.array_equal(line.get_ydata(), [float(i) ** 2 for i in range(30)])
    assert np.array_equal(line.get_xdata(),
                          np.array([m.t_ns for m in scalars]).astype("datetime64[ns]"))
    assert ax.get_ylabel() == "pico3.rate [V]"
    assert fig.axes[1].get_lines()[0].get_ydata().tolist() == [1.0]


def test_spectrum_figure_mean_last_and_waterfall(tmp_path: Path) -> None:
    spectra = _spectra()
    store = make_store(STORES[5], tmp_path)
    store.write_all(spectra)
    td = plots.collect(reader.read(store.path))["wsa1.spectrum"]
    fig = plots.spectrum_figure(td, max_rows=10)
    ax_spec, ax_fall = fig.axes[:2]
    rows = np.stack([m.value for m in spectra]).astype(np.float64)
    mean, last = ax_spec.get_lines()
    assert np.allclose(mean.get_ydata(), rows.mean(axis=0))
    assert np.array_equal(last.get_ydata(), rows[-1])
    assert np.allclose(mean.get_xdata(), np.linspace(1e9, 1.1e9, 64, endpoint=False))
    assert ax_spec.get_xlabel() == "frequency [Hz]" and ax_spec.get_ylabel() == "value [dBm]"
    image = ax_fall.images[0].get_array()
    assert image.shape == (10, 64)  # 40 rows averaged in blocks of 4
    assert np.allclose(image, rows.reshape(10, 4, 64).mean(axis=1))
    assert ax_fall.images[0].get_extent()[2:] == [pytest.approx(3.9), 0.0]


def test_fft_of_iq_peaks_at_the_tone() -> None:
    n, tone = 256, 32
    t = np.arange(n)
    iq = [Measurement("wsa1", "wsa1.iq", np.exp(2j * np.pi * tone * t / n).astype(np.complex64),
                      T0 + i, "", None, None, i) for i in range(5)]
    td = plots.collect(iq)["wsa1.iq"]
    fig = plots.spectrum_figure(td, fft=True)
    mean = fig.axes[0].get_lines()[0]
    assert mean.get_xdata()[np.argmax(mean.get_ydata())] == tone
    assert fig.axes[0].get_ylabel() == "power [dB]"


def test_plot_command_writes_valid_pngs(tmp_path: Path) -> None:
    store = make_store(STORES[0], tmp_path, path=str(tmp_path / "mixed.csv"))
    store.write_all(counter_measurements(50, "pico3.rate") + _spectra(12, 32) +
                    [Measurement("log", "log.note", "text", T0)])
    out = tmp_path / "plots"
    text = _invoke(plot, store.path, "-o", out, "--max-rows", "5")
    assert "skipped 1 measurements of log.note (text values)" in text
    for name in ("timeseries.png", "wsa1.spectrum.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG), name
        img = matplotlib.image.imread(out / name)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    one = tmp_path / "only.png"
    _invoke(plot, store.path, "-o", one, "--topic", "wsa1", "--db")
    assert one.read_bytes().startswith(PNG)
    result = CliRunner().invoke(plot, [str(store.path), "--topic", "nothing"])
    assert result.exit_code == 1 and "no measurements" in result.output
