"""The send socket of the simulator and of ``replay_udp``: bound to one address, never 0.0.0.0.

A UDP socket that only ``sendto()``s is bound implicitly by the kernel at its first datagram,
to 0.0.0.0 and an ephemeral port: it then receives from every interface, and the packaged
default configuration (``simulate = yes``) held such a socket open for the whole run (issue 14).
Binding it explicitly to the address the frames leave from (the configured one, or the one the
route to the destination uses: 127.0.0.1 for loopback) keeps it on that interface.  Its own
module because the simulator and the replayer both use it and import neither each other.
"""

from __future__ import annotations

import socket

__all__ = ["route_source", "sender_socket"]


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
