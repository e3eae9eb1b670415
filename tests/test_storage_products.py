"""Indexable metadata: the WIDAR chain's spectra, many baseline/polarisation products on one
topic, become one HDF5 segment per product (attributes index.<key>), and ``plot`` and
``export`` select (--where) and split (--split) by product."""

from __future__ import annotations

import socket
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import Collector, free_port, wait_for
from radlogger.device import DeviceState
from radlogger.devices.widar.driver import WidarDevice
from radlogger.devices.widar.simulator import WidarSimulator
from radlogger.endpoints.lag.fft import LagFFTEndpoint
from radlogger.endpoints.storage.cli import export, plot
from radlogger.endpoints.storage.hdf5 import HDF5Endpoint
from radlogger.measurement import Measurement
from radlogger.pipeline import Pipeline
from radlogger.store import reader

GEOMETRY = {"lags": 64, "lags_per_frame": 16}
BASELINES = ("1-2", "1-3", "2-3")  # the simulator numbers stations from 1
POLS = ("AA", "AB", "BA", "BB")


@pytest.fixture(scope="module")
def widar_h5(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Measurement]]:
    """WIDAR simulator -> widar device -> lag_fft -> hdf5: 12 products, 4 integrations."""
    path = tmp_path_factory.mktemp("widar") / "spectra.h5"
    p = Pipeline()
    dev = p.add_device(WidarDevice("widar", port=free_port(socket.SOCK_DGRAM), timeout=0.2,
                                   polarizations=list(POLS), **GEOMETRY))
    p.add_endpoint(LagFFTEndpoint("lag_fft", subscribe=["widar.lagset"]))
    store = p.add_endpoint(HDF5Endpoint("spectra", {"path": str(path)}),
                           subscribe=["widar.spectrum"])
    seen = p.add_endpoint(Collector("seen"), subscribe=["widar.spectrum"])
    p.start()
    try:
        wait_for(lambda: dev.state is DeviceState.RUNNING, message="device running")
        sim = WidarSimulator(baselines=3, polarizations=POLS, seed=3,
                             start_ns=1_700_000_000_000_000_000, **GEOMETRY)
        n = 4 * len(BASELINES) * len(POLS)
        sim.send(("127.0.0.1", dev.bound_port), rate=20000,
                 frames=4 * sim.frames_per_integration)
        wait_for(lambda: len(seen.items) == n and store.stats.handled == n,
                 message="every product's spectra stored")
    finally:
        assert p.stop(5.0)
    assert p.balanced()
    return path, seen.snapshot()


def test_each_product_is_a_segment_with_its_keys_as_attributes(widar_h5) -> None:  # type: ignore[no-untyped-def]
    path, spectra = widar_h5
    products = {(m.meta["baseline"], m.meta["polarization"]) for m in spectra}
    assert products == {(b, p) for b in BASELINES for p in POLS}
    with h5py.File(path, "r", swmr=True) as f:
        segs = list(f["widar.spectrum"].values())
        assert len(segs) == len(products)
        found = {(g.attrs["index.baseline"], g.attrs["index.polarization"]) for g in segs}
        assert found == products
        assert all(len(g["value"]) == 4 for g in segs)
    back = list(reader.read(path))
    assert [m.t_ns for m in back] == [m.t_ns for m in spectra]  # write order kept
    for a, b in zip(spectra, back, strict=True):
        np.testing.assert_array_equal(a.value, b.value)
        assert a.meta["baseline"] == b.meta["baseline"]


def test_where_selects_a_product_in_every_store(widar_h5, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path, spectra = widar_h5
    want = [m for m in spectra if m.meta["baseline"] == "1-3" and m.meta["polarization"] == "AB"]
    runner = CliRunner()
    for out in ("sel.h5", "sel.jsonl", "sel.sqlite", "sel.csv"):
        result = runner.invoke(export, [str(path), str(tmp_path / out), "--where",
                                        "baseline=1-3", "-w", "polarization=AB"])
        assert result.exit_code == 0, result.output
        back = list(reader.read(tmp_path / out))
        assert [m.t_ns for m in back] == [m.t_ns for m in want] and len(want) == 4
    # and the reader's own where, on a store without an index
    assert list(reader.read(tmp_path / "sel.jsonl", where=[("polarization", "AA")])) == []
    result = runner.invoke(export, [str(path), str(tmp_path / "x.csv"), "--where", "oops"])
    assert result.exit_code == 2 and "key=value" in result.output


def test_export_splits_by_product(widar_h5, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path, spectra = widar_h5
    result = CliRunner().invoke(export, [str(path), str(tmp_path / "p.h5"), "--split",
                                         "baseline", "--split", "polarization"])
    assert result.exit_code == 0, result.output
    files = sorted(p.name for p in tmp_path.glob("p-*.h5"))
    assert files == sorted(f"p-{b}-{p}.h5" for b in BASELINES for p in POLS)
    one = list(reader.read(tmp_path / "p-2-3-BA.h5"))
    assert [m.t_ns for m in one] == [m.t_ns for m in spectra
                                     if (m.meta["baseline"], m.meta["polarization"])
                                     == ("2-3", "BA")]
    assert f"into {len(files)} files" in result.output


def test_plot_draws_one_waterfall_per_product(widar_h5, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path, _ = widar_h5
    result = CliRunner().invoke(plot, [str(path), "-o", str(tmp_path), "--db"])
    assert result.exit_code == 0, result.output
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    # default split: the product keys present (baseline, baseband, subband, polarization,
    # phase_bin); the simulator's baseband, subband and phase bin are all 0
    assert pngs == sorted(f"widar.spectrum-{b}-0-0-{p}-0.png" for b in BASELINES for p in POLS)
    one = CliRunner().invoke(plot, [str(path), "-o", str(tmp_path / "one.png"), "--split",
                                    "none", "-w", "polarization=BB"])
    assert one.exit_code == 0, one.output
    assert (tmp_path / "one.png").read_bytes().startswith(b"\x89PNG")
    assert "12 x 64" in one.output  # three baselines' BB spectra in one waterfall


def test_sqlite_indexes_the_product_keys(widar_h5, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import sqlite3

    path, spectra = widar_h5
    db = tmp_path / "w.sqlite"
    result = CliRunner().invoke(export, [str(path), str(db)])
    assert result.exit_code == 0, result.output
    conn = sqlite3.connect(db)
    try:
        indexes = {r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"meta_baseline", "meta_polarization", "meta_phase_bin"} <= indexes
        plan = " ".join(str(r) for r in conn.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM measurements "
            "WHERE json_extract(meta, '$.baseline') = '1-3'"))
        assert "meta_baseline" in plan
        n = conn.execute("SELECT count(*) FROM measurement_view "
                         "WHERE json_extract(meta, '$.polarization') = 'BB'").fetchone()[0]
    finally:
        conn.close()
    assert n == sum(m.meta["polarization"] == "BB" for m in spectra)
    # numbers and bools match by their text, through the SQL pre-filter and the exact check
    assert len(list(reader.read(db, where=[("phase_bin", "0")]))) == len(spectra)
    assert len(list(reader.read(db, where=[("complete", "true")]))) == \
        sum(m.meta["complete"] is True for m in spectra)
    assert list(reader.read(db, where=[("phase_bin", "1")])) == []
