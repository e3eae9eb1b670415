"""``radloggerd ports``: serial ports, USB devices, and what the installed drivers recognise.

Drivers opt in by overriding the classmethod ``Device.discover()`` (the base returns None: no
discovery) to return the hardware they found: strings, or dicts whose ``port`` (a tty path)
and ``vid``/``pid`` let this listing mark the matching serial port or USB device with the
driver's name.  A driver that fails to load, or whose
discovery raises (no libusb, no permission), is reported with the reason; the listing goes on.
"""

from __future__ import annotations

from typing import Any

from .sample import catalog

__all__ = ["describe_ports", "discovered"]


def _field(item: Any, *names: str) -> Any:
    for name in names:
        value = item.get(name) if isinstance(item, dict) else getattr(item, name, None)
        if value is not None:
            return value
    return None


def _describe(item: Any) -> str:
    if isinstance(item, str):
        return item
    text = _field(item, "description")
    where = _field(item, "port", "device", "path")
    if text is not None:
        return f"{where}: {text}" if where else str(text)
    if isinstance(item, dict):
        return ", ".join(f"{k}={v}" for k, v in item.items())
    return str(item)


def discovered() -> tuple[list[tuple[str, Any]], list[tuple[str, str]], list[str]]:
    """(driver, item) found; (driver, why not) for the rest; drivers without discovery."""
    found: list[tuple[str, Any]] = []
    failed: list[tuple[str, str]] = []
    without: list[str] = []
    for info in catalog():
        if info.role != "device":
            continue
        if info.cls is None:
            failed.append((info.name, f"unavailable: {info.error}"))
            continue
        try:
            declared = info.cls.discover()
            if declared is None:
                without.append(info.name)
                continue
            items = list(declared)
        except Exception as exc:  # noqa: BLE001 - discovery problems are listed, not raised
            failed.append((info.name, f"discovery failed: {type(exc).__name__}: {exc}"))
            continue
        found.extend((info.name, item) for item in items)
        if not items:
            failed.append((info.name, "nothing found"))
    return found, failed, without


def _marks(found: list[tuple[str, Any]], port: str | None, vid: int | None,
           pid: int | None) -> str:
    names = sorted({driver for driver, item in found
                    if (port and _field(item, "port", "device", "path") == port)
                    or (vid is not None and _field(item, "vid") == vid
                        and _field(item, "pid") == pid)})
    return f"  [{', '.join(names)}]" if names else ""


def describe_ports() -> str:
    found, failed, without = discovered()
    out = ["serial ports:"]
    try:
        from serial.tools import list_ports

        serial_ports = sorted(list_ports.comports(), key=lambda p: p.device)
    except Exception as exc:  # noqa: BLE001
        out.append(f"  (cannot list: {type(exc).__name__}: {exc})")
        serial_ports = []
    for p in serial_ports:
        out.append(f"  {p.device}  {p.description}  {p.hwid}"
                   f"{_marks(found, p.device, p.vid, p.pid)}")
    if not serial_ports:
        out.append("  (none)")
    out.append("USB devices:")
    try:
        import usb.core

        devices = list(usb.core.find(find_all=True))
    except Exception as exc:  # noqa: BLE001 - NoBackendError, permissions
        out.append(f"  (cannot list: {type(exc).__name__}: {exc}; install libusb-1.0)")
        devices = []
    for d in devices:
        out.append(f"  bus {d.bus:03d} device {d.address:03d}  {d.idVendor:04x}:{d.idProduct:04x}"
                   f"{_marks(found, None, d.idVendor, d.idProduct)}")
    if not devices and out[-1] == "USB devices:":
        out.append("  (none)")
    out.append("recognised by drivers:")
    for driver, item in found:
        out.append(f"  {driver}: {_describe(item)}")
    for driver, reason in failed:
        out.append(f"  {driver}: {reason}")
    if not found and not failed:
        out.append("  (nothing)")
    if without:
        out.append(f"drivers without hardware discovery: {', '.join(without)}")
    return "\n".join(out) + "\n"
