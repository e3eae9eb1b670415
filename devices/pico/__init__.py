"""pico2-ice boards (RP2350 + iCE40UP5K): pulse-count / variance evaluation of FPGA bitstreams.

``protocol`` (the line protocol), ``sources`` (where bitstreams come from), ``driver``
(:class:`PicoDevice`), ``usb`` (discovery by VID:PID and sysfs), ``simulator`` and ``usb_backend``
(a board behind a real pty, a pyusb backend for tests), ``farm`` (the reservation control plane).
"""
