"""Shared-memory slots for what does not fit one datagram.

A Unix datagram is limited by the socket buffers (about 200 KiB by default), a long lag set or
a wide spectrum can be bigger.  Such a message is written into a free slot of a ring in shared
memory and only a 20-byte reference (slot, length, generation) travels on the socket, so it
stays ordered with the other datagrams.  Each slot has a 16-byte header: state (0 free,
1 full), length, generation.  The writer fills a free slot and marks it full; the reader copies
the payload out and marks it free.  One writer and one reader per ring, so no lock is needed;
the generation lets the reader reject a reference to a slot that was reused or reset (after a
pipeline process was restarted).

The parent creates the segment with ``multiprocessing.shared_memory`` (its resource tracker
unlinks it should the parent die) and unlinks it at stop.  The child maps the same segment by
name from ``/dev/shm`` with ``mmap``: attaching through ``SharedMemory`` on Python < 3.13 would
register the segment with a resource tracker in the child too, which would unlink it when the
child exits (a crash would then take the segment away from its restarted successor).
"""

from __future__ import annotations

import mmap
import os
import time
from multiprocessing import shared_memory
from typing import Any

import numpy as np

__all__ = ["SlotRing"]

_SLOT_HEAD = np.dtype([("state", "<u4"), ("length", "<u4"), ("gen", "<u8")])
FREE, FULL = 0, 1


class SlotRing:
    """A ring of ``slots`` slots of ``slot_bytes`` each; created (parent) or attached (child)."""

    def __init__(self, slots: int, slot_bytes: int, name: str | None = None,
                 create: bool = False) -> None:
        self.slots = slots
        self.slot_bytes = slot_bytes
        self.stride = 16 + slot_bytes
        size = slots * self.stride
        self._shm: shared_memory.SharedMemory | None = None
        self._mmap: mmap.mmap | None = None
        if create:
            self._shm = shared_memory.SharedMemory(name=name, create=True, size=size)
            self.name = self._shm.name
            buf: Any = self._shm.buf
        else:
            if name is None:
                raise ValueError("attaching to a slot ring needs its name")
            fd = os.open(f"/dev/shm/{name.lstrip('/')}", os.O_RDWR)
            try:
                self._mmap = mmap.mmap(fd, size)
            finally:
                os.close(fd)
            self.name = name
            buf = self._mmap
        self.buf = memoryview(buf)
        self.heads = np.ndarray((slots,), _SLOT_HEAD, buffer=self.buf, offset=0,
                                strides=(self.stride,))
        self._next = 0
        self._gen = 0
        self.full_count = 0  # writes refused because every slot was full

    def reset(self) -> None:
        """Mark every slot free (the peer process is gone)."""
        self.heads["state"] = FREE

    def _free_slot(self) -> int | None:
        state = self.heads["state"]
        for k in range(self.slots):
            slot = (self._next + k) % self.slots
            if state[slot] == FREE:
                return slot
        return None

    def has_free(self) -> bool:
        return self._free_slot() is not None

    def write(self, parts: list[Any], size: int, wait: float = 0.0) -> tuple[int, int] | None:
        """Copy ``parts`` into a free slot; (slot, generation), or None when all stay full.

        The reader frees slots without telling us, so a full ring is polled (every 0.5 ms)
        for up to ``wait`` seconds: this is the rare path of oversize messages.
        """
        if size > self.slot_bytes:
            raise ValueError(f"{size} bytes do not fit a {self.slot_bytes}-byte slot")
        slot = self._free_slot()
        if slot is None and wait > 0:
            deadline = time.monotonic() + wait
            while slot is None and time.monotonic() < deadline:
                time.sleep(0.0005)
                slot = self._free_slot()
        if slot is None:
            self.full_count += 1
            return None
        state = self.heads["state"]
        self._next = (slot + 1) % self.slots
        off = slot * self.stride + 16
        buf = self.buf
        for p in parts:
            n = len(p) if not isinstance(p, memoryview) else p.nbytes
            buf[off:off + n] = p
            off += n
        self._gen += 1
        heads = self.heads
        heads["length"][slot] = size
        heads["gen"][slot] = self._gen
        state[slot] = FULL  # last: the reader trusts a full slot's length and generation
        return slot, self._gen

    def read(self, slot: int, length: int, generation: int) -> bytes | None:
        """The payload of a referenced slot (copied out, slot freed); None if stale."""
        if not 0 <= slot < self.slots:
            return None
        heads = self.heads
        if heads["state"][slot] != FULL or heads["gen"][slot] != generation \
                or heads["length"][slot] != length or length > self.slot_bytes:
            return None
        off = slot * self.stride + 16
        data = bytes(self.buf[off:off + length])
        heads["state"][slot] = FREE
        return data

    def close(self, unlink: bool = False) -> None:
        heads = getattr(self, "heads", None)
        if heads is not None:
            del self.heads
        self.buf.release()
        if self._shm is not None:
            self._shm.close()
            if unlink:
                try:
                    self._shm.unlink()
                except FileNotFoundError:
                    pass
            self._shm = None
        if self._mmap is not None:
            self._mmap.close()
            self._mmap = None
