"""The pico line protocol, fitness, and the bitstream sources."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_pico_support import bitstream

from radlogger.devices.pico.protocol import (
    BITSTREAM_SIZE,
    MAX_DIGITS,
    FlashTimes,
    Kind,
    fitness,
    format_flash_times,
    parse_line,
)
from radlogger.devices.pico.sources import BitstreamQueue, FileSource, Job


@pytest.mark.parametrize("line, kind, value", [
    ("USB Connected :)", Kind.CONNECTED, None),
    ("USB Reconnected :)\r", Kind.RECONNECTED, None),
    ("Waiting for bitstream transfer", Kind.READY, None),
    ("Bitstream transfer started", Kind.STARTED, None),
    ("Receiving bitstream", Kind.RECEIVING, None),
    ("Received bitstream in 51234 us :)", Kind.RECEIVED, 51234),
    ("Watchdog timeout, 4096 bytes received of 104090", Kind.WATCHDOG, 4096),
    ("Flashing FPGA", Kind.FLASHING, None),
    (", pulses: 1998", Kind.PULSES, 1998),
    ("pulses: 31995", Kind.PULSES, 31995),
    ("Sampling ADC", Kind.SAMPLING, None),
    ("IDLE", Kind.IDLE, None),
    ("USB Disconnected :(", Kind.DISCONNECTED, None),
    ("", Kind.EMPTY, None),
])
def test_protocol_lines(line: str, kind: Kind, value: object) -> None:
    ev = parse_line(line)
    assert ev.kind is kind
    assert ev.value == value


def test_flash_times_with_failed_step_and_pulses_on_the_same_line() -> None:
    ev = parse_line("FPGA Flash times (us): init 12, start -1, open 160, write 8200, close 45")
    assert ev.kind is Kind.FLASH_TIMES
    assert ev.value == FlashTimes((12, -1, 160, 8200, 45), None)
    assert ev.value.failed_steps == ["start"]
    assert ev.value.as_dict()["write"] == 8200
    ev = parse_line("FPGA Flash times (us): init 1, start 2, open 3, write 4, close 5, "
                    "pulses: 7996")
    assert ev.value.pulses == 7996 and not ev.value.failed_steps


@pytest.mark.parametrize("line", [
    "pulses: -5", "pulses: 12abc", "xx pulses: 5", "Watchdog timeout, many bytes",
    "Received bitstream in fast us :)", "samples: 1", "samples: 1,2,x", "samples: 1,nan,2",
    "\x00\xff garbage", "FPGA Flash times (us): init 1",
])
def test_garbage_is_recognised(line: str) -> None:
    assert parse_line(line).kind is Kind.GARBAGE


def test_samples_and_fitness() -> None:
    ev = parse_line("samples: 10,14,11,11,20")
    assert ev.kind is Kind.SAMPLES
    np.testing.assert_array_equal(ev.value, [10, 14, 11, 11, 20])
    # |14-10| + |11-14| + |11-11| + |20-11| = 4 + 3 + 0 + 9 = 16 over N = 5 samples, as
    # iCEFARM computes it (issue 15; it was 16 / 4 before)
    assert fitness(ev.value) == pytest.approx(16 / 5)


def test_file_source_directory_order_repeat_and_lazy_errors(tmp_path: Path) -> None:
    (tmp_path / "b.bin").write_bytes(bitstream(2))
    (tmp_path / "a.bin").write_bytes(bitstream(1))
    (tmp_path / "notes.txt").write_text("not a bitstream")
    src = FileSource(tmp_path, repeat=2)
    jobs = [src.get(0) for _ in range(4)]
    assert [j.eval_id for j in jobs if j] == ["a#0", "b#0", "a#1", "b#1"]
    assert jobs[0] is not None and jobs[0].data == bitstream(1)
    assert src.get(0) is None and src.exhausted
    forever = FileSource(tmp_path / "a.bin", repeat=0)
    assert all(forever.get(0) is not None for _ in range(10)) and not forever.exhausted
    with pytest.raises(FileNotFoundError, match="no such file"):
        FileSource(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no \*.bin files"):
        FileSource(tmp_path / "empty")


def test_bitstream_queue_wakes_a_waiting_driver_and_clears_by_tag() -> None:
    q = BitstreamQueue()
    got: list[Job | None] = []
    t = threading.Thread(target=lambda: got.append(q.get(5.0)))
    t.start()
    q.put([Job("x", b"1", tag=1)])
    t.join(5.0)
    assert got and got[0] is not None and got[0].eval_id == "x"
    q.put([Job("a", b"", tag=1), Job("b", b"", tag=2), Job("c", b"", tag=1)])
    assert [j.eval_id for j in q.clear(tag=1)] == ["a", "c"]
    assert len(q) == 1 and q.get(0) is not None and q.get(0) is None
    assert BITSTREAM_SIZE == 104_090


def test_file_source_reports_a_bad_file_once_and_never_spins(tmp_path: Path) -> None:
    (tmp_path / "a_bad.bin").write_bytes(b"too short")
    (tmp_path / "b_good.bin").write_bytes(bitstream(1))
    src = FileSource(tmp_path, repeat=3)
    ids = []
    while (job := src.get(0)) is not None:
        ids.append(job.eval_id)
    assert ids == ["a_bad#0", "b_good#0", "b_good#1", "b_good#2"] and src.skipped == 2
    forever = FileSource(tmp_path, repeat=0)
    assert [forever.get(0).eval_id for _ in range(3)] == [  # type: ignore[union-attr]
        "a_bad#0", "b_good#0", "b_good#1"]
    (tmp_path / "b_good.bin").unlink()
    assert forever.get(0) is None and not forever.exhausted  # a pass of nothing usable
    (tmp_path / "a_bad.bin").write_bytes(bitstream(2))  # fixed: handed out again
    job = forever.get(0)
    assert job is not None and job.data == bitstream(2)


# ---------------------------------------------------------------- parse_line never raises
#: templates of every numbered line, so generated numbers land where the parser converts them
_NUMBERED = ["pulses: {}", ", pulses: {}", "Received bitstream in {} us :)",
             "Watchdog timeout, {} bytes received of 104090", "samples: {},{}",
             "FPGA Flash times (us): init {}, start 1, open 2, write 3, close 4, pulses: {}"]
_digits = st.text(alphabet="0123456789", min_size=1, max_size=6000)


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_parse_line_never_raises_on_any_text(line: str) -> None:
    ev = parse_line(line)
    assert isinstance(ev.kind, Kind)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(_NUMBERED), _digits, _digits)
def test_parse_line_never_raises_on_numbers_of_any_length(template: str, a: str, b: str) -> None:
    line = template.format(a, b)
    ev = parse_line(line)  # past 4,300 digits int() would raise ValueError
    assert isinstance(ev.kind, Kind)
    if ev.kind is Kind.PULSES:
        assert ev.value == int(a) and len(a) <= MAX_DIGITS
    if template.startswith(("pulses", ", pulses")) and len(a) > MAX_DIGITS:
        assert ev == (Kind.GARBAGE, line.strip())  # counted as a bad line, like any garbage


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=10**MAX_DIGITS - 1),
       st.lists(st.integers(-1, 10**9), min_size=5, max_size=5))
def test_every_count_that_fits_is_read_back(pulses: int, times: list[int]) -> None:
    assert parse_line(f", pulses: {pulses}") == (Kind.PULSES, pulses)
    ev = parse_line(f"{format_flash_times(times)}, pulses: {pulses}")
    assert ev.kind is Kind.FLASH_TIMES and ev.value == FlashTimes(tuple(times), pulses)


def test_a_4301_digit_count_is_garbage_not_an_exception() -> None:
    line = "pulses: " + "7" * 4301
    assert parse_line(line) == (Kind.GARBAGE, line)
