"""WIDAR at stop, exact at the edges (issue 13 item 5a): every datagram that reached the socket
is processed, counted as a kernel drop or counted as discarded; none vanishes with the socket.

The simulator sends over real UDP on 127.0.0.1 and knows how many it sent.  The equality is
over what reached the socket before it closed, so the sender is stopped before the device:
    datagrams (received, drained_at_stop included) + discarded + kernel_drops == sent.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from typing import Any

from conftest import Collector, free_port, wait_for
from radlogger.device import DeviceState
from radlogger.devices.widar.driver import WidarDevice
from radlogger.devices.widar.simulator import SenderThread, WidarSimulator
from radlogger.devices.widar.udpsend import route_source, sender_socket
from radlogger.pipeline import Pipeline

GEOMETRY = {"lags": 64, "lags_per_frame": 16}


class HeldWidar(WidarDevice):
    """The real driver, busy elsewhere until it is stopped: it reads nothing, so its receive
    buffer fills (and overflows) as a driver's does when it falls behind."""

    kind = "widar_held"

    def poll(self) -> None:
        self.wait(0.05)


def sim(**kw: object) -> WidarSimulator:
    return WidarSimulator(**{"baselines": 2, "seed": 5, **GEOMETRY, **kw})  # type: ignore[arg-type]


def socket_state(sock: socket.socket) -> tuple[str, str]:
    """(tx_queue:rx_queue, drops) of ``sock`` in /proc/net/udp."""
    inode = str(os.fstat(sock.fileno()).st_ino)
    with open("/proc/net/udp") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 12 and parts[9] == inode:
                return parts[4], parts[12]
    raise AssertionError("socket not in /proc/net/udp")


def settled(sock: socket.socket) -> Callable[[], bool]:
    """A predicate true once the kernel has stopped queueing or dropping on ``sock`` (what
    loopback had in flight when the sender returned has landed)."""
    last: list[Any] = [None]

    def check() -> bool:
        now = socket_state(sock)
        same, last[0] = now == last[0], now
        return same

    return check


def start(pipeline: Pipeline, cls: type[WidarDevice] = WidarDevice,
          **kw: object) -> tuple[WidarDevice, Collector]:
    dev = pipeline.add_device(cls("widar", port=free_port(socket.SOCK_DGRAM), timeout=0.2,
                                  **GEOMETRY, **kw))
    sink = pipeline.add_endpoint(Collector("sink"), subscribe=["widar.lagset"])
    pipeline.start()
    wait_for(lambda: dev.state is DeviceState.RUNNING and dev.sock is not None,
             message="device running")
    return dev, sink


def reached(s: WidarSimulator) -> int:
    """Datagrams the simulator put on the wire (a failed send never reached the socket)."""
    return s.counts["sent"] - s.counts["send_failed"]


def check_lag_sets(dev: WidarDevice, sink: Collector, pipeline: Pipeline) -> None:
    """Every frame processed ended in a lag set, and every lag set was delivered."""
    a = dev.assembler
    c = dev.counters()
    assert c["pending"] == 0 and a.emitted == dev.lagsets == len(sink.items)
    assert a.frames == dev.datagrams - c["bad_frames"]
    assert a.placed + a.duplicates + a.late == a.frames
    assert a.placed == a.emitted * a.n_frames - a.missing_frames
    assert a.complete + a.incomplete == a.emitted
    assert pipeline.producers["widar"].produced == dev.lagsets and pipeline.balanced()


def test_a_full_unread_buffer_is_drained_and_processed_at_stop(pipeline: Pipeline) -> None:
    dev, sink = start(pipeline, HeldWidar, rcvbuf=256 << 10)
    s = sim()
    n = 250 * s.frames_per_integration  # 4000 frames: several times what the buffer holds
    s.send(("127.0.0.1", dev.bound_port), rate=0, frames=n)  # flat out, then stopped
    assert dev.sock is not None
    wait_for(settled(dev.sock), message="loopback delivered everything")
    drops_before_stop = dev.kernel_drops()
    assert drops_before_stop > 0 and dev.datagrams == 0  # full: nothing read yet
    assert pipeline.stop(10.0)
    c = dev.counters()
    assert c["datagrams"] + c["discarded"] + c["kernel_drops"] == reached(s) == n
    assert c["drained_at_stop"] == c["datagrams"] > 0 and c["discarded"] == 0
    assert c["kernel_drops"] == drops_before_stop  # read before the socket closed
    assert c["rcvbuf"] == dev.rcvbuf_granted > 0
    check_lag_sets(dev, sink, pipeline)
    # nothing expired during the drain: every set the drain left incomplete came out at flush
    incomplete = [m for m in sink.items if not m.meta["complete"]]
    assert len(incomplete) == dev.assembler.incomplete
    assert all(m.meta["emitted"] == "flush" for m in incomplete)
    assert {m.meta["emitted"] for m in sink.items} <= {"complete", "flush"}


def test_what_the_drain_time_does_not_cover_is_counted(pipeline: Pipeline) -> None:
    dev, sink = start(pipeline, HeldWidar, rcvbuf=256 << 10, stop_drain=0.0)
    s = sim()
    n = 100 * s.frames_per_integration
    s.send(("127.0.0.1", dev.bound_port), rate=0, frames=n)
    assert dev.sock is not None
    wait_for(settled(dev.sock), message="loopback delivered everything")
    assert pipeline.stop(10.0)
    c = dev.counters()
    assert c["datagrams"] == c["drained_at_stop"] == 0 and not sink.items
    assert c["discarded.stop_deadline"] == c["discarded"] > 0
    assert c["discarded"] + c["kernel_drops"] == reached(s) == n


def test_stop_at_high_rate_accounts_every_datagram_sent(pipeline: Pipeline) -> None:
    dev, sink = start(pipeline)
    s = sim()
    sender = SenderThread(s, ("127.0.0.1", dev.bound_port), rate=0,
                          frames=2000 * s.frames_per_integration)
    sender.start()
    wait_for(lambda: dev.datagrams > 1000, message="frames flowing")
    sender.stop()  # first the sender, then the device: all it sent reached the socket
    assert not sender.is_alive() and dev.sock is not None
    wait_for(settled(dev.sock), message="loopback delivered everything")
    assert pipeline.stop(10.0)
    c = dev.counters()
    assert c["datagrams"] + c["discarded"] + c["kernel_drops"] == reached(s) > 1000
    assert c["discarded"] == 0
    check_lag_sets(dev, sink, pipeline)


def test_simulated_device_stops_its_sender_first_and_counts_everything(
        pipeline: Pipeline) -> None:
    dev = pipeline.add_device(WidarDevice("widar", simulate=True, sim_rate=50_000,
                                          timeout=0.2, **GEOMETRY))
    sink = pipeline.add_endpoint(Collector("sink"), subscribe=["widar.lagset"])
    pipeline.start()
    wait_for(lambda: dev.datagrams > 2000, message="simulated frames flowing")
    sender = dev.sim.current if dev.sim is not None else None
    assert isinstance(sender, SenderThread)
    assert sender.sim.source is not None and sender.sim.source[0] == "127.0.0.1"
    assert pipeline.stop(10.0)
    assert not sender.is_alive()
    c = dev.counters()
    assert c["datagrams"] + c["discarded"] + c["kernel_drops"] == reached(sender.sim) > 2000
    check_lag_sets(dev, sink, pipeline)


def test_stop_while_the_sender_still_sends_ends_within_the_drain_time(
        pipeline: Pipeline) -> None:
    """Datagrams arriving after the close cannot be counted by us; the drain still ends (its
    time is bounded) and nothing counted exceeds what was sent."""
    dev, sink = start(pipeline, stop_drain=0.2)
    s = sim()
    sender = SenderThread(s, ("127.0.0.1", dev.bound_port), rate=0)
    sender.start()
    try:
        wait_for(lambda: dev.datagrams > 1000, message="frames flowing")
        assert pipeline.stop(10.0)
    finally:
        sender.stop()
    c = dev.counters()
    assert c["datagrams"] + c["discarded"] + c["kernel_drops"] <= reached(s)
    check_lag_sets(dev, sink, pipeline)


def test_every_counter_is_a_python_number_and_json(pipeline: Pipeline) -> None:
    dev, sink = start(pipeline)
    s = sim()
    frames = s.frames(0)
    with sender_socket(("127.0.0.1", dev.bound_port)) as tx:
        for row in frames:
            tx.sendto(row.tobytes(), ("127.0.0.1", dev.bound_port))
        wait_for(lambda: dev.lagsets == len(s.products), message="lag sets complete")
        for row in frames:  # again: the lag sets were emitted, so these frames are late
            tx.sendto(row.tobytes(), ("127.0.0.1", dev.bound_port))
        wait_for(lambda: dev.assembler.late == len(frames), message="late frames counted")
    c = dev.counters()
    assert c["late"] == len(frames)
    for k, v in c.items():
        assert type(v) in (int, float), (k, type(v))
    assert json.loads(json.dumps(c)) == c  # no default=str: a numpy int would raise here


def test_send_sockets_are_bound_to_the_sending_address() -> None:
    assert route_source(("127.0.0.1", 9)) == "127.0.0.1"
    with sender_socket(("127.0.0.1", 9)) as tx:
        assert tx.getsockname()[0] == "127.0.0.1"  # not 0.0.0.0
    with sender_socket(("127.0.0.1", 9), "127.0.0.1") as tx:
        assert tx.getsockname()[0] == "127.0.0.1" and tx.getsockname()[1] > 0
    s = sim()
    port = free_port(socket.SOCK_DGRAM)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", port))
        s.send(("127.0.0.1", port), frames=1)
        assert s.source is not None and s.source[0] == "127.0.0.1"
        assert rx.recvfrom(2048)[1] == s.source
