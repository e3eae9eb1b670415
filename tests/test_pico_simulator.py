"""The simulated board on its own: exact protocol lines, byte count, watchdog, the CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import serial
from test_pico_support import bitstream

from conftest import wait_for
from radlogger.devices.pico.protocol import BITSTREAM_SIZE, CHUNK_SIZE
from radlogger.devices.pico.simulator import SimulatedBoard, expected_pulses


class Host:
    """A bare pyserial host reading lines (what a driver sees)."""

    def __init__(self, path: str) -> None:
        self.ser = serial.Serial(path, 115200, timeout=0.05)
        self.buf = b""

    def lines_until(self, text: str, timeout: float = 5.0) -> list[str]:
        out: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.buf += self.ser.read(max(1, self.ser.in_waiting))
            while b"\r\n" in self.buf:
                line, self.buf = self.buf.split(b"\r\n", 1)
                out.append(line.decode())
                if text in out[-1]:
                    return out
        raise AssertionError(f"no {text!r} within {timeout}s; got {out}")

    def send(self, data: bytes) -> None:
        for i in range(0, len(data), CHUNK_SIZE):
            self.ser.write(data[i:i + CHUNK_SIZE])


def test_exact_lines_of_one_evaluation() -> None:
    with SimulatedBoard(count_window=0.01) as board:
        host = Host(board.path)
        assert host.lines_until("Waiting") == ["USB Connected :)",
                                               "Waiting for bitstream transfer"]
        data = bitstream(1)
        host.send(data)
        lines = host.lines_until("Waiting")
        assert lines[:2] == ["Bitstream transfer started", "Receiving bitstream"]
        assert lines[2].startswith("Received bitstream in ") and lines[2].endswith(" us :)")
        assert lines[3:] == [
            "Flashing FPGA",
            "FPGA Flash times (us): init 12, start 35, open 160, write 8200, close 45",
            f", pulses: {expected_pulses(data)}", "IDLE", "USB Reconnected :)",
            "Waiting for bitstream transfer"]
        host.ser.close()


def test_extra_bytes_start_a_transfer_that_the_watchdog_ends() -> None:
    with SimulatedBoard(count_window=0.01, watchdog=0.05) as board:
        host = Host(board.path)
        host.lines_until("Waiting")
        host.send(bitstream(2, BITSTREAM_SIZE + 100))
        lines = host.lines_until("Watchdog")
        assert lines[-1] == f"Watchdog timeout, 100 bytes received of {BITSTREAM_SIZE}"
        assert board.transfers == 2 and board.evaluations == 1 and board.watchdogs == 1
        host.ser.close()


def test_host_closing_the_port_resets_the_board() -> None:
    with SimulatedBoard(count_window=0.01, watchdog=5.0) as board:
        host = Host(board.path)
        host.lines_until("Waiting")
        host.send(bitstream(3)[:1000])  # a transfer in progress ...
        wait_for(lambda: board.bytes_received == 1000)
        host.ser.close()  # ... when the host goes away
        wait_for(lambda: not board.host_open)
        host = Host(board.path)
        assert host.lines_until("Waiting") == ["USB Connected :)",
                                               "Waiting for bitstream transfer"]
        host.send(bitstream(4))
        assert host.lines_until("pulses")[-1] == f", pulses: {expected_pulses(bitstream(4))}"
        assert board.opens == 2
        host.ser.close()


def test_cli_prints_ports_and_stops_on_sigint(tmp_path: Path) -> None:
    code = "from radlogger.devices.pico.simulator import cli; cli()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "--boards", "2", "--count-window", "0.01", "--link-dir",
         str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=Path(__file__).resolve().parents[1])
    try:
        assert proc.stdout is not None
        rows = [proc.stdout.readline().split() for _ in range(2)]
        serials = [r[0] for r in rows]
        assert len(set(serials)) == 2 and all(len(s) == 16 for s in serials)
        assert all(os.path.islink(r[1]) and serial_in(r[1], r[0]) for r in rows)
        host = Host(rows[1][1])
        host.lines_until("Waiting")
        host.send(bitstream(5))
        assert host.lines_until("pulses")[-1] == f", pulses: {expected_pulses(bitstream(5))}"
        host.ser.close()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert f"{serials[1]}: 1 evaluations" in err
        assert not any(tmp_path.iterdir())  # the links are gone with the boards
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def serial_in(link: str, serial_number: str) -> bool:
    return serial_number in os.path.basename(link)
