"""Simulated pico2-ice boards: start several, and the ``radloggerd simulate pico`` command.

The board itself (protocol, faults, the documented pulse-count function) is
:mod:`radlogger.devices.pico.simboard` and :mod:`.answers`; this module re-exports them so
tests and users need one import.
"""

from __future__ import annotations

import signal
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .answers import (
    N_SAMPLES,
    PULSE_BASE,
    PULSE_SPREAD,
    expected_fitness,
    expected_pulses,
    expected_samples,
    sim_serial,
)
from .protocol import COUNT_WINDOW_S, WATCHDOG_S
from .simboard import SimulatedBoard

__all__ = ["SimulatedBoard", "expected_pulses", "expected_samples", "expected_fitness",
           "sim_serial", "start_boards", "cli", "PULSE_BASE", "PULSE_SPREAD", "N_SAMPLES"]


def start_boards(n: int, link_dir: str | Path | None = None,
                 serial: Callable[[int], str] = sim_serial, **kw: Any) -> list[SimulatedBoard]:
    """Start ``n`` boards; with ``link_dir`` each gets a stable by-id style link there."""
    boards = []
    for i in range(n):
        s = serial(i)
        link = Path(link_dir) / f"usb-tinyVision.ai_pico-ice_{s}-if00" if link_dir else None
        boards.append(SimulatedBoard(serial=s, link=link, **kw).start())
    return boards


@click.command(name="pico")
@click.option("--boards", "n", type=click.IntRange(1, 256), default=1, show_default=True,
              help="number of simulated boards")
@click.option("--mode", type=click.Choice(["pulsecount", "variance"]), default="pulsecount",
              show_default=True, help="firmware the boards run")
@click.option("--count-window", type=click.FloatRange(0.0, 60.0), default=COUNT_WINDOW_S,
              show_default=True, help="seconds each evaluation counts")
@click.option("--watchdog", type=click.FloatRange(0.01, 60.0), default=WATCHDOG_S,
              show_default=True, help="seconds a transfer may take after its first byte")
@click.option("--link-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="directory for stable by-id links (default: a new temporary directory)")
def cli(n: int, mode: str, count_window: float, watchdog: float, link_dir: Path | None) -> None:
    """Simulated pico2-ice boards on pseudo-terminals; prints serial and port of each."""
    if link_dir is None:
        link_dir = Path(tempfile.mkdtemp(prefix="pico-sim-"))
    link_dir.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # before the boards exist: stop cleanly anytime
        signal.signal(sig, lambda *_: stop.set())
    boards = start_boards(n, link_dir, mode=mode, count_window=count_window, watchdog=watchdog)
    for b in boards:
        click.echo(f"{b.serial}  {b.path}  ({b.pts})")
    click.echo(f"{n} {mode} board(s) running; Ctrl-C to stop", err=True)
    try:
        while not stop.wait(3600):
            pass
    finally:
        for b in boards:
            b.stop()
        click.echo(" ".join(f"{b.serial}: {b.evaluations} evaluations" for b in boards), err=True)
