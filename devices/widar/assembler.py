"""Sort and assemble WIDAR lag frames, arriving in any order, into lag sets.

A lag set is the N lags of one output product: baseline (stations X, Y), baseband and sub-band
(both stations' ids), polarization product, phase bin and timestamp; that tuple is its key.  It
is made of ``N / lags_per_frame`` frames; a frame's ``start block`` is its position in the lag
set (in units of frames) and its ``number of blocks`` must equal the frames per lag set, so the
frames are stitched in start-block order as they are placed.

Frames are never retransmitted, so the assembler cannot wait forever: a lag set is emitted as
soon as it is complete, or when ``timeout`` seconds have passed since its first frame, with the
missing frames zero-filled and listed.  A frame already placed is a duplicate (counted,
ignored); a frame whose lag set was already emitted is late (counted, ignored; keys are
remembered for ``late_memory`` seconds).  ``max_pending`` and ``max_pending_mb`` bound memory
when frames with garbage keys keep opening lag sets: the oldest is emitted early and counted as
evicted.  Both bounds are needed because a pending set holds all its lags from its first frame:
with large lag sets a count alone (100,000 x 4 MiB at 2**19 lags) would not bound anything.

The hot path works per received batch with numpy: keys, geometry and product checks, and
within-batch duplicates are computed for the whole batch; Python work is per lag set touched,
not per frame.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from radlogger.options import Option, OptionError

from .frames import POLARIZATIONS, FrameBatch
from .products import Products, parse_baselines

__all__ = ["ASSEMBLY_OPTIONS", "Assembler", "LagSet", "Products", "parse_baselines"]

#: option declaration shared by the live driver and the replay device
ASSEMBLY_OPTIONS = (
    Option("lags", int, 1024, "lags per lag set (per product); a power of two", min=1),
    Option("lags_per_frame", int, 128, "lags in one frame; a power of two dividing lags",
           min=1, max=4096),
    Option("timeout", float, 0.1, "seconds after its first frame a lag set is emitted even "
           "when frames are missing (zero-filled)", min=0.0),
    Option("late_memory", float, 0.0, "seconds an emitted lag set is remembered, so its late "
           "frames are counted as late (0 = 20 x timeout, at least 1 s)", min=0.0),
    Option("max_pending", int, 100_000, "lag sets in assembly at once; beyond, the oldest is "
           "emitted early (counted as evicted)", min=1),
    Option("max_pending_mb", float, 1024.0, "memory of the lag sets in assembly, MiB (each "
           "holds all its lags however few frames arrived); beyond, the oldest is emitted "
           "early (counted as evicted)", min=0.001),
    Option("baselines", list, [], "accepted baselines as X-Y station pairs, e.g. 1-2, 1-3 "
           "(empty = any)"),
    Option("basebands", list, [], "accepted baseband ids (empty = any)"),
    Option("subbands", list, [], "accepted sub-band ids (empty = any)"),
    Option("polarizations", list, [], "accepted polarization products of AA, AB, BA, BB "
           "(empty = any)"),
    Option("phase_bins", int, 0, "phase bins per product: bins >= this are rejected "
           "(0 = any)", min=0, max=65536),
    Option("config_id", int, 0, "configuration id stamped into every lag set's metadata"),
)


class LagSet:
    """One lag set in assembly (and, once emitted, its result).

    ``lags`` is complex64 of length N, zero where frames are missing; ``have`` marks the frames
    that arrived; ``dv_centre``/``dv_edge`` are the per-frame data-valid counts (0 for missing
    frames), kept for normalization.
    """

    __slots__ = ("key", "lags", "have", "dv_centre", "dv_edge", "header", "received",
                 "duplicates", "first_seen", "reason")

    def __init__(self, key: bytes, header: np.ndarray, n_lags: int, n_frames: int,
                 now: float) -> None:
        self.key = key
        self.header = header
        self.lags = np.zeros(n_lags, np.complex64)
        self.have = np.zeros(n_frames, bool)
        self.dv_centre = np.zeros(n_frames, np.uint32)
        self.dv_edge = np.zeros(n_frames, np.uint32)
        self.received = 0
        self.duplicates = 0
        self.first_seen = now
        self.reason = ""  # why it was emitted: complete, timeout, evicted, flush

    @property
    def complete(self) -> bool:
        return self.received == len(self.have)

    @property
    def timestamp(self) -> int:
        """Device time of the lag set: ns since the Unix epoch (from the frames)."""
        return int(self.header[4]) << 32 | int(self.header[5])

    @property
    def missing(self) -> list[int]:
        return np.flatnonzero(~self.have).tolist()

    def meta(self, config_id: int = 0) -> dict[str, Any]:
        w1, w3, w8 = (int(self.header[i]) for i in (1, 3, 8))
        sx, sy = w1 & 0xFF, (w1 >> 16) & 0xFF
        return {
            "baseline": f"{sx}-{sy}", "station_x": sx, "station_y": sy,
            "baseband": (w1 >> 13) & 7, "subband": (w1 >> 8) & 31,
            "baseband_y": w1 >> 29, "subband_y": (w1 >> 24) & 31,
            "polarization": POLARIZATIONS[w3 >> 30], "phase_bin": w8 & 0xFFFF,
            "board": w8 >> 16, "config_id": config_id,
            "n_lags": len(self.lags), "lags_per_frame": len(self.lags) // len(self.have),
            "frames_expected": len(self.have), "frames_received": self.received,
            "missing": [] if self.received == len(self.have) else self.missing,
            "complete": self.complete, "duplicates": self.duplicates,
            "emitted": self.reason, "dv_centre": self.dv_centre, "dv_edge": self.dv_edge,
        }


class Assembler:
    """Frames in (batches, any order), lag sets out; all counters are plain attributes."""

    def __init__(self, lags: int = 1024, lags_per_frame: int = 128, timeout: float = 0.1,
                 products: Products | None = None, late_memory: float = 0.0,
                 max_pending: int = 100_000,
                 clock: Callable[[], float] = time.monotonic,
                 rejected: Counter[str] | None = None,
                 max_pending_mb: float = 1024.0) -> None:
        for key, value in (("lags", lags), ("lags_per_frame", lags_per_frame)):
            if value < 1 or value & (value - 1):
                raise OptionError(key, f"{key} = {value}: must be a power of two")
        if lags_per_frame > lags:
            raise OptionError("lags_per_frame", f"lags_per_frame = {lags_per_frame} is more "
                              f"than lags = {lags}: a frame cannot exceed its lag set")
        if lags // lags_per_frame > 255:
            raise OptionError("lags_per_frame", f"lags / lags_per_frame = "
                              f"{lags // lags_per_frame}: a lag set has at most 255 frames "
                              "(8-bit block count); raise lags_per_frame")
        self.n_lags = lags
        self.lags_per_frame = lags_per_frame
        self.n_frames = lags // lags_per_frame
        self._all_have = np.ones(self.n_frames, bool)  # read-only: shared by whole lag sets
        self._all_have.flags.writeable = False
        self.timeout = timeout
        self.late_memory = late_memory or max(1.0, 20 * timeout)
        set_bytes = 8 * lags + 9 * self.n_frames + 1024  # lags, have/dv arrays, overhead
        #: effective bound: the configured count, or fewer when their lags would not fit
        self.max_pending = max(1, min(max_pending, int(max_pending_mb * (1 << 20)) // set_bytes))
        self.products = products or Products()
        self.clock = clock
        self.pending: OrderedDict[bytes, LagSet] = OrderedDict()
        self._emitted: OrderedDict[bytes, float] = OrderedDict()  # key -> forget-at time
        # counters (one writer: the thread that calls add/expire/flush)
        self.frames = 0  # frames offered
        self.placed = 0  # frames placed in a lag set
        self.duplicates = 0
        self.late = 0
        # bad_geometry, unknown_product (the driver passes its bad-frame counter)
        self.rejected: Counter[str] = Counter() if rejected is None else rejected
        self.emitted = 0
        self.complete = 0
        self.incomplete = 0
        self.missing_frames = 0
        self.evicted = 0

    @classmethod
    def from_settings(cls, s: Mapping[str, Any], clock: Callable[[], float] = time.monotonic,
                      rejected: Counter[str] | None = None) -> Assembler:
        products = Products(s["baselines"], s["basebands"], s["subbands"], s["polarizations"],
                            s["phase_bins"])
        return cls(s["lags"], s["lags_per_frame"], s["timeout"], products, s["late_memory"],
                   s["max_pending"], clock, rejected,
                   s.get("max_pending_mb", 1024.0))

    # ---------------------------------------------------------------- frames in
    def add(self, batch: FrameBatch, now: float | None = None) -> list[LagSet]:
        """Place a batch of good frames; returns the lag sets it completed (and evictions)."""
        m = len(batch)
        if not m:
            return []
        now = self.clock() if now is None else now
        self.frames += m
        w = batch.words
        nf = self.n_frames
        start = w[:, 2] >> 24
        fits = (((w[:, 2] >> 16) & 0xFF) == nf) & (start < nf)
        known = fits if self.products.any else fits & self.products.accept(w)
        if not known.all():
            geometry = int(m - np.count_nonzero(fits))
            if geometry:
                self.rejected["bad_geometry"] += geometry
            unknown = int(np.count_nonzero(fits & ~known))
            if unknown:
                self.rejected["unknown_product"] += unknown
            idx = np.flatnonzero(known)
            if not len(idx):
                return []
        else:
            idx = None
        keys = np.empty((m, 4), np.uint32)
        keys[:, 0] = w[:, 1]
        keys[:, 1] = (w[:, 3] >> 30) << 16 | (w[:, 8] & 0xFFFF)
        keys[:, 2] = w[:, 4]
        keys[:, 3] = w[:, 5]
        if idx is not None:
            keys = keys[idx]
            rows_all = idx
        else:
            rows_all = np.arange(m)
        uniq, inv = np.unique(keys.view("V16").ravel(), return_inverse=True)
        inv = inv.ravel()
        # sort by (lag set, slot); the first of equal (set, slot) pairs is kept
        slot = start[rows_all].astype(np.int64)
        combo = inv.astype(np.int64) * nf + slot
        order = np.argsort(combo, kind="stable")
        sc = combo[order]
        first = np.ones(len(sc), bool)
        first[1:] = sc[1:] != sc[:-1]
        dup_in_batch = len(sc) - int(np.count_nonzero(first))
        if dup_in_batch:
            self.duplicates += dup_in_batch
            dups_of = np.bincount(inv[order[~first]], minlength=len(uniq))
        else:
            dups_of = None
        order = order[first]
        group_of = inv[order]
        bounds = np.searchsorted(group_of, np.arange(len(uniq) + 1))
        rows_sorted = rows_all[order]
        slots_sorted = slot[order]
        dv_c = w[:, 6]
        dv_e = w[:, 7]
        lags = batch.lags
        pending = self.pending
        emitted = self._emitted
        out: list[LagSet] = []
        # Fast path: a lag set whose frames all arrived in this batch, once each (the usual
        # case): its lags, counts and header come from a few gathers for the whole batch, not
        # ten small numpy operations each (12 -> 3 us a lag set).
        whole = (np.diff(bounds) == nf) if dups_of is None else np.zeros(len(uniq), bool)
        if whole.any():
            gathered = lags[rows_sorted].reshape(-1, self.n_lags) if whole.all() else None
            firsts = w[rows_sorted[bounds[:-1]]]
            dvc_s, dve_s = dv_c[rows_sorted], dv_e[rows_sorted]
        whole_l = whole.tolist()
        for g in range(len(uniq)):
            lo, hi = bounds[g], bounds[g + 1]
            key = uniq[g].tobytes()
            if whole_l[g] and key not in pending and key not in emitted:
                ls = LagSet.__new__(LagSet)
                ls.key, ls.header = key, firsts[g]
                ls.lags = gathered[g] if gathered is not None else \
                    lags[rows_sorted[lo:hi]].reshape(-1)
                ls.have = self._all_have
                ls.dv_centre, ls.dv_edge = dvc_s[lo:hi], dve_s[lo:hi]
                ls.received, ls.duplicates, ls.first_seen, ls.reason = nf, 0, now, ""
                self.placed += nf
                out.append(self._finish(ls, "complete", now))
                continue
            rows = rows_sorted[lo:hi]
            ls = pending.get(key)
            if ls is None:
                if key in emitted:
                    self.late += int(hi - lo)  # numpy ints would leak into counters
                    continue
                ls = LagSet(key, w[rows[0]].copy(), self.n_lags, nf, now)
                pending[key] = ls
            slots = slots_sorted[lo:hi]
            fresh = ~ls.have[slots]
            if not fresh.all():
                self.duplicates += int(len(slots) - np.count_nonzero(fresh))
                rows = rows[fresh]
                slots = slots[fresh]
            ls.duplicates += int(hi - lo - len(slots))
            if dups_of is not None:
                ls.duplicates += int(dups_of[g])
            if not len(slots):
                continue
            ls.lags.reshape(nf, -1)[slots] = lags[rows]
            ls.have[slots] = True
            ls.dv_centre[slots] = dv_c[rows]
            ls.dv_edge[slots] = dv_e[rows]
            ls.received += len(slots)
            self.placed += len(slots)
            if ls.received == nf:
                del pending[key]
                out.append(self._finish(ls, "complete", now))
        while len(pending) > self.max_pending:
            _, ls = pending.popitem(last=False)
            self.evicted += 1
            out.append(self._finish(ls, "evicted", now))
        emitted = self._emitted  # bounded here too: a caller may not call expire() for a while
        while len(emitted) > 4 * self.max_pending:
            emitted.popitem(last=False)
        return out

    # ---------------------------------------------------------------- lag sets out
    def _finish(self, ls: LagSet, reason: str, now: float) -> LagSet:
        ls.reason = reason
        self.emitted += 1
        if ls.received == self.n_frames:
            self.complete += 1
        else:
            self.incomplete += 1
            self.missing_frames += self.n_frames - ls.received
        emitted = self._emitted
        emitted[ls.key] = now + self.late_memory
        emitted.move_to_end(ls.key)
        return ls

    def next_deadline(self) -> float | None:
        """Monotonic time the oldest pending lag set times out, or None."""
        if not self.pending:
            return None
        return next(iter(self.pending.values())).first_seen + self.timeout

    def expire(self, now: float | None = None) -> list[LagSet]:
        """Emit the lag sets whose timeout has passed (zero-filled); forget old keys."""
        now = self.clock() if now is None else now
        out: list[LagSet] = []
        pending = self.pending
        limit = now - self.timeout
        while pending:
            key, ls = next(iter(pending.items()))
            if ls.first_seen > limit:
                break
            del pending[key]
            out.append(self._finish(ls, "timeout", now))
        emitted = self._emitted
        while emitted:
            key, forget = next(iter(emitted.items()))
            if forget > now and len(emitted) <= 4 * self.max_pending:
                break
            del emitted[key]
        return out

    def flush(self, now: float | None = None) -> list[LagSet]:
        """Emit everything still pending (at stop: nothing accepted is lost silently)."""
        now = self.clock() if now is None else now
        out = [self._finish(ls, "flush", now) for ls in self.pending.values()]
        self.pending.clear()
        return out

    def counters(self) -> dict[str, int | float]:
        """Plain Python ints (a numpy integer is not JSON: status showed it as a string)."""
        return {k: int(v) for k, v in (
            ("frames", self.frames), ("placed", self.placed), ("duplicates", self.duplicates),
            ("late", self.late), ("emitted", self.emitted), ("complete", self.complete),
            ("incomplete", self.incomplete), ("missing_frames", self.missing_frames),
            ("evicted", self.evicted), ("pending", len(self.pending)))}

