"""The ``calibrate`` endpoint: spectra in dB full scale -> dBm.

``dBm = dBFS + reflevel + 15.7678`` where ``reflevel`` comes from the instrument's
reference-level context (``meta["reflevel"]``) and 15.7678 dB is the WSA4000's
reference-level error constant (``20*log10(2**13) - 62.5``).  When the packet's trailer says
the spectrum is inverted (``meta["spectral_inversion"]``) bin k and bin -k swap; the DC bin,
spoiled by the receiver's DC offset, becomes the mean of its two neighbours.

Why the flip is ``roll(x[::-1], 1)`` and not ``x[::-1]``: after fftshift, index i holds
frequency bin ``i - N/2``; inverting maps bin k to -k, i.e. index i to ``(N - i) mod N``.  A
plain reversal would put every component one bin off.

Batched and lazy like ``fft``: rows of equal length are corrected as one 2-D array, and with
nothing using the output no work is done (counted in :attr:`skipped`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from radlogger.measurement import Measurement
from radlogger.options import Option, OptionError
from radlogger.processing import ProcessingEndpoint

__all__ = ["CalibrateEndpoint", "REFLEVEL_ERROR", "flip_spectrum", "repair_dc"]

REFLEVEL_ERROR = 15.7678


def flip_spectrum(rows: np.ndarray) -> np.ndarray:
    """Swap bin k and bin -k of fftshifted rows (the last axis)."""
    return np.roll(rows[..., ::-1], 1, axis=-1)


def repair_dc(rows: np.ndarray) -> None:
    """In place: the centre bin of fftshifted rows becomes the mean of its neighbours."""
    n = rows.shape[-1]
    if n >= 3:
        c = n // 2
        rows[..., c] = 0.5 * (rows[..., c - 1] + rows[..., c + 1])


class CalibrateEndpoint(ProcessingEndpoint):
    kind = "calibrate"
    summary = "spectra in dBFS -> dBm: reference level + 15.7678 dB, inversion flip, DC repair"
    output_default = "{quantity}_dbm"  # wsa1.spectrum -> wsa1.spectrum_dbm
    accepts = ("spectrum*",)
    options = (
        Option("suffix", str, None, "older spelling of output: appended to the input topic, "
               "i.e. output = {quantity}<suffix>"),
        Option("correction", float, REFLEVEL_ERROR, "reference-level error constant in dB"),
        Option("reflevel", float, None, "reference level in dBm for spectra whose packets "
               "carry none (unset: such spectra are errors)"),
        Option("flip_inversion", bool, True, "flip spectra marked spectrally inverted"),
        Option("repair_dc", bool, True, "replace the DC bin by the mean of its neighbours"),
    )

    def __init__(self, name: str, settings: Any = None, **kw: Any) -> None:
        super().__init__(name, settings, **kw)
        self.calibrated = 0
        self.flipped = 0

    def counters(self) -> dict[str, int | float]:
        return {**super().counters(), "calibrated": self.calibrated, "flipped": self.flipped}

    def output_option(self) -> tuple[str, str]:
        """``suffix = _x`` (the option's older spelling) still works: ``output = {quantity}_x``."""
        s = self.settings
        if s.suffix is None:
            return super().output_option()
        template = "{quantity}" + s.suffix
        if s.output not in (self.output_default, template):
            raise OptionError("suffix", f"suffix = {s.suffix!r} and output = {s.output!r} "
                              f"disagree: set only output, e.g. output = {template}")
        return "suffix", template

    def _reflevel(self, m: Measurement) -> float:
        meta = m.meta or {}
        ref = meta.get("reflevel", self.settings.reflevel)
        if ref is None:
            raise ValueError(f"{m.topic}: no reference level (the instrument sent no "
                             "reflevel context yet); set 'reflevel' on this endpoint to assume "
                             "one")
        return float(ref)

    def _block(self, rows: np.ndarray, ref: float, inverted: bool) -> np.ndarray:
        """A (k, n) block of spectra (the driver's ``group = read``) -> a fresh (k, n) block
        in dBm: one add over the block, which also is the copy (other subscribers of the
        input share its array, so it is never changed in place)."""
        s = self.settings
        out = np.add(rows, np.float32(ref + s.correction), dtype=np.float32)
        if inverted and s.flip_inversion:
            out = flip_spectrum(out)
            self.flipped += len(out)
        if s.repair_dc:
            repair_dc(out)
        return out

    def handle_batch(self, batch: list[Measurement]) -> None:
        s = self.settings
        batch = self.demanded(batch)
        groups: dict[int, list[tuple[int, float, bool]]] = {}
        default_ref = s.reflevel
        results: list[np.ndarray | None] = [None] * len(batch)
        for idx, m in enumerate(batch):
            value = m.value
            meta = m.meta
            if value.__class__ is np.ndarray and value.ndim == 2 and value.dtype.kind == "f":
                try:
                    results[idx] = self._block(value, self._reflevel(m),
                                               bool(meta.get("spectral_inversion")) if meta
                                               else False)
                except ValueError as exc:
                    self.item_failed(m, exc)
                continue
            if value.__class__ is np.ndarray and value.ndim == 1 and value.dtype.kind == "f" \
                    and meta and meta.get("reflevel", default_ref) is not None:
                ref = float(meta.get("reflevel", default_ref))  # the common case, checked once
            else:
                try:
                    if getattr(value, "ndim", 0) != 1 or value.dtype.kind != "f":
                        raise ValueError(f"{m.topic}: expected a 1-D real spectrum, got "
                                         f"{type(value).__name__} {getattr(value, 'shape', '')}")
                    ref = self._reflevel(m)
                except ValueError as exc:
                    self.item_failed(m, exc)
                    continue
            inverted = bool(meta.get("spectral_inversion")) if meta else False
            groups.setdefault(value.shape[0], []).append((idx, ref, inverted))
        for items in groups.values():
            idxs = [i for i, _, _ in items]
            # one fresh array (np.array: one C call, np.stack ~1 us a row), then in place
            rows = np.array([batch[i].value for i in idxs], dtype=np.float32)
            offsets = np.array([r for _, r, _ in items], dtype=np.float32) + \
                np.float32(s.correction)
            rows += offsets[:, None]
            if s.flip_inversion:
                inv = np.array([v for _, _, v in items], dtype=bool)
                if inv.any():
                    rows[inv] = flip_spectrum(rows[inv])
                    self.flipped += int(inv.sum())
            if s.repair_dc:
                repair_dc(rows)
            for row, i in enumerate(idxs):
                results[i] = rows[row]
        name, out_topic = self.name, self.out_topic
        out: list[Measurement] = []
        for m, value in zip(batch, results, strict=True):
            if value is None:
                continue
            # Measurement.derive, inlined
            out.append(Measurement(name, out_topic(m.topic), value, m.t_ns, "dBm",
                                   m.device_time, dict(m.meta) if m.meta else None, m.seq))
            self.calibrated += len(value) if value.ndim == 2 else 1
        if out:
            self.publish_many(out)
