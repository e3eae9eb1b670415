"""Lag sets -> spectra: stitch, FFT to N channels, fftshift (steps 2-3 of the XF lag chain).

Lags run from -N/2 to N/2-1 with zero delay (the centre lag) at index N/2, so the transform
is ``fftshift(fft(ifftshift(lags)))``: ``ifftshift`` puts zero delay first as the FFT expects,
``fftshift`` orders channels from low to high frequency.  Stitching: the assembler already
places frames in start-block order, so a 1-D lag set is used as it is; a 2-D (blocks, lags)
array is stitched block after block.  Optional lag windows (Hann, Hamming, Blackman) are
centred on zero delay; ``channels`` < N averages adjacent channels.

Batched: every lag set of one length waiting in the inbox goes through one FFT call
(scipy.fft in single precision where the ``fft`` extra is installed, else numpy).
Lazy (``radlogger.processing``): with nothing using the output, lag sets are only counted in
``skipped``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from radlogger.measurement import Measurement
from radlogger.options import Option, OptionError
from radlogger.processing import ProcessingEndpoint

from .common import group_by

try:  # the [fft] extra: single-precision FFTs, 3.3 vs 19 us a 1024-lag set with numpy here
    from scipy import fft as _scipy_fft
except ImportError:  # pragma: no cover - numpy computes in double precision
    _scipy_fft = None

__all__ = ["LagFFTEndpoint", "lags_to_spectra", "WINDOWS"]

WINDOWS = ("none", "hann", "hamming", "blackman")
#: lag sets transformed per numpy call: big enough to amortize the call, small enough for cache
CHUNK = 128


@lru_cache(maxsize=32)
def _window(kind: str, n: int) -> np.ndarray:
    """A window of N lags peaking at the centre lag (index N/2), float32."""
    full = {"hann": np.hanning, "hamming": np.hamming, "blackman": np.blackman}[kind](n + 1)
    return full[:n].astype(np.float32)


def _swap_halves(x: np.ndarray) -> np.ndarray:
    """``fftshift`` (= ``ifftshift``) along axis 1 of an even (or 1) length, as a new array."""
    h = x.shape[1] // 2
    out = np.empty_like(x)
    out[:, :x.shape[1] - h] = x[:, h:]
    out[:, x.shape[1] - h:] = x[:, :h]
    return out


def lags_to_spectra(lags: np.ndarray, channels: int = 0, window: str = "none") -> np.ndarray:
    """Stacked lag sets (B, N) -> complex64 spectra (B, channels or N), low to high."""
    n = lags.shape[1]
    if n & (n - 1):
        raise ValueError(f"a lag set has {n} lags, not a power of two")
    if window != "none":
        lags = lags * _window(window, n)
    # ifftshift and fftshift of a power of two are the same swap of halves: two slice copies
    # (np.fft's shifts go through np.roll, ~2 us a 1024-lag set more)
    centred = _swap_halves(lags)  # a copy: the FFT may overwrite it
    if _scipy_fft is not None and centred.dtype == np.complex64:
        raw = _scipy_fft.fft(centred, axis=1, overwrite_x=True)
    else:
        raw = np.fft.fft(centred, axis=1)
    spec = _swap_halves(raw)
    if channels and channels < n:
        spec = spec.reshape(len(spec), channels, n // channels).mean(axis=2)
    return spec.astype(np.complex64, copy=False)


class LagFFTEndpoint(ProcessingEndpoint):
    kind = "lag_fft"
    summary = "stitches lag sets and FFTs them to complex64 spectra (low to high frequency)"
    output_default = "spectrum"  # widar.lagset_norm -> widar.spectrum
    accepts = ("lagset*",)
    options = (
        Option("channels", int, 0, "output channels: 0 = one per lag; fewer (a power of two) "
               "averages adjacent channels", min=0),
        Option("window", str, "none", "lag window centred on zero delay", choices=WINDOWS),
    )

    def __init__(self, name: str, settings: Any = None, **kw: Any) -> None:
        super().__init__(name, settings, **kw)
        s = self.settings
        if s.channels & (s.channels - 1):
            raise OptionError("channels", f"channels = {s.channels}: must be a power of two "
                              "(or 0 for one per lag)")

    def handle_batch(self, batch: list[Measurement]) -> None:
        s = self.settings
        good = []
        channels = s.channels
        for m in self.demanded(batch):
            v = m.value
            if type(v) is np.ndarray and v.ndim == 1 and v.size and not v.size & (v.size - 1) \
                    and channels <= v.size:  # the common case, checked cheaply
                good.append(m)
            elif not isinstance(v, np.ndarray) or v.ndim not in (1, 2) or not v.size \
                    or v.size & (v.size - 1):
                self.item_failed(m, ValueError(
                    f"{m.topic}: a lag set must be a 1-D (or blocks x lags) array of a power "
                    f"of two lags, got {getattr(v, 'shape', type(v).__name__)}"))
            elif s.channels > v.size:
                self.item_failed(m, ValueError(f"{m.topic}: channels = {s.channels} is more "
                                               f"than the {v.size} lags"))
            else:
                good.append(m)
        name, publish_many = self.name, self.publish_many
        for (topic, n), items in group_by(good, lambda m: (m.topic, m.value.size)).items():
            out_topic = self.out_topic(topic)
            for lo in range(0, len(items), CHUNK):  # cache-sized blocks of a big backlog
                chunk = items[lo:lo + CHUNK]
                lags = np.concatenate([m.value.reshape(-1) for m in chunk]).reshape(-1, n)
                spectra = lags_to_spectra(lags, s.channels, s.window)
                meta = {"channels": spectra.shape[1], "n_lags": n, "window": s.window}
                # m.derive(name, out_topic, spec, m.unit, meta), without a call per item
                publish_many([Measurement(name, out_topic, spec, m.t_ns, m.unit, m.device_time,
                                          {**m.meta, **meta} if m.meta else dict(meta), m.seq)
                              for m, spec in zip(chunk, spectra, strict=True)])
