"""Progress of long work: a tqdm bar on stderr when it is a terminal (a pty here), nothing in
a pipe; the command's result line stays on stdout either way."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

from test_storage_helpers import counter_measurements

from radlogger.endpoints.storage.csv import CSVEndpoint
from radlogger.store.progress import Progress, tracked


def _export(src: Path, dest: Path, tty: bool) -> tuple[int, str, str]:
    args = [sys.executable, "-m", "radlogger.cli", "export", str(src), str(dest)]
    if not tty:
        done = subprocess.run(args, capture_output=True, text=True, timeout=60)
        return done.returncode, done.stdout, done.stderr
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 0 cols: no bar
    try:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=slave, text=True)
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        out, _ = proc.communicate(timeout=60)
    finally:
        os.close(master)
    return proc.returncode, out, b"".join(chunks).decode("utf-8", "replace")


def test_export_shows_a_bar_on_a_terminal_only(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    CSVEndpoint("c", {"path": str(src)}).write_all(counter_measurements(5000, "d.v"))
    code, out, err = _export(src, tmp_path / "a.jsonl", tty=True)
    assert code == 0 and "exported 5000 measurements" in out
    assert "exporting" in err and "5.00k meas" in err  # tqdm's final count
    code, out, err = _export(src, tmp_path / "b.jsonl", tty=False)
    assert code == 0 and "exported 5000 measurements" in out
    assert err == ""


def test_tracked_passes_everything_through() -> None:
    data = counter_measurements(1000, "d.v")
    assert list(tracked(iter(data), "x", enabled=False)) == data
    assert list(tracked(iter(data), "x", enabled=True, every=7)) == data
    bar = Progress("off", enabled=False)
    bar.update(3)
    bar.close()
    assert not bar.active
