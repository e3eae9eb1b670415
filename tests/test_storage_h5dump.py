"""The HDF5 store is readable by the distributions' HDF5 tools, not only by h5py's bundled HDF5.

Debian's ``h5dump`` (package hdf5-tools, HDF5 1.10; etc/install-system-deps.sh installs it)
reads the whole file — every kind of value, SWMR on and off — without an error, and shows the
units and indexed meta keys as attributes."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from test_storage_helpers import assert_same, every_measurement

from radlogger.endpoints.storage.hdf5 import HDF5Endpoint
from radlogger.measurement import Measurement
from radlogger.store import reader

H5DUMP = shutil.which("h5dump")
pytestmark = pytest.mark.skipif(H5DUMP is None, reason="h5dump missing: run "
                                "etc/install-system-deps.sh (Debian package hdf5-tools)")


def h5dump(*args: str) -> str:
    assert H5DUMP is not None
    done = subprocess.run([H5DUMP, *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "error" not in done.stderr.lower()
    assert "*ERROR*" not in done.stdout
    return done.stdout


@pytest.mark.parametrize("swmr", [True, False])
def test_h5dump_reads_every_value(swmr: bool, tmp_path: Path) -> None:
    path = tmp_path / "all.h5"
    written = every_measurement()
    store = HDF5Endpoint("h5", {"path": str(path), "swmr": swmr})
    assert store.write_all(written) == len(written)
    out = h5dump(str(path))
    assert 'ATTRIBUTE "units"' in out and '"dBm"' in out
    assert "ns since 1970-01-01T00:00:00Z" in out
    assert_same(written, list(reader.read(path)))  # and our reader still reads it exactly


def test_h5dump_shows_products_as_attributes(tmp_path: Path) -> None:
    path = tmp_path / "widar.h5"
    spectrum = np.arange(8, dtype=np.float32)
    written = [Measurement("widar", "widar.spectrum", spectrum + i, 1_700_000_000_000_000_000 + i,
                           "dB", None, {"baseline": f"{i % 2}-3", "polarization": "RR",
                                        "phase_bin": 0, "n_lags": 8}, i)
               for i in range(6)]
    store = HDF5Endpoint("h5", {"path": str(path)})
    assert store.write_all(written) == len(written)
    out = h5dump("-A", str(path))  # attributes and structure only
    for attr in ('"index.baseline"', '"index.polarization"', '"index.phase_bin"'):
        assert out.count(f"ATTRIBUTE {attr}") == 2  # one segment per baseline
    assert '"0-3"' in out and '"1-3"' in out
    value = h5dump("-d", "/widar.spectrum/1/value", str(path))
    assert "(0,0): 1, 2, 3, 4, 5, 6, 7, 8," in " ".join(value.split())
    assert_same(written, list(reader.read(path)))
    only = list(reader.read(path, where=[("baseline", "1-3")]))
    assert [m.value[0] for m in only] == [1.0, 3.0, 5.0]
