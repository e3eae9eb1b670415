"""Many datagrams per system call: Linux ``recvmmsg``/``sendmmsg`` through ctypes.

Python's socket module has no ``recvmmsg`` or ``sendmmsg``, and at a baseline board's line
rate (117,000 datagrams/s) one ``recv_into`` per datagram costs the receiving thread a system
call, a GIL release and re-acquire, and a Python-level loop iteration each: 3-5 us a datagram
on this machine, most of a core.  ``recvmmsg`` fills up to a whole batch of preallocated rows
in one call, with the GIL released for the call, and leaves the datagram lengths in an array
numpy reads without a Python object per datagram.  No maintained PyPI package wraps these two
calls for buffers we own (the asyncio/trio stacks do not; ``socket.recvmsg_into`` is one
datagram per call), so this module does it with ctypes against the C library, about sixty
lines.  On a platform without the calls (not Linux, or a libc without them) ``available()`` is
False and callers keep their one-datagram-per-call loop.

The buffers are numpy arrays the caller owns; the ``iovec`` and ``mmsghdr`` arrays here point
into them, so a :class:`Receiver` or :class:`Sender` keeps a reference to its array for as
long as it lives.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
from typing import Any

import numpy as np

from .libc import libc

__all__ = ["available", "Receiver", "Sender"]


class _IOVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [("msg_name", ctypes.c_void_p), ("msg_namelen", ctypes.c_uint32),
                ("msg_iov", ctypes.POINTER(_IOVec)), ("msg_iovlen", ctypes.c_size_t),
                ("msg_control", ctypes.c_void_p), ("msg_controllen", ctypes.c_size_t),
                ("msg_flags", ctypes.c_int)]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _MsgHdr), ("msg_len", ctypes.c_uint)]


class _SockAddrIn(ctypes.Structure):
    _fields_ = [("sin_family", ctypes.c_ushort), ("sin_port", ctypes.c_uint16),
                ("sin_addr", ctypes.c_uint8 * 4), ("sin_zero", ctypes.c_uint8 * 8)]


def _libc() -> Any:
    lib = libc()
    if lib is None:
        return None
    try:
        recv, send = lib.recvmmsg, lib.sendmmsg
    except AttributeError:  # a C library without the calls
        return None
    recv.argtypes = [ctypes.c_int, ctypes.POINTER(_MMsgHdr), ctypes.c_uint, ctypes.c_int,
                     ctypes.c_void_p]
    send.argtypes = [ctypes.c_int, ctypes.POINTER(_MMsgHdr), ctypes.c_uint, ctypes.c_int]
    recv.restype = send.restype = ctypes.c_int
    return lib


_LIBC = _libc()


def available() -> bool:
    """True where ``recvmmsg`` and ``sendmmsg`` can be called (Linux with glibc or musl)."""
    return _LIBC is not None and os.environ.get("RADLOGGER_NO_MMSG", "") in ("", "0")


def _headers(rows: np.ndarray) -> tuple[Any, Any]:
    """iovec + mmsghdr arrays, one per row of a C-contiguous 2-D uint8 array."""
    if rows.ndim != 2 or not rows.flags.c_contiguous:
        raise ValueError("rows must be a C-contiguous 2-D array")
    n, width = rows.shape
    iov = (_IOVec * n)()
    hdr = (_MMsgHdr * n)()
    base, stride = rows.ctypes.data, rows.strides[0]
    for k in range(n):
        iov[k].iov_base = base + k * stride
        iov[k].iov_len = width
        hdr[k].msg_hdr.msg_iov = ctypes.pointer(iov[k])
        hdr[k].msg_hdr.msg_iovlen = 1
    return iov, hdr


def _raise(what: str) -> None:
    err = ctypes.get_errno()
    if err in (errno.EAGAIN, errno.EWOULDBLOCK):
        raise BlockingIOError(err, os.strerror(err))
    raise OSError(err, f"{what}: {os.strerror(err)}")


class Receiver:
    """``recvmmsg`` into the rows of ``rows`` ((batch, width) uint8, C-contiguous).

    ``receive()`` returns how many datagrams were read (0 when none was queued); their
    lengths are ``lengths[:n]``: the datagram's real length, larger than ``width`` when it
    was truncated (``MSG_TRUNC``), as ``recv_into(..., MSG_TRUNC)`` reports it."""

    def __init__(self, sock: socket.socket, rows: np.ndarray) -> None:
        if _LIBC is None:
            raise OSError(errno.ENOSYS, "recvmmsg is not available here")
        self.sock, self.rows = sock, rows
        self._iov, self._hdr = _headers(rows)
        n = len(rows)
        off = _MMsgHdr.msg_len.offset
        raw = np.frombuffer(self._hdr, np.uint8)
        #: the kernel's msg_len of each message, a strided view (no copy per call)
        self._len = np.ndarray((n,), np.uint32, raw, off, (ctypes.sizeof(_MMsgHdr),))
        self._call = _LIBC.recvmmsg
        self._n = n
        self._dontwait = socket.MSG_DONTWAIT | socket.MSG_TRUNC

    def receive(self, limit: int = 0) -> int:
        """Read up to ``limit`` (default: every row) queued datagrams without blocking."""
        got = self._call(self.sock.fileno(), self._hdr, limit or self._n, self._dontwait, None)
        if got < 0:
            try:
                _raise("recvmmsg")
            except BlockingIOError:
                return 0
        return int(got)

    @property
    def lengths(self) -> np.ndarray:
        """Real lengths of the datagrams of the last ``receive()`` (index < its result): with
        ``MSG_TRUNC`` the kernel reports a truncated datagram's whole length."""
        return self._len


class Sender:
    """``sendmmsg`` of the rows of ``rows`` to one IPv4 destination."""

    def __init__(self, sock: socket.socket, rows: np.ndarray, dest: tuple[str, int]) -> None:
        if _LIBC is None:
            raise OSError(errno.ENOSYS, "sendmmsg is not available here")
        self.sock, self.rows = sock, rows
        self._iov, self._hdr = _headers(rows)
        host, port = socket.gethostbyname(dest[0]), int(dest[1])
        self._addr = _SockAddrIn(socket.AF_INET, socket.htons(port),
                                 (ctypes.c_uint8 * 4)(*socket.inet_aton(host)))
        for k in range(len(rows)):
            self._hdr[k].msg_hdr.msg_name = ctypes.addressof(self._addr)
            self._hdr[k].msg_hdr.msg_namelen = ctypes.sizeof(_SockAddrIn)
        self._call = _LIBC.sendmmsg
        self._size = ctypes.sizeof(_MMsgHdr)

    def send(self, start: int, count: int) -> int:
        """Send rows ``start .. start+count-1``; returns how many the kernel took (it may
        take fewer, e.g. ENOBUFS on a loaded loopback). OSError on a hard error."""
        ptr = ctypes.cast(ctypes.byref(self._hdr, start * self._size), ctypes.POINTER(_MMsgHdr))
        got = self._call(self.sock.fileno(), ptr, count, 0)
        if got < 0:
            _raise("sendmmsg")
        return int(got)
