"""Helpers shared by the pico tests (no tests here): bitstreams, simulated boards."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from radlogger.devices.pico.protocol import BITSTREAM_SIZE
from radlogger.devices.pico.simulator import SimulatedBoard, start_boards

#: device options that make reconnects quick in tests
FAST = {"backoff_initial": 0.02, "backoff_max": 0.2, "backoff_jitter": 0.0}


def bitstream(seed: int, size: int = BITSTREAM_SIZE) -> bytes:
    return np.random.default_rng(seed).bytes(size)


@contextmanager
def sim_boards(tmp_path: Path, n: int, modes: tuple[str, ...] = (),
               **kw: Any) -> Iterator[list[SimulatedBoard]]:
    """``n`` simulated boards with by-id style links in ``tmp_path``; short count window.

    ``modes`` gives each board its firmware (default: all pulse-count)."""
    kw.setdefault("count_window", 0.02)
    links = tmp_path / "by-id"
    links.mkdir(exist_ok=True)
    boards = start_boards(n, links, **kw)
    for board, mode in zip(boards, modes, strict=False):
        board.mode = mode
    try:
        yield boards
    finally:
        for b in boards:
            b.stop()
