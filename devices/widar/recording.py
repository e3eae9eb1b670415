"""Raw frame recordings: pcap files, rotated by size.

Why pcap and not a format of our own: every network tool reads it (``tcpdump -r``,
``tshark``, Wireshark), it stores exactly what we need (arrival time in ns, captured and
original length, the bytes) and a capture taken with ``tcpdump -w`` on the correlator network
can be replayed as it is.  We write the nanosecond variant with link type ``USER0`` (147: the
record is the bare UDP payload, one frame); we read that, microsecond pcaps, Ethernet and raw
IPv4 captures (UDP payloads extracted, anything else skipped).

Rotation: ``record = /data/widar.pcap`` writes ``/data/widar.000000.pcap``,
``/data/widar.000001.pcap``, ... each up to ``max_bytes``; ``keep`` bounds how many are kept
(0 = all).  Replay accepts a file, a glob, or the same base name (all its parts, in order).
"""

from __future__ import annotations

import glob
import os
import struct
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np

__all__ = ["RotatingRecorder", "recording_files", "read_frames", "LINKTYPE_USER0"]

LINKTYPE_USER0 = 147
_MAGIC_NS = 0xA1B23C4D
_MAGIC_US = 0xA1B2C3D4
_GLOBAL = struct.Struct("<IHHiIII")
_RECORD = struct.Struct("<IIII")


class RotatingRecorder:
    """Appends received datagrams to size-rotated pcap files (one writer thread)."""

    def __init__(self, path: str, max_bytes: int = 1 << 30, keep: int = 0,
                 snaplen: int = 65535) -> None:
        root, ext = os.path.splitext(path)
        self.root, self.ext = root, ext or ".pcap"
        self.max_bytes = max(int(max_bytes), 4096)
        self.keep = keep
        self.snaplen = snaplen
        self.index = self._next_index()
        self.files: list[str] = []
        self.frames = 0
        self.bytes = 0
        self._f: BinaryIO | None = None
        self._size = 0
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    def _name(self, i: int) -> str:
        return f"{self.root}.{i:06d}{self.ext}"

    def _next_index(self) -> int:
        """Continue after the parts already there (a restart never overwrites a recording)."""
        parts = _parts(self.root, self.ext)
        return int(parts[-1][len(self.root) + 1:-len(self.ext)]) + 1 if parts else 0

    def _open(self) -> None:
        name = self._name(self.index)
        self.index += 1
        self._f = open(name, "wb")  # owned here, closed by close()
        self._f.write(_GLOBAL.pack(_MAGIC_NS, 2, 4, 0, 0, self.snaplen, LINKTYPE_USER0))
        self._size = _GLOBAL.size
        self.files.append(name)
        if self.keep:
            for old in _parts(self.root, self.ext)[:-self.keep]:
                try:
                    os.remove(old)
                except OSError:
                    pass

    def _write(self, chunk: bytes) -> None:
        if self._f is None or (self._size + len(chunk) > self.max_bytes
                               and self._size > _GLOBAL.size):
            self.close()
            self._open()
        assert self._f is not None
        self._f.write(chunk)
        self._size += len(chunk)
        self.bytes += len(chunk)

    def write(self, buf: np.ndarray, lengths: np.ndarray, t_ns: np.ndarray) -> None:
        """Record rows of ``buf`` (B, W) with their true lengths and arrival times (ns)."""
        b = len(lengths)
        if not b:
            return
        lengths = np.asarray(lengths, np.int64)
        incl = np.minimum(lengths, buf.shape[1])
        head = np.empty((b, 4), "<u4")
        t = np.asarray(t_ns, np.int64)
        head[:, 0] = t // 1_000_000_000
        head[:, 1] = t % 1_000_000_000
        head[:, 2] = incl
        head[:, 3] = lengths
        first = int(incl[0])
        if (incl == first).all():
            rec = np.empty((b, _RECORD.size + first), np.uint8)
            rec[:, :_RECORD.size] = head.view(np.uint8)
            rec[:, _RECORD.size:] = buf[:b, :first]
            step = max(1, (self.max_bytes // 4) // rec.shape[1])  # rotate at record bounds
            for lo in range(0, b, step):
                self._write(rec[lo:lo + step].tobytes())
        else:
            for i in range(b):
                self._write(head[i].tobytes() + buf[i, :incl[i]].tobytes())
        self.frames += b

    def flush(self) -> None:
        if self._f is not None:
            self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


def _parts(root: str, ext: str) -> list[str]:
    pattern = glob.escape(root) + ".[0-9][0-9][0-9][0-9][0-9][0-9]" + glob.escape(ext)
    return sorted(glob.glob(pattern))


def recording_files(path: str) -> list[str]:
    """A file, a glob, or a rotation base name -> the files to replay, in order."""
    if os.path.isfile(path):
        return [path]
    if any(c in path for c in "*?["):
        return sorted(glob.glob(path))
    root, ext = os.path.splitext(path)
    return _parts(root, ext or ".pcap")


def _udp_payload(pkt: bytes, link: int) -> bytes | None:
    """UDP payload of an Ethernet (1) or raw IPv4 (101, 228) packet; None if not UDP/IPv4."""
    off = 0
    if link == 1:
        if len(pkt) < 14:
            return None
        etype = int.from_bytes(pkt[12:14], "big")
        off = 14
        while etype in (0x8100, 0x88A8) and len(pkt) >= off + 4:  # VLAN tags
            etype = int.from_bytes(pkt[off + 2:off + 4], "big")
            off += 4
        if etype != 0x0800:
            return None
    if len(pkt) < off + 20 or pkt[off] >> 4 != 4 or pkt[off + 9] != 17:
        return None
    ihl = (pkt[off] & 15) * 4
    total = int.from_bytes(pkt[off + 2:off + 4], "big")
    udp = off + ihl
    return pkt[udp + 8:off + total] if total else pkt[udp + 8:]


def read_frames(paths: list[str] | str) -> Iterator[tuple[int, int, bytes]]:
    """``(arrival ns, original length, datagram bytes)`` from pcap files, in file order.

    Raises ``ValueError`` naming the file when one is not a pcap capture.
    """
    for path in [paths] if isinstance(paths, str) else paths:
        with open(path, "rb") as f:
            head = f.read(_GLOBAL.size)
            if len(head) < _GLOBAL.size:
                raise ValueError(f"{path}: not a pcap file (too short)")
            magic_le = struct.unpack("<I", head[:4])[0]
            magic_be = struct.unpack(">I", head[:4])[0]
            if magic_le in (_MAGIC_NS, _MAGIC_US):
                order, magic = "<", magic_le
            elif magic_be in (_MAGIC_NS, _MAGIC_US):
                order, magic = ">", magic_be
            else:
                raise ValueError(f"{path}: not a pcap file (magic {head[:4].hex()}); record "
                                 "with radloggerd or tcpdump -w")
            link = struct.unpack(order + "I", head[20:24])[0] & 0xFFFF
            if link not in (LINKTYPE_USER0, 1, 101, 228):
                raise ValueError(f"{path}: pcap link type {link} is not supported (USER0, "
                                 "Ethernet or raw IPv4)")
            scale = 1 if magic == _MAGIC_NS else 1000
            rec = struct.Struct(order + "IIII")
            read = f.read
            while True:
                h = read(16)
                if len(h) < 16:
                    break
                sec, frac, incl, orig = rec.unpack(h)
                data = read(incl)
                if len(data) < incl:
                    break  # a recording cut short by a crash: keep what is complete
                if link != LINKTYPE_USER0:
                    payload = _udp_payload(data, link)
                    if payload is None:
                        continue
                    data, orig = payload, len(payload)
                yield sec * 1_000_000_000 + frac * scale, orig, data
