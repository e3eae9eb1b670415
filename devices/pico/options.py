"""The pico driver's options and the checks across them (which port, which bitstreams).

Kept apart from the driver so the declaration reads as one table: the sample configuration,
``radloggerd plugins`` and validation all come from it (``radlogger.options``).
"""

from __future__ import annotations

from radlogger.options import Option, OptionError, Settings

from .protocol import FIRMWARES

__all__ = ["PICO_OPTIONS", "check_settings"]

PICO_OPTIONS = (
    Option("port", str, None, "serial port: a tty path (/dev/ttyACM0, a /dev/serial/by-id "
           "link) or any pyserial URL (socket://host:port, rfc2217://...); or set serial, "
           "or simulate = yes"),
    Option("serial", str, None, "the board's USB serial number (16 hex digits), resolved to "
           "its tty through USB discovery at every connect; instead of port"),
    Option("baudrate", int, 115200, "baud rate (USB CDC ignores it; 1200 would reboot the "
           "board into BOOTSEL and is refused)", min=1),
    Option("bitstreams", str, None, "a directory of *.bin bitstreams, or one file, to "
           "evaluate; unset: bitstreams come from the farm (or none)"),
    Option("repeat", int, 0, "passes over the bitstreams (0 = forever)", min=0),
    Option("farm", str, None, "name of the pico_farm device that queues bitstreams here"),
    Option("firmware", str, "pulsecount", "firmware the board runs (farm reservations of a "
           "state kind go to boards running it)", choices=FIRMWARES),
    Option("watchdog", float, 2.0, "the board's transfer watchdog in seconds", min=0.001),
    Option("count_window", float, 1.0, "the board's count window in seconds", min=0),
    Option("result_timeout", float, 0.0, "seconds from the end of an upload to the result, "
           "or from a watchdog / upload timeout to the board being ready again, before the "
           "port is re-opened (0 = watchdog + count_window + 5)", min=0),
    Option("ready_timeout", float, 5.0, "seconds of silence without 'Waiting for bitstream "
           "transfer' before the port is re-opened", min=0.01),
    Option("read_timeout", float, 0.1, "serial read timeout in seconds", min=0.001, max=0.2),
    Option("write_timeout", float, 0.5, "seconds a chunk may wait for the board to take it; "
           "well below watchdog, so a stalled upload is noticed before the board gives up and "
           "the driver then waits for the board's watchdog line (upload_timeout)", min=0.01),
    Option("sysfs_root", str, "/sys", "sysfs mount (serial -> tty mapping)"),
    Option("dev_root", str, "/dev", "device directory holding the ttys"),
    Option("simulate", bool, False, "run one simulated board in-process on a fresh pty "
           "(its firmware, watchdog and count_window as configured here) instead of port "
           "or serial"),
    Option("sim_bitstreams", int, 4, "with simulate = yes and neither bitstreams nor farm: "
           "evaluate this many generated test bitstreams (deterministic, 104,090 bytes "
           "each)", min=1, max=10_000),
)


def check_settings(name: str, s: Settings) -> Settings:
    """Checks between options that one declaration cannot express; returns ``s``."""
    chosen = [key for key in ("port", "serial", "simulate") if s[key]]
    if len(chosen) != 1:
        raise OptionError(chosen[0] if chosen else "port", f"device {name}: set exactly one of "
                          "port (a tty path or pyserial URL), serial (the board's USB serial "
                          "number) and simulate = yes (a simulated board)")
    if s.baudrate == 1200:
        raise OptionError("baudrate", "baudrate = 1200 reboots a pico into BOOTSEL; use 115200")
    if s.bitstreams and s.farm:
        raise OptionError("bitstreams", f"device {name}: bitstreams and farm exclude each other "
                          "(the farm queues bitstreams itself)")
    return s
