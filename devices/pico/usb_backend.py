"""A pyusb backend that presents simulated pico2-ice boards, and the sysfs tree that goes with it.

``usb.core.find(backend=SimulatedUSBBackend(...))`` sees these boards exactly as libusb would
show real ones: device/configuration/interface/endpoint descriptors of a CDC-ACM composite,
bus and port numbers, and string descriptors (manufacturer, product, 16-hex-digit serial)
answered through ``ctrl_transfer`` GET_DESCRIPTOR requests.  :func:`make_sysfs` writes the
matching ``/sys`` fragment (device dir with ``serial``, interface ``:1.0`` with
``tty/ttyACMn``, and ``class/tty/ttyACMn/device`` links) into a directory, so
:mod:`radlogger.devices.pico.usb` runs unmodified in tests.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import usb.backend
import usb.core

from .protocol import USB_IDS

__all__ = ["SimUsbBoard", "SimulatedUSBBackend", "make_sysfs"]

_PRODUCTS = {"pulsecount": ("tinyVision.ai Inc.", "pico-ice"),
             "default": ("Raspberry Pi", "Pico"),
             "bootloader": ("Raspberry Pi", "RP2350 Boot")}
_GET_DESCRIPTOR = 0x06
_DESC_DEVICE, _DESC_STRING = 1, 3
_LANG_EN_US = 0x0409


@dataclass
class SimUsbBoard:
    """One simulated board as the USB bus sees it."""

    serial: str
    firmware: str = "pulsecount"  # pulsecount | default | bootloader
    bus: int = 1
    ports: tuple[int, ...] = (1,)
    address: int = 2
    present: bool = True  # False: unplugged (enumeration skips it, open fails)

    @property
    def ids(self) -> tuple[int, int]:
        for ids, fw in USB_IDS.items():
            if fw == self.firmware:
                return ids
        raise ValueError(f"unknown firmware {self.firmware!r}")

    def strings(self) -> dict[int, str]:
        manufacturer, product = _PRODUCTS[self.firmware]
        return {1: manufacturer, 2: product, 3: self.serial}


def _desc(**fields: Any) -> SimpleNamespace:
    fields.setdefault("extra_descriptors", [])
    return SimpleNamespace(**fields)


class SimulatedUSBBackend(usb.backend.IBackend):
    """The pyusb backend interface over a list of :class:`SimUsbBoard` (mutable: plug/unplug)."""

    def __init__(self, boards: list[SimUsbBoard]) -> None:
        super().__init__()
        self.boards = boards
        self.opened = 0

    # ---------------------------------------------------------------- enumeration
    def enumerate_devices(self) -> Any:
        return iter([b for b in self.boards if b.present])

    def get_parent(self, dev: SimUsbBoard) -> None:
        return None

    def get_device_descriptor(self, dev: SimUsbBoard) -> SimpleNamespace:
        vid, pid = dev.ids
        composite = dev.firmware != "bootloader"
        return _desc(
            bLength=18, bDescriptorType=_DESC_DEVICE, bcdUSB=0x0200,
            bDeviceClass=0xEF if composite else 0x00, bDeviceSubClass=0x02 if composite else 0,
            bDeviceProtocol=0x01 if composite else 0, bMaxPacketSize0=64, idVendor=vid,
            idProduct=pid, bcdDevice=0x0100, iManufacturer=1, iProduct=2, iSerialNumber=3,
            bNumConfigurations=1, address=dev.address, bus=dev.bus,
            port_number=dev.ports[-1] if dev.ports else None, port_numbers=dev.ports, speed=3)

    def get_configuration_descriptor(self, dev: SimUsbBoard, config: int) -> SimpleNamespace:
        if config != 0:
            raise IndexError(config)
        n_if = 1 if dev.firmware == "bootloader" else 2
        return _desc(bLength=9, bDescriptorType=2, wTotalLength=75 if n_if == 2 else 32,
                     bNumInterfaces=n_if, bConfigurationValue=1, iConfiguration=0,
                     bmAttributes=0x80, bMaxPower=250)

    def get_interface_descriptor(self, dev: SimUsbBoard, intf: int, alt: int,
                                 config: int) -> SimpleNamespace:
        if alt != 0:
            raise IndexError(alt)
        if dev.firmware == "bootloader":  # USB mass storage (INDEX.HTM, INFO_UF2.TXT)
            layout = {0: (2, 0x08, 0x06, 0x50)}
        else:  # CDC ACM: 0 = communication (interrupt ep), 1 = data (bulk in/out)
            layout = {0: (1, 0x02, 0x02, 0x00), 1: (2, 0x0A, 0x00, 0x00)}
        if intf not in layout:
            raise IndexError(intf)
        n_ep, cls, sub, proto = layout[intf]
        return _desc(bLength=9, bDescriptorType=4, bInterfaceNumber=intf, bAlternateSetting=0,
                     bNumEndpoints=n_ep, bInterfaceClass=cls, bInterfaceSubClass=sub,
                     bInterfaceProtocol=proto, iInterface=0)

    def get_endpoint_descriptor(self, dev: SimUsbBoard, ep: int, intf: int, alt: int,
                                config: int) -> SimpleNamespace:
        if dev.firmware != "bootloader" and intf == 0:
            if ep != 0:
                raise IndexError(ep)
            return _desc(bLength=7, bDescriptorType=5, bEndpointAddress=0x81, bmAttributes=3,
                         wMaxPacketSize=8, bInterval=16, bRefresh=0, bSynchAddress=0)
        if ep not in (0, 1):
            raise IndexError(ep)
        address = (0x02, 0x82)[ep] if dev.firmware != "bootloader" else (0x01, 0x81)[ep]
        return _desc(bLength=7, bDescriptorType=5, bEndpointAddress=address, bmAttributes=2,
                     wMaxPacketSize=64, bInterval=0, bRefresh=0, bSynchAddress=0)

    # ---------------------------------------------------------------- I/O
    def open_device(self, dev: SimUsbBoard) -> SimUsbBoard:
        if not dev.present:
            raise usb.core.USBError("No such device (it may have been disconnected)",
                                    errno.ENODEV, -4)
        self.opened += 1
        return dev

    def close_device(self, dev_handle: SimUsbBoard) -> None:
        pass

    def claim_interface(self, dev_handle: SimUsbBoard, intf: int) -> None:
        pass

    def release_interface(self, dev_handle: SimUsbBoard, intf: int) -> None:
        pass

    def get_configuration(self, dev_handle: SimUsbBoard) -> int:
        return 1

    def set_configuration(self, dev_handle: SimUsbBoard, config_value: int) -> None:
        pass

    def ctrl_transfer(self, dev_handle: SimUsbBoard, bmRequestType: int, bRequest: int,
                      wValue: int, wIndex: int, data: Any, timeout: int) -> int:
        """Answers GET_DESCRIPTOR (device and string) the way the firmware's TinyUSB does."""
        if not dev_handle.present:
            raise usb.core.USBError("No such device", errno.ENODEV, -4)
        if bRequest != _GET_DESCRIPTOR or not bmRequestType & 0x80:
            raise usb.core.USBError("Pipe error", errno.EPIPE, -9)
        dtype, index = wValue >> 8, wValue & 0xFF
        if dtype == _DESC_STRING:
            if index == 0:
                payload = _LANG_EN_US.to_bytes(2, "little")
            else:
                text = dev_handle.strings().get(index)
                if text is None:
                    raise usb.core.USBError("Pipe error", errno.EPIPE, -9)
                payload = text.encode("utf-16-le")
            raw = bytes([2 + len(payload), _DESC_STRING]) + payload
        elif dtype == _DESC_DEVICE:
            d = self.get_device_descriptor(dev_handle)
            raw = bytes([18, 1, 0, 2, d.bDeviceClass, d.bDeviceSubClass, d.bDeviceProtocol, 64]) \
                + d.idVendor.to_bytes(2, "little") + d.idProduct.to_bytes(2, "little") \
                + bytes([0, 1, 1, 2, 3, 1])
        else:
            raise usb.core.USBError("Pipe error", errno.EPIPE, -9)
        n = min(len(raw), len(data))
        data[:n] = type(data)(data.typecode, raw[:n])
        return n


def make_sysfs(root: str | Path, boards: list[SimUsbBoard],
               ttys: dict[str, str] | None = None) -> Path:
    """Write the sysfs fragment the kernel would show for ``boards`` under ``root``.

    ``ttys`` maps serial -> tty name; by default boards with a CDC interface get ``ttyACM0``,
    ``ttyACM1``, ... in order.  Returns ``root``.
    """
    root = Path(root)
    devices = root / "bus/usb/devices"
    devices.mkdir(parents=True, exist_ok=True)
    (root / "class/tty").mkdir(parents=True, exist_ok=True)
    n = 0
    for b in boards:
        name = f"{b.bus}-{'.'.join(map(str, b.ports))}"
        dev_dir = root / "devices/pci0000:00/usb" / name
        dev_dir.mkdir(parents=True, exist_ok=True)
        vid, pid = b.ids
        for fname, text in (("serial", b.serial), ("idVendor", f"{vid:04x}"),
                            ("idProduct", f"{pid:04x}"), ("busnum", str(b.bus))):
            (dev_dir / fname).write_text(text + "\n")
        _relink(devices / name, dev_dir)
        if b.firmware == "bootloader":
            continue
        tty = (ttys or {}).get(b.serial)
        if tty is None:
            tty = f"ttyACM{n}"
            n += 1
        iface = dev_dir / f"{name}:1.0"
        (iface / "tty" / tty).mkdir(parents=True, exist_ok=True)
        _relink(devices / f"{name}:1.0", iface)
        tty_class = root / "class/tty" / tty
        tty_class.mkdir(parents=True, exist_ok=True)
        _relink(tty_class / "device", iface)
    return root


def _relink(link: Path, target: Path) -> None:
    if link.is_symlink() or link.exists():
        link.unlink()
    os.symlink(target, link)
