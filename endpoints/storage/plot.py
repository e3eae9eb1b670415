"""Figures from stored measurements: time series of scalar topics, spectrum and waterfall of
array topics.  Matplotlib's object API (``Figure``, never ``pyplot``): no global state, no
display, safe in a headless daemon and in threads; ``Figure.savefig`` renders with Agg.

The figures are returned with their data on the axes (``Line2D`` data, the waterfall image),
so callers and tests can check *what* was plotted, not pixels.

Spectrum x axis: bins, unless the measurements' meta says the frequencies, as
``freq_start_hz`` + ``freq_stop_hz``, ``center_hz`` + ``span_hz``, or ``rf_freq`` +
``bandwidth`` (the WSA4000 driver's context fields); the last measurement's meta is used.
Arrays with more than one axis are averaged over all but the last (e.g. lag sets per
product).  ``fft`` treats arrays as time-domain samples (I/Q) and plots their power
spectrum in dB (Hann window, fftshift); complex arrays are otherwise shown as magnitudes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import matplotlib.dates as mdates
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from radlogger.measurement import Measurement

__all__ = ["TopicData", "collect", "timeseries_figure", "spectrum_figure", "frequency_axis",
           "envelope", "block_mean"]

MAX_POINTS = 100_000
_SAFE = re.compile(r"[^A-Za-z0-9_.+-]")


@dataclass
class TopicData:
    """One topic's plottable data, gathered from measurements."""

    topic: str
    unit: str = ""
    kind: str = "scalar"  # scalar | array | text
    t_ns: list[int] = field(default_factory=list)
    values: list[Any] = field(default_factory=list)
    skipped: int = 0  # measurements that did not fit (other shape, text in a numeric topic)
    meta: dict[str, Any] | None = None
    #: the file name: the topic, plus the split values (``widar.spectrum-1-2-RR``)
    name: str = ""

    def __post_init__(self) -> None:
        self.name = self.name or self.topic

    @property
    def count(self) -> int:
        return len(self.t_ns)


def _group(m: Measurement, split: Sequence[str]) -> tuple[str, str, str]:
    """(key, title, file name) of the series ``m`` belongs to: its topic, split by the values
    of the ``split`` meta keys it has (``widar.spectrum [baseline=1-2 polarization=RR]``)."""
    meta = m.meta if isinstance(m.meta, dict) else {}
    parts = [(k, meta[k]) for k in split if isinstance(meta.get(k), (str, int, float, bool))]
    if not parts:
        return m.topic, m.topic, m.topic
    label = " ".join(f"{k}={v}" for k, v in parts)
    name = m.topic + "-" + "-".join(_SAFE.sub("_", str(v)) for _, v in parts)
    return f"{m.topic}\0{label}", f"{m.topic} [{label}]", name


def collect(measurements: Iterable[Measurement], split: Sequence[str] = ()
            ) -> dict[str, TopicData]:
    """Group by topic (and by the values of the ``split`` meta keys: one series per product);
    a series is an array series if its first value is an array, and keeps the arrays of the
    first shape seen (others are counted in ``skipped``)."""
    out: dict[str, TopicData] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    for m in measurements:
        v = m.value
        key, title, name = _group(m, split) if split else (m.topic, m.topic, m.topic)
        td = out.get(key)
        if td is None:
            kind = "array" if isinstance(v, np.ndarray) and v.ndim else \
                "text" if isinstance(v, (str, bytes)) else "scalar"
            td = out[key] = TopicData(title, m.unit, kind, name=name)
            if kind == "array":
                shapes[key] = v.shape
        if td.kind == "array":
            if not isinstance(v, np.ndarray) or v.shape != shapes[key]:
                td.skipped += 1
                continue
        elif td.kind == "scalar":
            if v is None:
                v = np.nan
            elif isinstance(v, np.ndarray) and v.ndim == 0:
                v = v.item()
            if not isinstance(v, (int, float, bool, np.number)) or isinstance(v, complex):
                td.skipped += 1
                continue
        else:
            td.skipped += 1
            continue
        td.t_ns.append(m.t_ns)
        td.values.append(v)
        if m.meta:
            td.meta = m.meta
    return out


def envelope(x: np.ndarray, y: np.ndarray, max_points: int = MAX_POINTS
             ) -> tuple[np.ndarray, np.ndarray]:
    """Thin a long series to per-bucket min and max, so spikes stay visible."""
    n = len(y)
    if n <= max_points:
        return x, y
    buckets = max_points // 2
    edges = np.linspace(0, n, buckets + 1).astype(np.int64)[:-1]
    lo = np.minimum.reduceat(y, edges)
    hi = np.maximum.reduceat(y, edges)
    xs = np.repeat(x[edges], 2)
    ys = np.empty(2 * len(edges), dtype=y.dtype)
    ys[0::2], ys[1::2] = lo, hi
    return xs, ys


def block_mean(rows: np.ndarray, max_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Average consecutive rows down to at most ``max_rows``; returns (rows, first index)."""
    n = rows.shape[0]
    if n <= max_rows:
        return rows, np.arange(n)
    starts = np.linspace(0, n, max_rows + 1).astype(np.int64)[:-1]
    counts = np.diff(np.append(starts, n))
    return np.add.reduceat(rows, starts, axis=0) / counts[:, None], starts


def frequency_axis(meta: dict[str, Any] | None, bins: int) -> tuple[np.ndarray, str]:
    m = meta or {}
    if "freq_start_hz" in m and "freq_stop_hz" in m:
        lo, hi = float(m["freq_start_hz"]), float(m["freq_stop_hz"])
    elif "center_hz" in m and "span_hz" in m:
        c, s = float(m["center_hz"]), float(m["span_hz"])
        lo, hi = c - s / 2, c + s / 2
    elif m.get("rf_freq") is not None and m.get("bandwidth"):  # the WSA4000 driver's meta
        c, s = float(m["rf_freq"]), float(m["bandwidth"])
        lo, hi = c - s / 2, c + s / 2
    else:
        return np.arange(bins, dtype=np.float64), "bin"
    return np.linspace(lo, hi, bins, endpoint=False), "frequency [Hz]"


def _figure(size: tuple[float, float]) -> Figure:
    """A figure drawn by the Agg canvas directly: no backend selection, no display."""
    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _times(t_ns: list[int]) -> np.ndarray:
    return np.asarray(t_ns, dtype=np.int64).astype("datetime64[ns]")


def timeseries_figure(topics: list[TopicData]) -> Figure:
    """One panel per scalar topic, shared time axis (UTC)."""
    fig = _figure((10, 2.2 * len(topics) + 0.8))
    axes = fig.subplots(len(topics), 1, sharex=True, squeeze=False)[:, 0]
    for ax, td in zip(axes, topics, strict=True):
        y = np.asarray(td.values, dtype=np.float64)
        x, y = envelope(_times(td.t_ns), y)
        ax.plot(x, y, linewidth=0.8, label=td.topic)
        ax.set_ylabel(f"{td.topic} [{td.unit}]" if td.unit else td.topic)
        ax.grid(True, alpha=0.3)
    locator = mdates.AutoDateLocator()
    axes[-1].xaxis.set_major_locator(locator)
    axes[-1].xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    axes[-1].set_xlabel("time (UTC)")
    fig.suptitle(f"{sum(td.count for td in topics)} measurements")
    return fig


def spectrum_rows(td: TopicData, fft: bool = False, db: bool = False) -> tuple[np.ndarray, str]:
    """The (n, bins) array a spectrum/waterfall shows, and the label of its values."""
    rows = np.stack(td.values)
    if rows.ndim > 2:
        rows = rows.reshape(rows.shape[0], -1, rows.shape[-1]).mean(axis=1)
    unit = td.unit
    if fft:
        n = rows.shape[1]
        spec = np.fft.fftshift(np.fft.fft(rows * np.hanning(n), axis=1), axes=1)
        with np.errstate(divide="ignore"):
            return 20 * np.log10(np.abs(spec) / n), "power [dB]"
    if np.iscomplexobj(rows):
        rows = np.abs(rows)
        if db:
            with np.errstate(divide="ignore"):
                return 20 * np.log10(rows), "magnitude [dB]"
        return rows, f"|value| [{unit}]" if unit else "|value|"
    rows = rows.astype(np.float64)
    if db:
        with np.errstate(divide="ignore", invalid="ignore"):
            return 10 * np.log10(rows), "power [dB]"
    return rows, f"value [{unit}]" if unit else "value"


def spectrum_figure(td: TopicData, fft: bool = False, db: bool = False,
                    max_rows: int = 1000) -> Figure:
    """Top: mean and last spectrum; bottom: waterfall (time down, one row per measurement,
    averaged in blocks beyond ``max_rows``)."""
    rows, label = spectrum_rows(td, fft, db)
    bins = rows.shape[1]
    x, xlabel = frequency_axis(td.meta, bins)
    if fft and xlabel == "bin":
        x = np.arange(bins, dtype=np.float64) - bins // 2
    fig = _figure((10, 8))
    ax_spec, ax_fall = fig.subplots(2, 1, height_ratios=(1, 2))
    finite = np.where(np.isfinite(rows), rows, np.nan)
    ax_spec.plot(x, np.nanmean(finite, axis=0), linewidth=0.8, label="mean")
    ax_spec.plot(x, rows[-1], linewidth=0.8, label="last", alpha=0.7)
    ax_spec.set_xlabel(xlabel)
    ax_spec.set_ylabel(label)
    ax_spec.legend(loc="upper right")
    ax_spec.grid(True, alpha=0.3)
    ax_spec.set_title(f"{td.topic}: {td.count} spectra")
    shown, _ = block_mean(finite, max_rows)
    t = np.asarray(td.t_ns, dtype=np.int64)
    span = (t[-1] - t[0]) / 1e9 or 1.0
    img = ax_fall.imshow(shown, aspect="auto", origin="upper", interpolation="nearest",
                         extent=(float(x[0]), float(x[-1]), span, 0.0))
    ax_fall.set_xlabel(xlabel)
    start = np.datetime64(int(t[0]), "ns").astype("datetime64[ms]")
    ax_fall.set_ylabel(f"seconds since {start} UTC")
    fig.colorbar(img, ax=ax_fall, label=label)
    return fig
