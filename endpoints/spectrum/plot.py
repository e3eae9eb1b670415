"""PNG rendering of a spectrum track: the latest spectrum above a waterfall.

Uses matplotlib's object API with the Agg canvas (no pyplot, no global figure state), so the
sink may render from its worker thread while another thread renders another track.
matplotlib is imported on first use: it is an optional dependency (``pip install '.[plot]'``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["render_png"]


def render_png(path: Path, title: str, freqs: np.ndarray, latest: np.ndarray,
               history: np.ndarray, age_s: float, unit: str = "dBm") -> Path:
    """Write ``path``: the latest spectrum (top) and the ``history`` rows as a waterfall,
    newest at the top, spanning ``age_s`` seconds."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise RuntimeError("rendering spectra needs matplotlib: pip install -e '.[plot]'") \
            from exc
    mhz = freqs / 1e6
    fig = Figure(figsize=(9, 7), dpi=90, layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(1, 1.4))
    top.plot(mhz, latest, lw=0.8)
    top.set_ylabel(unit)
    top.set_title(title)
    top.grid(True, alpha=0.3)
    finite = history[np.isfinite(history)]
    lo, hi = (np.percentile(finite, [5, 99.9]) if finite.size else (0.0, 1.0))
    image = bottom.imshow(history[::-1], aspect="auto", origin="upper", cmap="viridis",
                          extent=(float(mhz[0]), float(mhz[-1]), max(age_s, 1e-9), 0.0),
                          vmin=float(lo), vmax=float(max(hi, lo + 1e-6)),
                          interpolation="nearest")
    bottom.set_xlabel("frequency (MHz)")
    bottom.set_ylabel("age (s)")
    fig.colorbar(image, ax=bottom, label=unit)
    # readers never see a half-written image; a temporary name of its own per render, so two
    # renders of one topic (worker and timer thread) never rename each other's file away
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would make the PNG private to the daemon
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format="png")
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
