"""UF2 (Microsoft's USB flashing format), as the RP2350 bootloader takes it: write and read.

512-byte blocks, little-endian: magic ``0x0A324655``, ``0x9E5D5157``, flags (``0x2000`` =
family id present), target address, payload size (256 for RP chips), block number, number of
blocks, family id, 476 bytes of data (the payload, then zeros), end magic ``0x0AB16F30``.
Family ids from the RP2350 datasheet; flash starts at ``0x10000000``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from radlogger.errors import ProtocolError

__all__ = ["Uf2Error", "Uf2Image", "FAMILIES", "RP2350_ARM_S", "FLASH_START", "bin_to_uf2",
           "read_uf2", "BLOCK", "PAYLOAD"]

MAGIC_START0 = 0x0A324655
MAGIC_START1 = 0x9E5D5157
MAGIC_END = 0x0AB16F30
FLAG_FAMILY_ID = 0x00002000
FLAG_NOT_MAIN_FLASH = 0x00000001
BLOCK = 512
PAYLOAD = 256
FLASH_START = 0x10000000
FAMILIES = {"rp2040": 0xE48BFF56, "absolute": 0xE48BFF57, "data": 0xE48BFF58,
            "rp2350-arm-s": 0xE48BFF59, "rp2350-riscv": 0xE48BFF5A, "rp2350-arm-ns": 0xE48BFF5B}
RP2350_ARM_S = FAMILIES["rp2350-arm-s"]
_HEAD = struct.Struct("<8I")


class Uf2Error(ProtocolError):
    """Not a UF2 this board takes (the message names the block and the field)."""


@dataclass(frozen=True)
class Uf2Image:
    family: int
    address: int
    data: bytes
    blocks: int


def bin_to_uf2(data: bytes, family: int = RP2350_ARM_S, address: int = FLASH_START) -> bytes:
    """A ``.bin`` image as UF2 blocks of 256 payload bytes each, from ``address``."""
    chunks = [data[i:i + PAYLOAD] for i in range(0, len(data), PAYLOAD)] or [b""]
    n = len(chunks)
    out = bytearray()
    for i, chunk in enumerate(chunks):
        out += _HEAD.pack(MAGIC_START0, MAGIC_START1, FLAG_FAMILY_ID, address + i * PAYLOAD,
                          PAYLOAD, i, n, family)
        out += chunk.ljust(476, b"\0")
        out += struct.pack("<I", MAGIC_END)
    return bytes(out)


def read_uf2(blob: bytes, family: int | None = RP2350_ARM_S) -> Uf2Image:
    """The image in ``blob``, checked as the bootloader checks it (magics, block numbers and
    count, family id when ``family`` is given, contiguous addresses)."""
    if not blob or len(blob) % BLOCK:
        raise Uf2Error(f"a UF2 file is a whole number of {BLOCK}-byte blocks; got "
                       f"{len(blob)} bytes")
    total = len(blob) // BLOCK
    data = bytearray()
    first = fam = None
    for i in range(total):
        block = blob[i * BLOCK:(i + 1) * BLOCK]
        m0, m1, flags, addr, size, number, count, fid = _HEAD.unpack_from(block)
        (end,) = struct.unpack_from("<I", block, BLOCK - 4)
        if (m0, m1, end) != (MAGIC_START0, MAGIC_START1, MAGIC_END):
            raise Uf2Error(f"block {i}: bad magic")
        if number != i or count != total:
            raise Uf2Error(f"block {i}: says block {number} of {count}, the file has {total}")
        if size > 476:
            raise Uf2Error(f"block {i}: payload size {size} > 476")
        if not flags & FLAG_FAMILY_ID:
            raise Uf2Error(f"block {i}: no family id (flag 0x2000)")
        if family is not None and fid != family:
            raise Uf2Error(f"block {i}: family id 0x{fid:08X}, this board takes "
                           f"0x{family:08X}")
        if first is None:
            first, fam = addr, fid
        elif addr != first + len(data):
            raise Uf2Error(f"block {i}: address 0x{addr:08X} is not contiguous")
        data += block[32:32 + size]
    assert first is not None and fam is not None
    return Uf2Image(fam, first, bytes(data), total)
