"""The WSA4000 simulator, driven by a plain-socket client written from the protocol document.

The client here deliberately shares no code with the driver or the parser: it reads packets
the way pyrf does (header word, then ``size`` words) so the simulator is checked against the
document, not against our own reading of it.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator

import numpy as np
import pytest

from conftest import free_port, wait_for
from radlogger.devices.wsa4000.simulator import WSA4000Simulator


class Client:
    """A protocol-document client: control on one socket, data on the other."""

    def __init__(self, sim: WSA4000Simulator, data: bool = True) -> None:
        self.ctl = socket.create_connection(("127.0.0.1", sim.control_port), timeout=5)
        self.ctl.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rx = self.ctl.makefile("rb")
        self.data = socket.create_connection(("127.0.0.1", sim.data_port), timeout=5) \
            if data else None

    def send(self, line: str) -> None:
        self.ctl.sendall(line.encode() + b"\n")

    def query(self, line: str) -> str:
        self.send(line)
        return self.rx.readline().decode().strip()

    def read_exact(self, n: int) -> bytes:
        assert self.data is not None
        buf = b""
        while len(buf) < n:
            chunk = self.data.recv(n - len(buf))
            assert chunk, "data connection closed"
            buf += chunk
        return buf

    def read_packet(self) -> dict:
        (word,) = struct.unpack(">I", self.read_exact(4))
        ptype, count, size = word >> 28, (word >> 16) & 0xF, word & 0xFFFF
        body = self.read_exact(4 * size - 4)
        sid, sec, ps = struct.unpack(">IIQ", body[:16])
        pkt = {"type": ptype, "count": count, "size": size, "sid": sid, "sec": sec, "ps": ps,
               "header": word}
        if ptype == 1:
            pkt["iq"] = np.frombuffer(body[16:-4], ">i2").reshape(-1, 2)
            (pkt["trailer"],) = struct.unpack(">I", body[-4:])
        else:
            (pkt["indicators"],) = struct.unpack(">I", body[16:20])
            pkt["fields"] = body[20:]
        return pkt

    def close(self) -> None:
        self.rx.close()
        self.ctl.close()
        if self.data is not None:
            self.data.close()


@pytest.fixture
def sim() -> Iterator[WSA4000Simulator]:
    s = WSA4000Simulator(control_port=0, data_port=0, tones=["1e6:0.5"], ring_samples=4096)
    s.start()
    yield s
    s.stop()


def typical_capture(c: Client, spp: int = 256, ppb: int = 3) -> tuple[dict, list[dict]]:
    """The document's typical capture: context merged from every context packet first."""
    c.send(f":TRACE:SPP {spp}")
    c.send(f":TRACE:BLOCK:PACKETS {ppb}")
    c.send(":TRACE:BLOCK:DATA?")
    context: dict = {}
    data: list[dict] = []
    while len(data) < ppb:
        p = c.read_packet()
        if p["type"] == 1:
            data.append(p)
            continue
        f = p["fields"]
        ind = p["indicators"]
        if p["sid"] == 0x90000001 and ind & (1 << 27):
            context["rffreq"] = struct.unpack(">q", f[:8])[0] / 2 ** 20
        elif p["sid"] == 0x90000001 and ind & (1 << 23):
            g1, g2 = struct.unpack(">hh", f[:4])
            context["gain"] = (g1 / 128, g2 / 128)
        elif p["sid"] == 0x90000002 and ind & (1 << 29):
            context["bandwidth"] = struct.unpack(">q", f[:8])[0] / 2 ** 20
        elif p["sid"] == 0x90000002 and ind & (1 << 24):
            context["reflevel"] = struct.unpack(">h", f[2:4])[0] / 128
        context.setdefault("_packets", []).append((p["sid"], ind, p["size"]))
    return context, data


def test_typical_client_capture_sequence(sim: WSA4000Simulator) -> None:
    c = Client(sim)
    try:
        assert c.query(":*idn?").startswith("ThinkRF,WSA4000")
        c.send(":*rst\n")  # a blank line after a command must be tolerated
        assert c.query(":SYSTEM:LOCK:REQUEST? ACQ") == "1"
        assert c.query(":SYSTEM:LOCK:HAVE? ACQ") == "1"
        for line in (":INPUT:GAIN:IF 10", ":FREQ:CENTER 2450000000", ":INPUT:GAIN:RF LOW",
                     ":FREQ:SHIFT 0", ":SENSE:DECIMATION 4"):
            c.send(line)
        ctx, data = typical_capture(c, spp=256, ppb=3)
        assert ctx["rffreq"] == 2_450_000_000
        assert ctx["bandwidth"] == 125e6 / 4
        assert ctx["gain"] == (0.0, 10.0)
        assert ctx["reflevel"] == -10.0 - 10  # LOW, minus the IF gain
        # one field per context packet, in the documented order
        assert ctx["_packets"] == [(0x90000001, 1 << 27, 8), (0x90000001, 1 << 23, 7),
                                   (0x90000002, 1 << 29, 8), (0x90000002, 1 << 24, 7)]
        assert [p["header"] for p in data] == [0x14600106, 0x14610106, 0x14620106]
        for p in data:
            assert p["sid"] == 0x90000003 and p["trailer"] == 0x60060000
            assert p["iq"].shape == (256, 2)
            assert p["iq"].min() >= -8192 and p["iq"].max() <= 8191
        # picoseconds advance 8000 per sample times the decimation
        t = [p["sec"] * 10 ** 12 + p["ps"] for p in data]
        assert np.diff(t).tolist() == [256 * 8000 * 4] * 2
        assert all(0 <= p["ps"] < 10 ** 12 for p in data)
        # the timestamps are real (UTC seconds now)
        assert abs(data[0]["sec"] - time.time()) < 60
        assert c.query("FREQ:CENTER?") == "2450000000"
        assert c.query(":INPUT:GAIN:IF?") == "10 dB"
        assert c.query("SENSE:DECIMATION?") == "4"
        assert c.query(":TRACE:SPP?") == "256"
        assert c.query("SENSE:LOCK:RF?") == "1"
        assert c.query(":SYSTEM:ERROR?") == '0,"No error"'
        # a second capture continues the data packet counter modulo 16
        _, more = typical_capture(c, spp=256, ppb=15)
        assert [p["count"] for p in more] == [(3 + i) % 16 for i in range(15)]
    finally:
        c.close()


def test_unknown_and_bad_commands_queue_errors_and_keep_the_connection(
        sim: WSA4000Simulator) -> None:
    c = Client(sim, data=False)
    try:
        c.send(":NOT:A:COMMAND 5")
        c.send(":FREQ:CENTER 12345")  # not a 100 kHz step
        c.send(":SENSE:DECIMATION 2")  # 1 or 4..1023
        c.send("")
        assert c.query(":SYSTEM:ERROR?").startswith("-113,")
        assert c.query(":SYSTEM:ERROR?").startswith("-222,")
        assert c.query(":SYSTEM:ERROR?").startswith("-222,")
        assert c.query(":SYSTEM:ERROR?") == '0,"No error"'
        assert c.query("FREQ:CENTER?") == "2400000000"  # unchanged
        assert [r.key for r in sim.commands[:3]] == [None, "freq", "decimation"]
    finally:
        c.close()


def test_acquisition_lock_is_exclusive_and_released_on_disconnect(
        sim: WSA4000Simulator) -> None:
    a = Client(sim, data=False)
    b = Client(sim, data=False)
    try:
        assert a.query(":SYSTEM:LOCK:REQUEST? ACQ") == "1"
        assert b.query(":SYSTEM:LOCK:REQUEST? ACQ") == "0"
        assert b.query(":SYSTEM:LOCK:HAVE? ACQ") == "0"
        a.close()
        wait_for(lambda: b.query(":SYSTEM:LOCK:REQUEST? ACQ") == "1", 5,
                 message="lock released when its holder disconnected")
    finally:
        b.close()


def test_several_clients_in_turn(sim: WSA4000Simulator) -> None:
    for _ in range(3):
        c = Client(sim)
        try:
            # the previous client's lock is released once the simulator sees its disconnect
            wait_for(lambda c=c: c.query(":SYSTEM:LOCK:REQUEST? ACQ") == "1", 5,
                     message="lock free for the next client")
            _, data = typical_capture(c, spp=128, ppb=2)
            assert len(data) == 2
        finally:
            c.close()
    assert sim.connections == 3 and sim.captures == 3


def test_stream_start_stop_with_counters_and_stream_id(sim: WSA4000Simulator) -> None:
    c = Client(sim)
    try:
        c.send(":TRACE:SPP 128")
        c.send(":TRACE:STREAM:START 77")
        first = c.read_packet()
        assert first["type"] == 5 and first["sid"] == 0x90000004
        assert first["indicators"] == 1 << 1
        assert struct.unpack(">I", first["fields"][:4])[0] == 77
        packets = [c.read_packet() for _ in range(4 + 40)]
        data = [p for p in packets if p["type"] == 1]
        assert len(data) == 40
        assert [p["count"] for p in data] == [i % 16 for i in range(40)]
        assert c.query(":TRACE:STREAM:STATUS?") == "RUNNING"
        c.send(":TRACE:STREAM:STOP")
        assert c.query(":TRACE:STREAM:STATUS?") == "STOPPED"
    finally:
        c.close()


def test_same_seed_same_samples_and_spectral_inversion() -> None:
    def capture(seed: int, inversion: bool) -> dict:
        with WSA4000Simulator(control_port=0, data_port=0, tones=["2e6:0.25"], seed=seed,
                              spectral_inversion=inversion, ring_samples=1024) as s:
            c = Client(s)
            try:
                return typical_capture(c, spp=512, ppb=1)[1][0]
            finally:
                c.close()

    a, b, other = capture(5, False), capture(5, False), capture(6, False)
    np.testing.assert_array_equal(a["iq"], b["iq"])
    assert not np.array_equal(a["iq"], other["iq"])
    inv = capture(5, True)
    assert inv["trailer"] == 0x64064000  # inversion enabled and indicated
    np.testing.assert_array_equal(inv["iq"][:, 0], a["iq"][:, 0])
    np.testing.assert_array_equal(inv["iq"][:, 1], -a["iq"][:, 1])


def test_stream_loss_moves_the_counter_and_flags_sample_loss() -> None:
    with WSA4000Simulator(control_port=0, data_port=0, drop_every=4, ring_samples=512) as s:
        c = Client(s)
        try:
            c.send(":TRACE:SPP 128")
            c.send(":TRACE:STREAM:START")
            packets = [c.read_packet() for _ in range(5 + 12)]
        finally:
            c.close()
    data = [p for p in packets if p["type"] == 1]
    # packet indices 3, 7, 11, ... are lost: counts skip them
    assert [p["count"] for p in data[:6]] == [0, 1, 2, 4, 5, 6]
    loss = [bool(p["trailer"] & (1 << 12)) and bool(p["trailer"] & (1 << 24)) for p in data]
    assert loss[:6] == [False, False, True, False, False, True]


def test_over_range_is_flagged_when_samples_clip() -> None:
    with WSA4000Simulator(control_port=0, data_port=0, tones=["1e6:1.2"], noise=0,
                          ring_samples=256) as s:
        c = Client(s)
        try:
            _, [p] = typical_capture(c, spp=256, ppb=1)
        finally:
            c.close()
    assert p["trailer"] & (1 << 13) and p["trailer"] & (1 << 25)
    assert p["iq"].max() == 8191 and p["iq"].min() == -8192


def test_cli_runs_standalone_and_stops_on_sigterm() -> None:
    ctl, data = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", "from radlogger.devices.wsa4000.simcli import cli; cli()",
         "--control-port", str(ctl), "--data-port", str(data), "--tone", "1e6:-30dBm"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        def connect() -> socket.socket | None:
            try:
                return socket.create_connection(("127.0.0.1", ctl), timeout=5)
            except OSError:
                return None
        sock = wait_for(connect, 20, interval=0.05, message="simulator CLI listening")
        assert isinstance(sock, socket.socket)
        with sock:
            sock.sendall(b"*IDN?\n")
            assert sock.makefile("rb").readline().startswith(b"ThinkRF,WSA4000")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert "control 127.0.0.1:" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_cli_reports_a_bad_tone_in_one_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "from radlogger.devices.wsa4000.simcli import cli; cli()",
         "--control-port", "0", "--data-port", "0", "--tone", "loud"],
        capture_output=True, text=True, timeout=30,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert proc.returncode == 2
    assert "tone 'loud'" in proc.stderr and "Traceback" not in proc.stderr


def test_streamed_blocks_are_the_packets_of_the_per_packet_path() -> None:
    """The streamer sends pre-built blocks (``_data_block``); they must be byte for byte the
    packets ``_data_packets`` builds (counts, timestamps, payload, trailer flags)."""
    import time as _time
    from dataclasses import replace as _replace

    from radlogger.devices.wsa4000.instrument import Instrument
    from radlogger.devices.wsa4000.waveform import Tone

    for spp, inverted in ((1024, False), (128, True)):
        a, b = (Instrument([Tone(3e6, 0.99)], 0.05, 1, inverted) for _ in range(2))
        a.state = _replace(a.state, spp=spp)
        b.state = _replace(b.state, spp=spp)
        ring_a, ring_b = a.ring(), b.ring()
        assert ring_a.over_range.any()  # the trailer's over-range flag is exercised
        t0 = _time.time_ns() * 1000
        for first, n in ((0, 7), (7, 64), (71, 300)):
            want = b"".join(bytes(p) for p in
                            a._data_packets(a.state, ring_a, n, t0, first, lossy=False))
            assert b._data_block(b.state, ring_b, n, t0, first).tobytes() == want
        assert (a._slot, a.packets_sent, a._data_index) == \
            (b._slot, b.packets_sent, b._data_index)
