"""Normalize lag sets by their data-valid counts (step 1 of the XF lag chain).

A correlator lag is a sum over the samples that were valid for it; dividing by that count
turns it into a correlation coefficient that does not depend on blanking or integration
length.  Each frame carries two counts: at the centre lag (zero delay, index N/2) and at the
edge lags; lags in between get a count interpolated linearly with their distance from the
centre.  A frame with a zero count (a missing, zero-filled frame, or one the correlator
flagged) cannot be divided by: its lags are set to 0 and the frame is listed in
``meta["flagged"]`` so later steps and storage know.

Batched: lag sets of the same length waiting in the inbox are stacked and normalized in one
numpy expression.  Lazy (``radlogger.processing``): with nothing using the output, directly or
through later processing endpoints, lag sets are only counted in ``skipped``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from radlogger.measurement import Measurement
from radlogger.processing import ProcessingEndpoint

from .common import group_by

__all__ = ["LagNormalizeEndpoint", "normalize"]

#: lag sets normalized per numpy call: big enough to amortize the call, small enough for cache
CHUNK = 128


def _distance(n: int) -> np.ndarray:
    """|i - N/2| / (N/2) for lag index i: 0 at the centre lag, 1 at the first lag."""
    return (np.abs(np.arange(n) - n // 2) / (n // 2 or 1)).astype(np.float32)


def normalize(lags: np.ndarray, centre: np.ndarray, edge: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """Normalize stacked lag sets (B, N) by per-frame counts (B, F); returns (lags, flagged).

    ``flagged`` (B, F) marks frames with a zero count; their lags come out as 0.  The weight
    of lag i in frame f is ``c_f (1 - d_i) + e_f d_i`` (d: distance from the centre lag),
    computed by broadcasting (B, F, 1) counts against (F, N/F) distances, and applied as a
    multiplication by its inverse (0 for flagged frames): no per-lag copies of the counts.
    """
    b, n = lags.shape
    frames = centre.shape[1]
    c = centre.astype(np.float32)
    e = edge.astype(np.float32)
    flagged = (c == 0) | (e == 0)
    ok = ~flagged
    c[flagged] = 1.0
    e[flagged] = 1.0
    d = _distance(n).reshape(frames, n // frames)
    inv = 1.0 / (c[:, :, None] * (1.0 - d) + e[:, :, None] * d)
    inv *= ok[:, :, None]
    out = (lags.reshape(b, frames, -1) * inv).reshape(b, n)
    return out.astype(np.complex64, copy=False), flagged


class LagNormalizeEndpoint(ProcessingEndpoint):
    kind = "lag_normalize"
    summary = "normalizes lag sets by their data-valid counts; zero counts are flagged"
    output_default = "{quantity}_norm"  # widar.lagset -> widar.lagset_norm
    accepts = ("lagset*",)

    def __init__(self, name: str, settings: Any = None, **kw: Any) -> None:
        super().__init__(name, settings, **kw)
        self.flagged_frames = 0

    def counters(self) -> dict[str, int | float]:
        return {**super().counters(), "flagged_frames": self.flagged_frames}

    def handle_batch(self, batch: list[Measurement]) -> None:
        good = []
        for m in self.demanded(batch):
            problem = _check(m)
            if problem:
                self.item_failed(m, ValueError(problem))
            else:
                good.append(m)
        groups = group_by(good, lambda m: (m.topic, len(m.value), len(_meta(m)["dv_centre"])))
        name = self.name
        publish_many = self.publish_many
        for (topic, _, _), items in groups.items():
            out_topic = self.out_topic(topic)
            for lo in range(0, len(items), CHUNK):  # cache-sized blocks of a big backlog
                chunk = items[lo:lo + CHUNK]
                metas = [_meta(m) for m in chunk]
                lags = np.concatenate([m.value for m in chunk]).reshape(len(chunk), -1)
                centre = np.array([meta["dv_centre"] for meta in metas])
                edge = np.array([meta["dv_edge"] for meta in metas])
                out, flagged = normalize(lags, centre, edge)
                n_flagged = flagged.sum(axis=1)
                self.flagged_frames += int(n_flagged.sum())
                # m.derive(name, out_topic, value, "", {...}), without a call per item
                publish_many([Measurement(name, out_topic, value, m.t_ns, "", m.device_time, {
                    **meta, "normalized": True,
                    "flagged": np.flatnonzero(flags).tolist() if nf else []}, m.seq)
                    for m, meta, value, flags, nf in zip(chunk, metas, out, flagged,
                                                         n_flagged.tolist(), strict=True)])


def _meta(m: Measurement) -> dict[str, Any]:
    return m.meta or {}


def _check(m: Measurement) -> str:
    """Why ``m`` cannot be normalized, or ''."""
    value, meta = m.value, m.meta or {}
    c, e = meta.get("dv_centre"), meta.get("dv_edge")
    if type(value) is np.ndarray and value.ndim == 1 and type(c) is np.ndarray \
            and type(e) is np.ndarray and c.ndim == 1 and c.shape == e.shape and len(c) \
            and not len(value) % len(c):
        return ""  # the common case, checked cheaply
    if not isinstance(value, np.ndarray) or value.ndim != 1 or not len(value):
        return f"{m.topic}: a lag set must be a 1-D array, got {type(value).__name__}"
    c, e = meta.get("dv_centre"), meta.get("dv_edge")
    if c is None or e is None:
        return f"{m.topic}: lag set has no data-valid counts (meta dv_centre, dv_edge)"
    c, e = np.asarray(c), np.asarray(e)
    if c.ndim != 1 or c.shape != e.shape or not len(c) or len(value) % len(c):
        return (f"{m.topic}: {len(c)} data-valid counts do not divide {len(value)} lags "
                "into frames")
    return ""
