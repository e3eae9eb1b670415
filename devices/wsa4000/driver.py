"""The ThinkRF WSA4000 driver: SCPI control on TCP 37001, VRT I/Q on TCP 37000.

One measurement per data packet on ``<name>.iq``: the samples as complex64 counts (full scale
8192) or native int16 (spp, 2) pairs, with the context seen so far merged into ``meta``
(``rf_freq``, ``gain``, ``bandwidth``, ``reflevel``, ...), the packet count and the trailer flags.
``device_time`` is the VRT timestamp in ns since the epoch; ``t_ns`` the host clock on arrival.

Why each step: ``*RST`` then the settings gives a known state whatever the last client left;
the acquisition lock keeps a second client from retuning the instrument under us; settings are
re-sent on every (re)connect because an instrument that was power-cycled has forgotten them;
``:SYSTEM:ERROR?`` after applying turns a rejected setting into a clear, counted error instead
of silently wrong data.

``simulate = yes`` runs a :class:`~radlogger.devices.wsa4000.simulator.WSA4000Simulator`
in-process on
127.0.0.1 (free ports, so several daemons and a real instrument never collide) and connects to
it exactly as to an instrument: same SCPI session, same VRT parser.  The simulator starts at
the first connect, is re-used by reconnects and stops with the device (``SimulatorHost``).
"""

from __future__ import annotations

import logging
import socket
import time
from collections import Counter
from typing import Any

from radlogger.device import Device
from radlogger.devices.simhost import SimulatorHost, SimulatorOwner
from radlogger.options import Option, OptionError, by_reason

from .publish import PacketPublisher
from .scpi import (
    COMMANDS,
    DEFAULT_CONTROL_PORT,
    DEFAULT_DATA_PORT,
    RF_GAINS,
    SCPIClient,
    SCPIError,
)
from .vrtparser import VRTParser
from .waveform import Tone, parse_tone

__all__ = ["WSA4000Device"]

log = logging.getLogger(__name__)

_C = COMMANDS
_RECV = 1 << 20
_POLL_TIMEOUT = 0.2
_CAPTURE = COMMANDS["block_data"].form + "?"
_SIM_HOST = "127.0.0.1"


class WSA4000Device(PacketPublisher, SimulatorOwner, Device):
    kind = "wsa4000"
    summary = "ThinkRF WSA4000 spectrum analyzer: I/Q packets over SCPI + VITA-49 (TCP)"
    quantities = ("iq",)
    options = (
        Option("host", str, None, "instrument address (required unless simulate = yes)"),
        Option("control_port", int, DEFAULT_CONTROL_PORT, "SCPI control port (ignored with "
               "simulate = yes)", min=1, max=65535),
        Option("data_port", int, DEFAULT_DATA_PORT, "VRT data port (ignored with simulate = "
               "yes)", min=1, max=65535),
        Option("freq", float, 2.4e9, "centre frequency in Hz (100 kHz steps)",
               min=_C["freq"].min, max=_C["freq"].max),
        Option("shift", float, 0.0, "frequency shift in Hz", min=_C["shift"].min,
               max=_C["shift"].max),
        Option("decimation", int, 1, "decimation: 1 (off) or 4..1023", min=1, max=1023),
        Option("rf_gain", str, "HIGH", "RF gain", choices=RF_GAINS),
        Option("if_gain", int, 0, "IF gain in dB", min=_C["if_gain"].min,
               max=_C["if_gain"].max),
        Option("antenna", int, None, "antenna port 1 or 2 (unset: leave as is)", min=1, max=2),
        Option("preselect", bool, None, "preselect filter on/off (unset: leave as is)"),
        Option("spp", int, 1024, "samples per packet: 128..65520, a multiple of 16",
               min=_C["spp"].min, max=_C["spp"].max),
        Option("ppb", int, 1, "packets per block capture", min=1),
        Option("mode", str, "block", "block: repeated block captures at 'rate'; stream: "
               "continuous streaming", choices=("block", "stream")),
        Option("rate", float, 10.0, "block captures per second (0 = back to back)", min=0),
        Option("stream_id", int, 0, "id sent with :TRACE:STREAM:START", min=0,
               max=0xFFFFFFFF),
        Option("iq_format", str, "complex64", "sample format of the published arrays",
               choices=("complex64", "int16")),
        Option("group", str, "packet", "packet: one measurement per data packet (value (spp,)); "
               "read: one per run of packets of one read (value (k, spp), meta packets = k, "
               "device_times per row), for SPP 1024 at line rate", choices=("packet", "read")),
        Option("reset", bool, True, "send *RST before applying the settings"),
        Option("lock", bool, True, "take the acquisition lock (fail if another client has it)"),
        Option("timeout", float, 5.0, "seconds without an expected reply or packet before "
               "the connection is considered lost", min=0.1),
        Option("simulate", bool, False, "run a simulated WSA4000 in-process on 127.0.0.1 (free "
               "ports) and connect to it over the real SCPI + VRT protocol; no host needed"),
        Option("sim_tones", list, ["5e6:-40dBm", "-20e6:-60dBm"], "simulator: tones as "
               "OFFSET_HZ:AMPLITUDE from the centre, amplitude a fraction of full scale or "
               "dBm (e.g. 1e6:0.5, -2e6:-30dBm)"),
        Option("sim_noise", float, 1e-3, "simulator: noise std per I/Q component, fraction of "
               "full scale", min=0),
        Option("sim_seed", int, 0, "simulator: noise seed"),
    )

    def __init__(self, name: str, settings: Any = None, **kw: Any) -> None:
        super().__init__(name, settings, **kw)
        s = self.settings
        if s.simulate and s.host:
            raise OptionError("host", f"device {name}: host and simulate = yes exclude each "
                              "other (the simulator listens on 127.0.0.1, free ports); remove "
                              "host or set simulate = no")
        if not s.simulate and not s.host:
            raise OptionError("host", f"device {name}: host is not set: add host = <instrument "
                              "address>, or simulate = yes for a simulated instrument")
        self.sim_tones: list[Tone] = []
        for text in s.sim_tones:
            try:
                self.sim_tones.append(parse_tone(text))
            except ValueError as exc:
                raise OptionError("sim_tones", f"sim_tones: {exc}") from None
        if round(s.freq) % 100_000:
            raise OptionError("freq", f"freq = {s.freq:.0f}: must be a multiple of 100 kHz, "
                              f"e.g. {round(s.freq / 1e5) * 1e5:.0f}")
        if s.decimation != 1 and s.decimation < 4:
            raise OptionError("decimation", f"decimation = {s.decimation}: must be 1 (off) or "
                              "4..1023")
        if s.spp % 16:
            raise OptionError("spp", f"spp = {s.spp}: must be a multiple of 16, e.g. "
                              f"{s.spp // 16 * 16 or 128}")
        self.parser = VRTParser()
        #: per-reason counts of non-fatal problems (parser skips, gaps, sample loss, ...)
        self.bad_packets: Counter[str] = Counter()
        self.idn = ""
        self.connects = 0
        self.packets = 0
        self.blocks = 0  # group = read: measurements of k packets each
        self.gaps = 0
        self.missing_packets = 0
        self.context: dict[str, Any] = {}
        self._ctl: SCPIClient | None = None
        self._data: socket.socket | None = None
        self._expect: int | None = None
        self._pending_gap = 0
        self._remaining = 0  # data packets still due in the current block
        self._next_capture = 0.0
        self._last_data = 0.0
        self._parser_seen: Counter[str] = Counter()
        self._topic = f"{name}.iq"
        self._per_read = s.group == "read"
        self._static_meta: dict[str, Any] = {}
        self._flag_cache: dict[int, dict[str, bool]] = {}  # trailer word -> its flags
        self._opening = False
        #: where the instrument is: the configured one, or the simulator's free ports
        self.host: str = s.host or _SIM_HOST
        self.control_port: int = s.control_port
        self.data_port: int = s.data_port
        #: the in-process simulator (simulate = yes), started at the first connect
        self.sim: SimulatorHost[Any] | None = (
            SimulatorHost(self, self._start_simulator, lambda sim: sim.stop())
            if s.simulate else None)

    def counters(self) -> dict[str, int | float]:
        return {**super().counters(), "connects": self.connects, "packets": self.packets,
                "blocks": self.blocks,
                "gaps": self.gaps, "missing_packets": self.missing_packets,
                "resync_bytes": self.bad_packets["skipped_bytes"]
                + self.bad_packets["discarded_bytes"],
                **by_reason("bad_packets", self.bad_packets)}

    def describe(self) -> str:
        return f"{self.idn} at {self.host}:{self.control_port}"

    def _start_simulator(self) -> Any:
        from .simulator import WSA4000Simulator  # only simulating daemons need it

        s = self.settings
        sim = WSA4000Simulator(_SIM_HOST, 0, 0, self.sim_tones, s.sim_noise, s.sim_seed,
                               ring_samples=max(1 << 15, 4 * s.spp * s.ppb),
                               serial=f"SIM-{self.name}"[:32])
        sim.start()
        return sim

    # ---------------------------------------------------------------- connection
    def open(self) -> None:
        self._opening = True
        try:
            self._open()
        finally:
            self._opening = False

    def _open(self) -> None:
        s = self.settings
        self.connects += 1
        if self.sim is not None:
            sim = self.sim.get()
            self.control_port, self.data_port = sim.control_port, sim.data_port
        host = self.host
        ctl = self._ctl = SCPIClient(host, self.control_port, s.timeout)
        self.idn = ctl.query(":*IDN?")
        parts = self.idn.split(",")
        if len(parts) < 2 or not parts[1].strip().upper().startswith("WSA4"):
            raise SCPIError(f"{host}:{self.control_port} is not a WSA4000 (*IDN? answered "
                            f"{self.idn!r}); check host and control_port")
        if s.reset:
            ctl.set("rst")
        for _ in range(100):  # forget errors of earlier sessions: ours are checked below
            if ctl.get("error").startswith("0"):
                break
        if s.lock and ctl.get("lock_request", "ACQ") != "1":
            raise SCPIError(f"{host}: another client holds the acquisition lock; retrying")
        ctl.set("if_gain", s.if_gain)
        ctl.set("freq", int(round(s.freq)))
        ctl.set("rf_gain", s.rf_gain)
        ctl.set("shift", repr(float(s.shift)))
        ctl.set("decimation", s.decimation)
        if s.antenna is not None:
            ctl.set("antenna", s.antenna)
        if s.preselect is not None:
            ctl.set("preselect", int(s.preselect))
        ctl.set("spp", s.spp)
        ctl.set("ppb", s.ppb)
        error = ctl.get("error")
        if not error.startswith("0"):
            raise SCPIError(f"{host} rejected a setting: {error}; check the [device] options")
        try:
            data = socket.create_connection((host, self.data_port), timeout=s.timeout)
        except OSError as exc:
            raise SCPIError(f"cannot connect to the WSA data port {host}:{self.data_port}: "
                            f"{exc}") from exc
        data.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        data.settimeout(_POLL_TIMEOUT)
        self._data = data
        self.parser.reset()  # a partial packet of the last connection is counted, not parsed
        self._fold_parser_counts()
        self.context = {}
        self._expect = None
        self._pending_gap = 0
        self._remaining = 0
        self._static_meta = {"spp": s.spp, "decimation": s.decimation}
        self._last_data = time.monotonic()
        if s.mode == "stream":
            ctl.set("stream_start", s.stream_id)
        else:
            self._next_capture = time.monotonic()

    def close(self) -> None:
        ctl, self._ctl = self._ctl, None
        data, self._data = self._data, None
        if ctl is not None:
            if self.settings.mode == "stream" and data is not None:
                try:
                    ctl.set("stream_stop")
                except SCPIError:
                    pass
            ctl.close()
        if data is not None:
            try:
                data.close()
            except OSError:
                pass
        # a packet cut off by the close is accounted for now, not at a next open that a stop
        # never reaches; a stop cutting a stream is expected, so then it is no error
        if self.stopping:
            lost = self.parser.reset()
            if lost:
                self.bad_packets["discarded_bytes"] += lost
                self._parser_seen["discarded_bytes"] = self.parser.counts["discarded_bytes"]
        else:
            self.parser.reset()
            self._fold_parser_counts()
        if self.sim is not None and self.stopping:
            self.sim.release()  # the device thread ends, and with it its simulator

    def interrupt(self) -> None:
        """Unblock the driver thread.  The control connection is cut only while connecting
        (a query may be waiting on it); once running it stays up so that ``close`` can still
        stop a stream politely."""
        socks = [self._data]
        if self._opening and self._ctl is not None:
            socks.append(self._ctl.sock)
        for sock in socks:
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    # ---------------------------------------------------------------- reading
    def poll(self) -> None:
        s = self.settings
        data = self._data
        ctl = self._ctl
        if data is None or ctl is None:
            raise ConnectionError("not connected")
        now = time.monotonic()
        if s.mode == "block" and self._remaining <= 0:
            if now < self._next_capture:
                self.wait(min(_POLL_TIMEOUT, self._next_capture - now))
                return
            self._remaining = s.ppb
            self._last_data = now
            self._next_capture = max(now, self._next_capture + (1.0 / s.rate if s.rate else 0))
            ctl.send(_CAPTURE)  # no reply on the control port; packets follow on data
        try:
            chunk = data.recv(_RECV)
        except TimeoutError:
            if time.monotonic() - self._last_data > s.timeout:
                raise TimeoutError(f"no data from {self.host}:{self.data_port} for {s.timeout:g} s"
                                   ) from None
            return
        if not chunk:
            raise ConnectionError(f"{self.host} closed the data connection")
        self._last_data = time.monotonic()
        packets = self.parser.feed(chunk)
        self._fold_parser_counts()
        if packets:
            self._handle(packets)

    def _fold_parser_counts(self) -> None:
        """Move new parser problem counts into :attr:`bad_packets` and the error counter."""
        counts = self.parser.counts
        seen = self._parser_seen
        for reason in ("skipped_bytes", "resyncs", "bad_size", "short_context",
                       "unknown_context_field", "parser_errors", "discarded_bytes"):
            new = counts[reason] - seen[reason]
            if new > 0:
                self.bad_packets[reason] += new
                seen[reason] = counts[reason]
                if reason != "skipped_bytes":
                    self.count_errors(new)
