"""kill -9 of a process writing through a Pipeline: every store stays readable by its standard
tool and holds exactly what was flushed; a restarted logger carries on next to it."""

from __future__ import annotations

import csv
import gzip
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import pytest
from test_storage_helpers import counter_measurements

from radlogger.endpoints.storage.csv import CSVEndpoint
from radlogger.endpoints.storage.jsonl import JSONLEndpoint
from radlogger.store import reader
from radlogger.store.rotation import rotated_files

FLUSH_EVERY = 100
PRODUCED = 250  # 200 flushed, 50 pending when the process dies
FLUSHED = PRODUCED // FLUSH_EVERY * FLUSH_EVERY

WRITER = textwrap.dedent("""
    import sys, time
    from radlogger.devices.synthetic import SyntheticDevice
    from radlogger.endpoints.storage.csv import CSVEndpoint
    from radlogger.endpoints.storage.hdf5 import HDF5Endpoint
    from radlogger.endpoints.storage.jsonl import JSONLEndpoint
    from radlogger.endpoints.storage.sqlite import SQLiteEndpoint
    from radlogger.pipeline import Pipeline

    d, produced, every, start = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    policy = dict(flush_every=every, flush_interval=0)  # flush by count only: a known state
    stores = [CSVEndpoint("csv", path=d + "/run.csv", **policy),
              CSVEndpoint("csvgz", path=d + "/run.csv", gzip=True, **policy),
              JSONLEndpoint("jsonl", path=d + "/run.jsonl", **policy),
              SQLiteEndpoint("sqlite", path=d + "/run.sqlite", **policy),
              HDF5Endpoint("hdf5", path=d + "/run.h5", **policy),
              HDF5Endpoint("hdf5plain", path=d + "/plain.h5", swmr=False, **policy)]
    p = Pipeline()
    dev = p.add_device(SyntheticDevice("syn", rate=0, count=produced, pattern="counter"))
    dev.emitted = start  # values continue from the previous run
    dev.settings["count"] = start + produced
    for s in stores:
        p.add_endpoint(s, subscribe=["syn"])
    p.start()
    assert dev.join(30) and p.wait_quiescent(time.monotonic() + 30)
    assert all(s.stats.handled == produced for s in stores)
    print("FLUSHED", *[s.flushes for s in stores], flush=True)
    sys.stdin.read()  # wait to be killed
""")


def _run_and_kill(tmp_path: Path, start: int) -> list[int]:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path), str(PRODUCED),
                             str(FLUSH_EVERY), str(start)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[1])
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the writer reports its flushes
        assert line.startswith("FLUSHED"), f"writer failed: {line!r} {proc.stderr.read()}"
        flushes = [int(x) for x in line.split()[1:]]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    return flushes


def _standard_tools(d: Path) -> dict[str, list[int]]:
    """Values as a user's tools read them, without radloggerd code."""
    out: dict[str, list[int]] = {}
    with open(d / "run.csv", newline="") as f:
        out["csv"] = [int(r["value"]) for r in csv.DictReader(f)]
    with gzip.open(d / "run.csv.gz", "rt", newline="") as f:
        out["csv.gz"] = [int(r["value"]) for r in csv.DictReader(f)]
    with open(d / "run.jsonl") as f:
        out["jsonl"] = [json.loads(line)["value"] for line in f]
    con = sqlite3.connect(d / "run.sqlite")
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    out["sqlite"] = [v for (v,) in con.execute("SELECT value FROM measurements ORDER BY id")]
    con.close()
    with h5py.File(d / "run.h5", "r", swmr=True) as f:  # SWMR file left open by a crash
        out["hdf5"] = f["syn.value/0/value"][:].tolist()
    with h5py.File(d / "plain.h5", "r") as f:
        out["hdf5plain"] = f["syn.value/0/value"][:].tolist()
    return out


@pytest.mark.timeout(90)
def test_kill_9_keeps_everything_flushed(tmp_path: Path) -> None:
    flushes = _run_and_kill(tmp_path, start=0)
    assert flushes == [PRODUCED // FLUSH_EVERY] * 6
    for store, values in _standard_tools(tmp_path).items():
        assert values == list(range(FLUSHED)), f"{store} after kill -9"
    for name in ("run.csv", "run.csv.gz", "run.jsonl", "run.sqlite", "run.h5", "plain.h5"):
        assert [m.value for m in reader.read(tmp_path / name)] == list(range(FLUSHED)), name
    # the SWMR file was left open for writing: HDF5 itself then refuses a plain open
    with pytest.raises(OSError, match="h5clear"):
        h5py.File(tmp_path / "run.h5", "r")


@pytest.mark.timeout(90)
def test_a_restart_after_kill_9_continues_without_damage(tmp_path: Path) -> None:
    _run_and_kill(tmp_path, start=0)
    os.remove(tmp_path / "writer.py")
    _run_and_kill(tmp_path, start=FLUSHED)
    want = list(range(2 * FLUSHED))
    for name in ("run.csv", "run.jsonl", "run.sqlite", "plain.h5"):  # appended in place
        assert [m.value for m in reader.read(tmp_path / name)] == want, name
    # a gzip file and a crashed SWMR file are never appended to: a numbered file follows
    for name in ("run.csv.gz", "run.h5"):
        siblings = rotated_files(tmp_path / name)
        assert len(siblings) == 1, name
        assert [m.value for m in reader.read(siblings[0])] == want[FLUSHED:]
        assert [m.value for m in reader.read(tmp_path / name)] == want, name


def test_torn_tails_are_skipped_and_trimmed(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    """What a kill inside write() would leave: a partial last line / gzip member."""
    plain = CSVEndpoint("c", path=str(tmp_path / "t.csv"))
    plain.write_all(counter_measurements(10))
    with open(plain.path, "ab") as f:
        f.write(b"1714564800010000000,dev,dev.value,10,int,1")  # no newline: torn
    assert [m.value for m in reader.read(plain.path)] == list(range(10))
    assert "torn last line" in caplog.text
    CSVEndpoint("c", path=str(tmp_path / "t.csv")).write_all(counter_measurements(5, start=10))
    assert [m.value for m in reader.read(plain.path)] == list(range(15))
    with open(plain.path, newline="") as f:
        assert len(list(csv.DictReader(f))) == 15

    packed = JSONLEndpoint("j", path=str(tmp_path / "t.jsonl"), gzip=True, flush_every=4)
    packed.write_all(counter_measurements(10))
    whole = packed.path.read_bytes()
    member = gzip.compress(b'{"torn": true}\n' * 100)
    packed.path.write_bytes(whole + member[: len(member) // 2])
    assert [m.value for m in reader.read(packed.path)] == list(range(10))
    assert "torn last gzip member" in caplog.text


def test_torn_csv_record_with_a_quoted_newline(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    """A str value with a newline makes one CSV record span two lines; a kill inside write()
    after that inner newline leaves half a record ending in a newline.  The reader must skip
    it, and the next run must trim all of it (not glue its first row into the open quote)."""
    path = tmp_path / "q.csv"
    CSVEndpoint("c", path=str(path)).write_all(counter_measurements(3))
    with open(path, "ab") as f:
        f.write(b'1714564800003000000,dev,dev.value,3,str,"first line\nsecond li')  # torn
    assert [m.value for m in reader.read(path)] == [0, 1, 2]
    assert "torn last line" in caplog.text
    more = counter_measurements(2, start=3)
    more[0].value = 'a "quoted"\nmulti-line, value'
    CSVEndpoint("c", path=str(path)).write_all(more)
    assert [m.value for m in reader.read(path)] == [0, 1, 2, more[0].value, 4]
    with open(path, newline="") as f:
        assert [r["value"] for r in csv.DictReader(f)] == ["0", "1", "2", more[0].value, "4"]
