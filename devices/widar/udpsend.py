"""The send socket of the simulator and of ``replay_udp``: bound to one address, never 0.0.0.0.

A UDP socket that only ``sendto()``s is bound implicitly by the kernel at its first datagram,
to 0.0.0.0 and an ephemeral port: it then receives from every interface, and the packaged
default configuration (``simulate = yes``) held such a socket open for the whole run (issue 14).
Binding it explicitly to the address the frames leave from (the configured one, or the one the
route to the destination uses: 127.0.0.1 for loopback) keeps it on that interface.  Its own
module because the simulator and the replayer both use it and import neither each other.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator

import numpy as np

from radlogger import mmsg

__all__ = ["route_source", "sender_socket", "send_blocks", "gso_segments"]

_UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)  # Linux >= 4.18
#: the kernel's UDP_MAX_SEGMENTS (64 before Linux 6.x raised it) and the largest UDP payload
_MAX_SEGMENTS, _MAX_PAYLOAD = 64, 65507


def route_source(dest: tuple[str, int]) -> str:
    """The local address the kernel sends from to reach ``dest`` (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(dest)  # UDP connect only picks the route and its source address
        return str(probe.getsockname()[0])


def sender_socket(dest: tuple[str, int], source: str | None = None,
                  sndbuf: int = 1 << 22) -> socket.socket:
    """An unconnected UDP socket bound to ``source`` (default: :func:`route_source`), port 0.

    OSError names the address when it cannot be bound (not an address of this host)."""
    src = source or route_source(dest)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        sock.bind((src, 0))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot send from {src}: {exc.strerror or exc} "
                      "(give an address of this host)") from None
    return sock


def gso_segments(sock: socket.socket, width: int) -> int:
    """Turn on UDP segmentation offload (``UDP_SEGMENT``) for ``width``-byte datagrams; the
    datagrams one send may carry, or 0 where the kernel has none (then nothing changed).

    With it one ``send`` of k rows leaves the kernel as k ordinary ``width``-byte datagrams
    (the receiver sees no difference but their arriving together, as from a NIC that
    coalesces interrupts), for about a third of the sender's CPU (1.3 against 4.0 us a
    1064-byte frame over loopback here).  ``RADLOGGER_NO_GSO=1`` turns it off."""
    if os.environ.get("RADLOGGER_NO_GSO", "") not in ("", "0") or not 0 < width <= 1472:
        return 0
    try:
        sock.setsockopt(socket.IPPROTO_UDP, _UDP_SEGMENT, width)
    except OSError:
        return 0
    return min(_MAX_SEGMENTS, _MAX_PAYLOAD // width)


def send_blocks(sock: socket.socket, dest: tuple[str, int], blocks: Iterator[np.ndarray],
                rate: float, frames: int, stop: threading.Event,
                burst: int = 64) -> tuple[int, int]:
    """Send the rows of each (M, L) uint8 block from ``blocks``, ``burst`` datagrams a call
    (UDP segmentation offload where the kernel has it, :func:`gso_segments`; else
    ``sendmmsg``), paced to ``rate`` datagrams/s (0: flat out), until ``frames`` rows
    (0: no limit) or ``stop``.  Returns (sent, failed): ``sent`` counts every row handed to
    the kernel, ``failed`` those it refused (ENOBUFS on a loaded loopback), which are not
    retried, as with one ``sendto`` per frame.

    The blocks are copied into one ring of rows whose message headers are built once, so a
    datagram costs the sender a share of one system call, not a Python call of its own."""
    ring: np.ndarray | None = None
    out: mmsg.Sender | None = None
    gso = 0
    sent = failed = 0
    t0 = time.monotonic()
    for block in blocks:
        if ring is None or ring.shape[1] != block.shape[1] or len(ring) < len(block):
            ring = np.empty_like(block, order="C")
            gso = gso_segments(sock, ring.shape[1]) if ring.shape[1] else 0
            out = None if gso else mmsg.Sender(sock, ring, dest)
        m = len(block)
        if frames:
            m = min(m, frames - sent)
        ring[:m] = block[:m]
        flat = memoryview(ring).cast("B")
        width = ring.shape[1]
        k = 0
        while k < m:
            if stop.is_set():
                return sent, failed
            if rate:
                ahead = sent / rate - (time.monotonic() - t0)
                if ahead > 0 and stop.wait(ahead):
                    return sent, failed
            if gso:
                n = min(burst, gso, m - k)
                try:
                    sock.sendto(flat[k * width:(k + n) * width], dest)
                    took = n
                except OSError:  # ENOBUFS: the whole send is lost
                    took = 0
                    failed += n - 1
            else:
                assert out is not None
                n = min(burst, m - k)
                try:
                    took = out.send(k, n)
                except OSError:
                    took = 0
            if took < n:  # the first refused row is lost; go on after it
                failed += 1
                took += 1 if not gso else n - took
            sent += took
            k += took
        if frames and sent >= frames:
            break
    return sent, failed
