"""The simulated WSA4000's instrument model: settings, SCPI semantics, and packets.

Separate from the transport (``simulator.py``: sockets, threads, the command line) so the
instrument's behaviour can be read on its own: what each command does, what the error queue
holds, which context packets precede the data and how counters, timestamps and trailers run.
Capturing and streaming need the data connection, so :class:`Instrument` leaves those four
operations (``_capture``, ``_start_stream``, ``_stop_stream``, ``_streaming``) to the
simulator.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import numpy as np

from radlogger.errors import ProtocolError

from .scpi import Command, Parsed, check_value, lookup
from .vrt import (
    DIGITIZER_STREAM,
    EXT_STREAM,
    IQ_STREAM,
    RECEIVER_STREAM,
    data_header,
    encode_context,
    trailer_word,
)
from .waveform import FULL_BW, SampleRing, Tone, parse_tone

__all__ = ["Instrument", "InstrumentState", "InstrumentError", "Received", "REFLEVELS",
           "RF_GAIN_DB"]

#: simulator model (not a calibration): full-scale reference level per RF gain, at IF gain 0
REFLEVELS = {"VLOW": 0.0, "LOW": -10.0, "MEDIUM": -20.0, "HIGH": -30.0}
#: receiver gain context, stage 1, per RF gain word (stage 2 is the IF gain)
RF_GAIN_DB = {"VLOW": -10.0, "LOW": 0.0, "MEDIUM": 10.0, "HIGH": 20.0}
_PS_PER_SAMPLE = 8000  # at 125 MSa/s


@dataclass(frozen=True)
class InstrumentState:
    """The settings a client can change; ``*RST`` restores these defaults."""

    freq: int = 2_400_000_000
    shift: float = 0.0
    decimation: int = 1
    rf_gain: str = "HIGH"
    if_gain: int = 0
    preselect: bool = False
    antenna: int = 1
    trigger_type: str = "NONE"
    trigger_level: str = "2400000000,2410000000,-50"
    spp: int = 1024
    ppb: int = 1


class Received(NamedTuple):
    """One command as received: control connection number, table key (None: unknown), text."""

    conn: int
    key: str | None
    text: str


class InstrumentError(ProtocolError):
    """A command the instrument refuses: queued as ``code,\"message\"``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class Instrument:
    """Settings, error queue, acquisition lock and packet generation of one WSA4000."""

    def __init__(self, tones: Iterable[Tone | str] = (), noise: float = 1e-3, seed: int = 0,
                 spectral_inversion: bool = False, reflevel: float | None = None,
                 drop_every: int = 0, ring_samples: int = 1 << 18, serial: str = "SIM00001",
                 firmware: str = "3.2.0-sim") -> None:
        self.tones = tuple(parse_tone(t) if isinstance(t, str) else t for t in tones)
        self.noise = noise
        self.seed = seed
        self.spectral_inversion = spectral_inversion
        self.fixed_reflevel = reflevel
        self.drop_every = drop_every
        self.ring_samples = ring_samples
        self.serial = serial
        self.firmware = firmware
        self.state = InstrumentState()
        self.commands: list[Received] = []
        self.errors: list[tuple[int, str]] = []  # the instrument's error queue
        self.captures = 0
        self.packets_sent = 0
        self.dropped_packets = 0
        self._lock = threading.RLock()  # state, error queue, lock owner, counters
        self._lock_owner: int | None = None
        self._ring: SampleRing | None = None
        self._ring_key: tuple[Any, ...] = ()
        self._slot = 0
        self._data_index = 0
        self._counts: dict[int, int] = {}
        self._template: tuple[Any, np.ndarray] | None = None  # (ring, packets of every slot)

    # ---------------------------------------------------------------- transport hooks
    def _capture(self, cid: int) -> None:
        raise NotImplementedError

    def _start_stream(self, cid: int, raw_id: str) -> None:
        raise NotImplementedError

    def _stop_stream(self) -> None:
        raise NotImplementedError

    def _streaming(self) -> bool:
        raise NotImplementedError

    def release(self, cid: int) -> None:
        """Control connection ``cid`` went away: its acquisition lock is free again."""
        with self._lock:
            if self._lock_owner == cid:
                self._lock_owner = None

    # ---------------------------------------------------------------- SCPI
    def _error(self, code: int, message: str) -> None:
        with self._lock:
            if len(self.errors) < 100:
                self.errors.append((code, message))

    def execute(self, cid: int, p: Parsed) -> str | None:
        """Run one received command; the reply line for a query, else None."""
        cmd = lookup(p.header)
        text = p.header + ("?" if p.query else "") + (" " + ",".join(p.args) if p.args else "")
        with self._lock:
            self.commands.append(Received(cid, cmd.key if cmd else None, text))
        try:
            if cmd is None or (p.query and not cmd.query) or (not p.query and not cmd.set):
                raise InstrumentError(-113, f"Undefined header; {text}")
            if p.query:
                return self._query(cid, cmd, p.args)
            self._set(cid, cmd, p.args)
        except InstrumentError as exc:
            self._error(exc.code, str(exc))
        except ValueError as exc:
            self._error(-224, f"Illegal parameter value; {exc}")
        return None

    def _query(self, cid: int, cmd: Command, args: list[str]) -> str | None:
        key = cmd.key
        with self._lock:
            s = self.state
            if key == "idn":
                return f"ThinkRF,WSA4000 v2,{self.serial},{self.firmware}"
            if key in ("lock_request", "lock_have"):
                check_value(cmd, args[0] if args else "ACQ")
                if key == "lock_request" and self._lock_owner in (None, cid):
                    self._lock_owner = cid
                return "1" if self._lock_owner == cid else "0"
            if key == "error":
                if not self.errors:
                    return '0,"No error"'
                code, message = self.errors.pop(0)
                return f'{code},"{message}"'
            if key == "stream_status":
                return "RUNNING" if self._streaming() else "STOPPED"
            if key in ("lock_rf", "lock_reference"):
                return "1"
            if key == "if_gain":
                return f"{s.if_gain} dB"
            if key == "preselect":
                return "1" if s.preselect else "0"
            if key == "shift":
                return repr(float(s.shift))
            if key != "block_data":
                return str(getattr(s, key))
        self._capture(cid)
        return None

    def _set(self, cid: int, cmd: Command, args: list[str]) -> None:
        key = cmd.key
        if key == "rst":
            self._stop_stream()
            with self._lock:
                self.state = InstrumentState()
            return
        if key in ("stream_stop", "abort"):
            self._stop_stream()
            return
        if key == "flush":
            return
        if key == "stream_start":
            self._start_stream(cid, args[0] if args else "0")
            return
        if key == "lock_release":
            self.release(cid)
            return
        if key == "trigger_level":
            value: Any = ",".join(args)
        else:
            try:
                value = check_value(cmd, args[0] if args else "")
            except ValueError as exc:
                raise InstrumentError(-222, f"Data out of range; {exc}") from None
        if key == "decimation" and value not in (1,) and not 4 <= value <= 1023:
            raise InstrumentError(-222, f"Data out of range; {cmd.form}: {value} is not 1 or "
                                        "4..1023")
        with self._lock:
            if self._streaming():
                raise InstrumentError(-221, f"Settings conflict; {cmd.form} while streaming")
            self.state = replace(self.state, **{key: value})

    # ---------------------------------------------------------------- signal and packets
    def reflevel(self, state: InstrumentState | None = None) -> float:
        s = state or self.state
        if self.fixed_reflevel is not None:
            return self.fixed_reflevel
        return REFLEVELS[s.rf_gain] - s.if_gain

    def ring(self, state: InstrumentState | None = None) -> SampleRing:
        """The signal for the current settings (rebuilt when SPP, decimation or level change)."""
        s = state or self.state
        key = (s.spp, s.decimation, self.reflevel(s))
        if self._ring is None or key != self._ring_key:
            self._ring = SampleRing(self.tones, self.noise, self.seed, s.spp, s.decimation,
                                    key[2], self.spectral_inversion, self.ring_samples)
            self._ring_key = key
            self._slot = 0
        return self._ring

    def _count(self, stream: int) -> int:
        c = self._counts.get(stream, 0)
        self._counts[stream] = (c + 1) & 0xF
        return c

    def _contexts(self, s: InstrumentState, t_ps: int, extra: dict[str, Any] | None = None
                  ) -> list[bytes]:
        """Context packets, one field each, in the order a WSA sends them before data."""
        sec, ps = divmod(t_ps, 10 ** 12)
        fields: list[tuple[int, dict[str, Any]]] = []
        if extra:
            fields.append((EXT_STREAM, extra))
        fields += [
            (RECEIVER_STREAM, {"rf_freq": s.freq}),
            (RECEIVER_STREAM, {"gain": (RF_GAIN_DB[s.rf_gain], float(s.if_gain))}),
            (DIGITIZER_STREAM, {"bandwidth": FULL_BW / s.decimation}),
            (DIGITIZER_STREAM, {"reflevel": self.reflevel(s)}),
        ]
        return [encode_context(sid, f, self._count(sid), sec, ps) for sid, f in fields]

    def _data_packets(self, s: InstrumentState, ring: SampleRing, n: int, t0_ps: int,
                      first: int, lossy: bool) -> Iterator[bytes | memoryview]:
        """Header, payload and trailer pieces of ``n`` data packets (``first`` = index from t0)."""
        step = s.spp * _PS_PER_SAMPLE * s.decimation
        inv = self.spectral_inversion
        trailers = {(o, lo): trailer_word(spectral_inversion=inv, over_range=o,
                                          sample_loss=lo).to_bytes(4, "big")
                    for o in (False, True) for lo in (False, True)}
        every = self.drop_every if lossy else 0
        for j in range(first, first + n):
            index = self._data_index
            self._data_index += 1
            slot = self._slot
            self._slot = (slot + 1) % ring.slots
            count = self._count(IQ_STREAM)
            if every and (index + 1) % every == 0:
                self.dropped_packets += 1  # lost before the wire; the counter still advanced
                continue
            loss_next = bool(every) and (index + 2) % every == 0
            sec, ps = divmod(t0_ps + j * step, 10 ** 12)
            yield data_header(count, s.spp, sec, ps)
            yield ring.payload(slot)
            yield trailers[(bool(ring.over_range[slot]), loss_next)]
            self.packets_sent += 1

    def _data_block(self, s: InstrumentState, ring: SampleRing, n: int, t0_ps: int,
                    first: int) -> np.ndarray:
        """``n`` loss-free data packets as one buffer: what :meth:`_data_packets` yields.

        Why: the streamer at line rate (28,400 packets/s at SPP 1024) built three pieces per
        packet in Python and joined them, ~0.2 cores taken from the client under test.  Here
        the packets of every ring slot are built once; a batch is one fancy-index copy of
        the template rows plus vectorised patches of the packet count and the timestamps.
        """
        tpl = self._template
        if tpl is None or tpl[0] is not ring:
            inv = self.spectral_inversion
            rows = [data_header(0, s.spp, 0, 0) + bytes(ring.payload(k)) + trailer_word(
                spectral_inversion=inv, over_range=bool(ring.over_range[k])).to_bytes(4, "big")
                for k in range(ring.slots)]
            tpl = self._template = (ring, np.frombuffer(b"".join(rows), np.uint8).reshape(
                ring.slots, -1))
        slot0, count0 = self._slot, self._counts.get(IQ_STREAM, 0)
        k = np.arange(n, dtype=np.int64)
        out = tpl[1][(slot0 + k) % ring.slots]
        out[:, 1] = (out[:, 1] & 0xF0) | ((count0 + k) & 0xF).astype(np.uint8)
        sec0, ps0 = divmod(t0_ps, 10 ** 12)
        ps = ps0 + (first + k) * (s.spp * _PS_PER_SAMPLE * s.decimation)
        sec = sec0 + ps // 10 ** 12
        out[:, 8:12] = sec.astype(">u4").view(np.uint8).reshape(n, 4)
        out[:, 12:20] = (ps % 10 ** 12).astype(">u8").view(np.uint8).reshape(n, 8)
        self._slot = (slot0 + n) % ring.slots
        self._counts[IQ_STREAM] = (count0 + n) & 0xF
        self._data_index += n
        self.packets_sent += n
        return out
