"""radlogger.mmsg: many datagrams per system call, and the WIDAR driver on both read paths."""

from __future__ import annotations

import socket

import numpy as np
import pytest

from conftest import wait_for
from radlogger import mmsg

pytestmark = pytest.mark.skipif(not mmsg.available(), reason="no recvmmsg/sendmmsg here")


@pytest.fixture
def pair():  # type: ignore[no-untyped-def]
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.bind(("127.0.0.1", 0))
    yield rx, tx
    rx.close()
    tx.close()


def _receive_all(rcv: mmsg.Receiver, want: int) -> list[np.ndarray]:
    """Each receive()'s rows with their lengths appended, until ``want`` rows came."""
    got: list[np.ndarray] = []

    def more() -> bool:
        n = rcv.receive()
        if n:
            got.append(np.hstack([rcv.rows[:n], rcv.lengths[:n, None].astype(np.uint8)]))
        return sum(len(g) for g in got) >= want

    wait_for(more, message=f"{want} datagrams received")
    return got


def test_send_and_receive_rows_in_order(pair) -> None:  # type: ignore[no-untyped-def]
    rx, tx = pair
    frames = np.arange(100 * 40, dtype=np.uint32).astype(np.uint8).reshape(100, 40)
    out = mmsg.Sender(tx, frames, rx.getsockname())
    assert out.send(0, 64) == 64 and out.send(64, 36) == 36
    rows = np.zeros((32, 40), np.uint8)
    rcv = mmsg.Receiver(rx, rows)
    chunks = _receive_all(rcv, 100)
    got = np.vstack(chunks)
    assert len(got) == 100 and all(len(c) <= 32 for c in chunks)
    assert np.array_equal(got[:, :40], frames)
    assert (got[:, 40] == 40).all()  # every length 40
    assert rcv.receive() == 0  # empty: no error, nothing read


def test_a_truncated_datagram_reports_its_real_length(pair) -> None:  # type: ignore[no-untyped-def]
    rx, tx = pair
    tx.sendto(b"x" * 2000, rx.getsockname())
    tx.sendto(b"y" * 10, rx.getsockname())
    rcv = mmsg.Receiver(rx, np.zeros((4, 64), np.uint8))
    lengths: list[int] = []

    def both() -> bool:
        k = rcv.receive(2 - len(lengths))
        lengths.extend(rcv.lengths[:k].tolist())
        return len(lengths) == 2

    wait_for(both, message="both datagrams received")
    assert lengths == [2000, 10]
    assert bytes(rcv.rows[0]) == b"x" * 64  # the row holds what fitted


def test_rows_must_be_one_contiguous_block(pair) -> None:  # type: ignore[no-untyped-def]
    rx, _ = pair
    with pytest.raises(ValueError):
        mmsg.Receiver(rx, np.zeros((8, 64), np.uint8)[:, :32])


def test_a_closed_socket_is_a_clear_oserror(pair) -> None:  # type: ignore[no-untyped-def]
    rx, tx = pair
    out = mmsg.Sender(tx, np.zeros((2, 8), np.uint8), rx.getsockname())
    tx.close()
    with pytest.raises(OSError):
        out.send(0, 2)


@pytest.mark.parametrize("no_mmsg", ["0", "1"], ids=["recvmmsg", "recv_into"])
def test_widar_driver_reads_every_frame_on_both_paths(monkeypatch, no_mmsg: str) -> None:  # type: ignore[no-untyped-def]
    from radlogger.devices.widar.driver import WidarDevice
    from radlogger.devices.widar.simulator import WidarSimulator
    from radlogger.endpoints.null import NullEndpoint
    from radlogger.pipeline import Pipeline

    monkeypatch.setenv("RADLOGGER_NO_MMSG", no_mmsg)
    sim = WidarSimulator(baselines=2, polarizations=("AA", "BB"), lags=256, lags_per_frame=64,
                         seed=3)
    p = Pipeline(queue_size=4096)
    dev = p.add_device(WidarDevice("w", port=0, lags=256, lags_per_frame=64, batch=16,
                                   timeout=0.5))
    sink = p.add_endpoint(NullEndpoint("sink"), subscribe=["w.lagset"])
    p.start()
    try:
        wait_for(lambda: dev.bound_port, message="the device's socket is bound")
        sent = sim.send(("127.0.0.1", dev.bound_port), frames=16 * sim.frames_per_integration)
        wait_for(lambda: sink.count >= 16 * 4, message="every lag set delivered")
    finally:
        p.stop(10)
    assert sent == dev.datagrams == 16 * 4 * 4 and dev.kernel_drops() == 0
    assert sink.count == dev.lagsets == 16 * 4 and not dev.bad_frames
