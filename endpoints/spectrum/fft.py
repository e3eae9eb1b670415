"""The ``fft`` endpoint: I/Q packets -> power spectra in dB relative to full scale.

Steps (``shared/protocols/wsa4000.md``): scale to [-1, 1), remove DC, optionally correct I/Q
gain and phase imbalance, Hann window, FFT, fftshift, ``20*log10(|X|/N)``.  A complex tone of
amplitude A on a bin centre then reads ``20*log10(0.5*A)`` (0.5: the Hann coherent gain).

Why batched: a 1024-point FFT costs a few microseconds of math but tens of microseconds of
Python and numpy call overhead per call; stacking every waiting packet of equal length into
one 2-D array and transforming along axis 1 pays that overhead once per batch.

Why the *periodic* Hann window (``0.5 - 0.5*cos(2*pi*n/N)``, scipy's ``sym=False``) and not
``np.hanning`` (symmetric): its coherent gain is exactly 0.5, so calibrated peaks are exact
instead of 20*log10((N-1)/N) low (0.07 dB at N = 128).

Lazy (``radlogger.processing``): when nothing uses the output topic (no subscriber, or only
processing endpoints whose own output nobody uses) the packets are counted in
:attr:`FFTEndpoint.skipped` and no math is done.
"""

from __future__ import annotations

from typing import Any

import numpy as np

try:  # the [all] / [fft] extra
    from scipy import fft as _scipy_fft
except ImportError:  # pragma: no cover - numpy alone still works, slower
    _scipy_fft = None

from radlogger.measurement import Measurement
from radlogger.options import Option
from radlogger.processing import ProcessingEndpoint

__all__ = ["FFTEndpoint", "hann", "iq_correct", "to_complex_rows", "power_db"]

_WINDOWS: dict[int, np.ndarray] = {}
#: most packets transformed as one 2-D array: past a few hundred rows the arrays leave the
#: cache and a batch costs more per packet, not less (bench_wsa4000 fft_batch_rows)
_BATCH_ROWS = 128
#: rows of joined blocks (``group = read``) per transform: fewer numpy calls, each of which
#: must win the GIL back, matter more there than the cache (see FFTEndpoint._blocks)
_BLOCK_ROWS = 256


def hann(n: int) -> np.ndarray:
    """Periodic Hann window of length ``n`` (float32, cached)."""
    w = _WINDOWS.get(n)
    if w is None:
        w = _WINDOWS[n] = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float32)
    return w


def _power_sums(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: sum(I*I), sum(Q*Q), sum(I*Q) of complex rows, from two complex dot products
    (``sum(conj(x)*x) = pI + pQ``, ``sum(x*x) = pI - pQ + 2j*pIQ``): contiguous BLAS-speed
    reductions instead of six passes over strided real views (measured 0.5 vs 5 us a
    1024-sample row)."""
    if hasattr(np, "vecdot"):  # numpy >= 2
        s1 = np.vecdot(x, x).real
        s2 = np.vecdot(np.conj(x), x)
    else:  # pragma: no cover - numpy 1.x
        s1 = np.einsum("ij,ij->i", np.conj(x), x).real
        s2 = np.einsum("ij,ij->i", x, x)
    s1 = s1.astype(np.float64)
    s2 = s2.astype(np.complex128)
    return (s1 + s2.real) / 2, (s1 - s2.real) / 2, s2.imag / 2


def iq_correct(x: np.ndarray, inplace: bool = False) -> np.ndarray:
    """Correct I/Q amplitude and phase imbalance per row, estimated from the data itself.

    With ``pI = <I^2>``, ``pQ = <Q^2>``, ``pIQ = <I*Q>``: ``sin(phi) = pIQ/sqrt(pI*pQ)`` and
    ``Q' = (Q*sqrt(pI/pQ) - I*sin(phi)) / cos(phi)`` (Gram-Schmidt orthogonalisation, the same
    estimate as ThinkRF's host library).  Deterministic: no random terms.  Rows without Q power
    (I-only data) are left alone.  ``inplace`` (complex64 rows the caller owns): Q is
    rewritten in ``x`` itself, two passes, no new array.
    """
    p_i, p_q, p_iq = _power_sums(x)
    ok = (p_i > 0) & (p_q > 0)
    safe_q = np.where(ok, p_q, 1)
    safe_i = np.where(ok, p_i, 1)
    sin_phi = np.clip(np.where(ok, p_iq / np.sqrt(safe_i * safe_q), 0), -0.999999, 0.999999)
    cos_phi = np.sqrt(1 - sin_phi * sin_phi)
    gain = (np.where(ok, np.sqrt(safe_i / safe_q), 1) / cos_phi)[:, None]
    mix = (sin_phi / cos_phi)[:, None]
    out = x if inplace else x.copy()
    q = out.imag
    q *= gain.astype(q.dtype)
    q -= out.real * mix.astype(q.dtype)
    return out


def to_complex_rows(values: list[np.ndarray], scale: float = 1.0) -> np.ndarray:
    """Stack equal-length packets as fresh complex64 rows scaled by ``scale``.

    Accepts complex arrays (n,) or integer/real (n, 2) I/Q pairs.  One copy: the stack.
    """
    first = values[0]
    if np.iscomplexobj(first):
        rows = np.array(values, dtype=np.complex64)  # one C call; np.stack costs ~1 us a row
    else:
        pairs = np.array(values, dtype=np.float32)
        rows = np.ascontiguousarray(pairs.view(np.complex64)[..., 0])
    if scale != 1.0:
        rows *= np.float32(scale)
    return rows


_WEIGHTS: dict[tuple[int, bool, float], np.ndarray] = {}


def _weights(n: int, window: bool, scale: float) -> np.ndarray:
    """Per-sample factor: window, scale, and ``(-1)**k`` when ``n`` is even, which shifts the
    spectrum by N/2 bins, i.e. does fftshift's job inside the multiply already paid for."""
    key = (n, window, scale)
    w = _WEIGHTS.get(key)
    if w is None:
        w = hann(n) if window else np.ones(n, np.float32)
        w = w * np.float32(scale)
        if n % 2 == 0:
            w[1::2] *= -1
        w = _WEIGHTS[key] = w.astype(np.float32)
    return w


def _fft_rows(x: np.ndarray) -> np.ndarray:
    """FFT along axis 1 of complex64 rows, in whichever library is fastest here.

    Measured on the 2-core benchmark VM, 1024-point rows in batches of 16-512
    (README, Benchmarks): scipy.fft single precision 2.1-2.3 us/row; numpy 2.4's complex64
    path 8-25 us/row (slower than its own complex128 path, 3.7-4.0 us/row, which is therefore
    the fallback without scipy).  ``workers=2`` did not win at these sizes and would take the
    core the driver needs.
    """
    if _scipy_fft is not None:
        return _scipy_fft.fft(x, axis=1, overwrite_x=True)  # type: ignore[no-any-return]
    return np.fft.fft(x.astype(np.complex128), axis=1)


def power_db(x: np.ndarray, dc_removal: bool = True, correct: bool = False,
             window: bool = True, scale: float = 1.0, overwrite: bool = False) -> np.ndarray:
    """Rows of complex samples (times ``scale`` in [-1, 1)) -> fftshifted ``20*log10(|X|/N)``
    (float32).  Single precision (scipy.fft; see :func:`_fft_rows`); with
    ``overwrite`` the rows are worked on in place (the caller's own fresh stack)."""
    n = x.shape[1]
    if not overwrite or x.dtype != np.complex64:
        x = x.astype(np.complex64)  # a copy: the caller's array stays as it was
    if dc_removal:
        x -= x.mean(axis=1, keepdims=True)
    if correct:
        x = iq_correct(x, inplace=True)
    x *= _weights(n, window, scale)
    spectrum = _fft_rows(x)
    if n % 2:
        spectrum = np.fft.fftshift(spectrum, axes=1)
    mag = np.abs(spectrum).astype(np.float32, copy=False)
    np.maximum(mag, np.float32(1e-30), out=mag)
    np.log10(mag, out=mag)
    mag *= np.float32(20)
    mag -= np.float32(20 * np.log10(n))
    return mag


_C64 = np.dtype(np.complex64)


def _shape_key(value: Any) -> tuple[int, bool] | None:
    """(length, complex) of a usable packet, else None."""
    if value.__class__ is np.ndarray and value.dtype is _C64 and value.ndim == 1:
        n = value.shape[0]  # the driver's packets: the common case, checked first
        return (n, True) if n >= 2 else None
    shape = getattr(value, "shape", None)
    if shape is None:
        return None
    if np.iscomplexobj(value) and len(shape) == 1 and shape[0] >= 2:
        return shape[0], True
    if len(shape) == 2 and shape[1] == 2 and shape[0] >= 2 and value.dtype.kind in "iuf":
        return shape[0], False
    return None


def _is_block(value: np.ndarray) -> bool:
    """A (k, n) complex block or a (k, n, 2) block of I/Q pairs (the driver's ``group =
    read``), k >= 1, n >= 2."""
    shape = value.shape
    if value.ndim == 2:
        return value.dtype.kind == "c" and shape[1] >= 2 and shape[0] >= 1
    return value.ndim == 3 and shape[2] == 2 and shape[1] >= 2 and shape[0] >= 1 and \
        value.dtype.kind in "iuf"


class FFTEndpoint(ProcessingEndpoint):
    kind = "fft"
    summary = "I/Q packets -> power spectra in dB full scale on <device>.spectrum (batched, lazy)"
    output_default = "spectrum"  # wsa1.iq -> wsa1.spectrum
    accepts = ("iq",)
    options = (
        Option("full_scale", float, 8192.0, "sample value of full scale (2**13 for 14-bit I/Q)",
               min=1e-30),
        Option("dc_removal", bool, True, "subtract the mean of I and of Q first"),
        Option("iq_correction", bool, False, "estimate and correct I/Q gain and phase "
               "imbalance per packet (deterministic)"),
        Option("window", str, "hann", "window before the FFT", choices=("hann", "none")),
        Option("batch", bool, True, "transform all waiting packets of equal length as one "
               "2-D array (off: one FFT call per packet, for comparison)"),
    )

    def __init__(self, name: str, settings: Any = None, **kw: Any) -> None:
        super().__init__(name, settings, **kw)
        self.scale = 1.0 / self.settings.full_scale
        self.fft_calls = 0  # np.fft.fft invocations (batched: one per group)
        self.spectra = 0  # spectra computed

    def counters(self) -> dict[str, int | float]:
        return {**super().counters(), "fft_calls": self.fft_calls, "spectra": self.spectra}

    def _blocks(self, values: list[np.ndarray]) -> list[np.ndarray]:
        """Blocks of packets (k_i, n) -> their (k_i, n) spectra, all waiting blocks of one
        length as one 2-D array (up to :data:`_BLOCK_ROWS` rows), one measurement out each.

        Why join blocks: every numpy call gives up the GIL and must win it back from the
        driver, broker and store threads; with ``iq_correction`` a block costs ~25 calls, and
        one block per transform lost packets at line rate (fft inbox full, 60 s runs).  Joined,
        a chain that falls behind does fewer, larger transforms and catches up.  The join is
        also the copy the transform works in (other subscribers share the input blocks)."""
        s = self.settings
        rows: np.ndarray = np.concatenate(values) if len(values) > 1 else values[0]
        if rows.ndim == 3:
            rows = np.ascontiguousarray(np.asarray(rows, np.float32).view(np.complex64)[..., 0])
        elif len(values) == 1 or rows.dtype != np.complex64:
            rows = rows.astype(np.complex64)  # a copy: never transform a shared block
        db = power_db(rows, s.dc_removal, s.iq_correction, s.window == "hann",
                      scale=self.scale, overwrite=True)
        self.fft_calls += 1
        self.spectra += len(db)
        out, at = [], 0
        for v in values:
            out.append(db[at:at + len(v)])
            at += len(v)
        return out

    def handle_batch(self, batch: list[Measurement]) -> None:
        s = self.settings
        batch = self.demanded(batch)
        groups: dict[tuple[int, bool], list[int]] = {}
        blocks: dict[tuple[int, ...], list[int]] = {}
        results: list[np.ndarray | None] = [None] * len(batch)
        for idx, m in enumerate(batch):
            value = m.value
            if value.__class__ is np.ndarray and value.ndim > 1 and _is_block(value):
                blocks.setdefault((*value.shape[1:], value.dtype.num), []).append(idx)
                continue
            key = _shape_key(value)
            if key is None:
                self.item_failed(m, ValueError(
                    f"{m.topic}: expected complex I/Q (n,), I/Q pairs (n, 2) or a block of "
                    "either (k, n) / (k, n, 2), got "
                    f"{type(m.value).__name__} {getattr(m.value, 'shape', '')}"))
                continue
            groups.setdefault(key, []).append(idx)
        for idxs in blocks.values():
            start, rows = 0, 0
            for j, i in enumerate(idxs):
                rows += len(batch[i].value)
                if rows >= _BLOCK_ROWS or j == len(idxs) - 1:
                    chunk = idxs[start:j + 1]
                    for i2, db in zip(chunk, self._blocks([batch[c].value for c in chunk]),
                                      strict=True):
                        results[i2] = db
                    start, rows = j + 1, 0
        step = _BATCH_ROWS if s.batch else 1
        correct, window = s.iq_correction, s.window == "hann"
        for idxs in groups.values():
            for k in range(0, len(idxs), step):
                chunk = idxs[k:k + step]
                rows = to_complex_rows([batch[i].value for i in chunk])
                db = power_db(rows, s.dc_removal, correct, window, scale=self.scale,
                              overwrite=True)
                self.fft_calls += 1
                self.spectra += len(chunk)
                for row, i in enumerate(chunk):
                    results[i] = db[row]
        extra_window = s.window
        out_topic = self.out_topic
        name = self.name
        out: list[Measurement] = []
        for m, value in zip(batch, results, strict=True):
            if value is None:
                continue
            meta = dict(m.meta) if m.meta else {}
            meta["fft_size"] = value.shape[-1]
            meta["window"] = extra_window
            # Measurement.derive, inlined: one dict and one object per spectrum
            out.append(Measurement(name, out_topic(m.topic), value, m.t_ns, "dBFS",
                                   m.device_time, meta, m.seq))
        if out:
            self.publish_many(out)
