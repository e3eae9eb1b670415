"""The SCPI command table shared by the WSA4000 driver and simulator."""

from __future__ import annotations

import pytest

from radlogger.devices.wsa4000.scpi import COMMANDS, check_value, lookup, parse_line


@pytest.mark.parametrize("header,key", [
    ("*IDN", "idn"), (":*idn", "idn"), ("*RST", "rst"),
    (":FREQ:CENTER", "freq"), ("FREQ:CENTER", "freq"), ("freq:cent", "freq"),
    (":SENSE:FREQUENCY:CENTER", "freq"), ("SENS:FREQ:CENT", "freq"),
    ("FREQ:SHIFT", "shift"), (":SENSE:DECIMATION", "decimation"), ("DEC", "decimation"),
    (":INPUT:GAIN:RF", "rf_gain"), ("INP:GAIN:IF", "if_gain"),
    (":TRACE:SPP", "spp"), (":TRACE:BLOCK:PACKETS", "ppb"), ("TRAC:BLOC:PACK", "ppb"),
    (":TRACE:BLOCK:DATA", "block_data"), (":TRACE:STREAM:START", "stream_start"),
    (":SYSTEM:LOCK:REQUEST", "lock_request"), ("SYST:LOCK:HAVE", "lock_have"),
    (":SYSTEM:ERROR", "error"), ("SENSE:LOCK:RF", "lock_rf"), ("LOCK:REF", "lock_reference"),
])
def test_headers_match_short_and_long_forms(header: str, key: str) -> None:
    cmd = lookup(header)
    assert cmd is not None and cmd.key == key


@pytest.mark.parametrize("header", ["FREQUEN:CENTER", "FRE:CENTER", "BOGUS", "", ":",
                                    "FREQ::CENTER", "TRACE:SPP:EXTRA"])
def test_malformed_or_unknown_headers_do_not_match(header: str) -> None:
    assert lookup(header) is None


def test_every_canonical_form_maps_to_its_own_command() -> None:
    for key, cmd in COMMANDS.items():
        found = lookup(cmd.form)
        assert found is not None and found.key == key


def test_parse_line_splits_commands_and_tolerates_blanks() -> None:
    assert parse_line("") == [] and parse_line("   ") == []
    [a, b] = parse_line(":TRACE:SPP 1024; :SYSTEM:LOCK:REQUEST? ACQ ;;")
    assert (a.header, a.query, a.args) == (":TRACE:SPP", False, ["1024"])
    assert (b.header, b.query, b.args) == (":SYSTEM:LOCK:REQUEST", True, ["ACQ"])
    [t] = parse_line(":TRIGGER:LEVEL 2400000000, 2410000000, -50")
    assert t.args == ["2400000000", "2410000000", "-50"]


def test_check_value_ranges_steps_and_words() -> None:
    assert check_value(COMMANDS["freq"], "2.4e9") == 2_400_000_000
    with pytest.raises(ValueError, match="multiple of 100000"):
        check_value(COMMANDS["freq"], "2400000001")
    with pytest.raises(ValueError, match="outside"):
        check_value(COMMANDS["freq"], "11e9")
    with pytest.raises(ValueError, match="multiple of 16"):
        check_value(COMMANDS["spp"], "1000")
    assert check_value(COMMANDS["rf_gain"], "medium") == "MEDIUM"
    with pytest.raises(ValueError, match="HIGH"):
        check_value(COMMANDS["rf_gain"], "loud")
    assert check_value(COMMANDS["if_gain"], "-5 dB") == -5
    assert check_value(COMMANDS["preselect"], "ON") is True
    with pytest.raises(ValueError, match="not a number"):
        check_value(COMMANDS["spp"], "many")


def test_reply_without_line_end_is_a_clear_error_not_unbounded_buffering() -> None:
    """A peer that streams bytes with no newline (wrong port, garbage) must not make the
    client buffer without bound: past MAX_LINE it fails with a clear SCPIError."""
    import socket
    import threading

    from radlogger.devices.wsa4000.scpi import MAX_LINE, SCPIClient, SCPIError

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    done = threading.Event()

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            try:  # bounded, so a regression fails instead of hanging
                for _ in range(32):
                    if done.is_set():
                        break
                    conn.sendall(b"x" * 65536)
                conn.shutdown(socket.SHUT_WR)
                conn.recv(1)
            except OSError:
                pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    client = SCPIClient("127.0.0.1", srv.getsockname()[1], 5.0)
    try:
        with pytest.raises(SCPIError, match="without a line end"):
            client.query("*IDN?")
        assert len(client._rx) <= MAX_LINE + 4096
    finally:
        done.set()
        client.close()
        srv.close()
        t.join(5.0)


def test_a_reply_trickled_byte_by_byte_cannot_hold_a_query() -> None:
    """The timeout is a deadline per query, not per recv: a peer sending one byte every
    0.05 s (each recv succeeds) is cut off at the timeout."""
    import socket
    import threading
    import time

    from radlogger.devices.wsa4000.scpi import SCPIClient, SCPIError

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    done = threading.Event()

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            try:
                while not done.wait(0.05):
                    conn.sendall(b"x")
            except OSError:
                pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    client = SCPIClient("127.0.0.1", srv.getsockname()[1], 0.3)
    t0 = time.monotonic()
    try:
        with pytest.raises(SCPIError, match="within 0.3 s"):
            client.query("*IDN?")
        assert time.monotonic() - t0 < 2.0
    finally:
        done.set()
        client.close()
        srv.close()
        t.join(5)
