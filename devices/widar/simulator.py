"""A WIDAR baseline-board simulator: lag frames over real UDP, with known spectral lines.

Every product's lag set is the inverse FFT of a spectrum with lines at known channels (plus a
little noise), scaled by the data-valid counts of its frames the way a correlator accumulates
them, and rounded to the int32 I/Q pairs of radloggerd's frame layout.  Normalizing by those
counts and FFT-ing (``endpoints/lag``) must give the lines back at the same channels, which
is what the tests and the benchmarks check.

Impairments a real network produces are optional and deterministic for a seed: disorder
(frames shuffled within windows), loss, duplication and corruption (bad sync, bad checksum,
truncation, excess length, in equal shares).  ``counts`` records what was done.

Generating lags costs FFTs, so ``variants`` distinct integrations are computed once and reused
with new timestamps (and checksums): the sender then keeps up with gigabit line rate.

``radloggerd simulate widar --rate 42000 --baselines 3 --lags 1024 --seed 1`` runs it;
``WidarSimulator`` is the Python API (tests, benchmarks).
"""

from __future__ import annotations

import itertools
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import click
import numpy as np

from radlogger import mmsg

from .assembler import parse_baselines
from .frames import FIELDS, POLARIZATIONS, encode, fix_checksums, frame_bytes, to_complex
from .udpsend import send_blocks, sender_socket

__all__ = ["WidarSimulator", "SenderThread", "cli", "product_key", "parse_lines"]

ProductKey = tuple[int, int, int, int, str, int]


def product_key(meta: dict[str, Any]) -> ProductKey:
    """(station_x, station_y, baseband, subband, polarization, phase_bin) of a lag set."""
    return (meta["station_x"], meta["station_y"], meta["baseband"], meta["subband"],
            meta["polarization"], meta["phase_bin"])


def _pairs(n: int) -> list[tuple[int, int]]:
    """The first ``n`` baselines among stations 1, 2, 3, ... (1-2, 1-3, 2-3, 1-4, ...)."""
    out: list[tuple[int, int]] = []
    y = 2
    while len(out) < n:
        out.extend((x, y) for x in range(1, y))
        y += 1
    return out[:n]


class WidarSimulator:
    """Frames for a configured set of products, one integration (all products) at a time."""

    def __init__(self, baselines: int | Sequence[str] = 1, basebands: Sequence[int] = (0,),
                 subbands: Sequence[int] = (0,), polarizations: Sequence[str] = ("AA", "BB"),
                 phase_bins: int = 1, lags: int = 256, lags_per_frame: int = 64,
                 lines: Sequence[tuple[int, float]] | None = None, noise: float = 0.01,
                 count: int = 1_000_000, edge_fraction: float = 0.9,
                 integration_ns: int = 10_000_000, start_ns: int | None = None,
                 seed: int = 0, disorder: int = 0, loss: float = 0.0, duplicate: float = 0.0,
                 corrupt: float = 0.0, variants: int = 4) -> None:
        if lags < lags_per_frame or lags % lags_per_frame:
            raise ValueError(f"lags = {lags} must be a multiple of lags_per_frame = "
                             f"{lags_per_frame}")
        self.baselines = _pairs(baselines) if isinstance(baselines, int) else \
            parse_baselines(baselines)
        self.lags = lags
        self.lags_per_frame = lags_per_frame
        self.n_frames = lags // lags_per_frame
        self.lines = list(lines) if lines is not None else [(lags // 4, 1.0),
                                                            (5 * lags // 8, 0.5)]
        for ch, _ in self.lines:
            if not 0 <= ch < lags:
                raise ValueError(f"line channel {ch} is outside 0-{lags - 1}")
        self.noise = noise
        self.count = count
        self.edge_fraction = edge_fraction
        self.integration_ns = integration_ns
        if start_ns is None:
            start_ns = time.time_ns() // integration_ns * integration_ns
        self.start_ns = start_ns
        self.disorder = disorder
        self.loss, self.duplicate, self.corrupt = loss, duplicate, corrupt
        self.variants = max(1, variants)
        self.rng = np.random.default_rng(seed)
        self._seed = seed
        self.counts: Counter[str] = Counter()
        #: (address, port) the last send() sent from
        self.source: tuple[str, int] | None = None
        pols = [POLARIZATIONS.index(p.upper()) for p in polarizations]
        prods = [(x, y, bb, sb, pol, pb) for (x, y) in self.baselines for bb in basebands
                 for sb in subbands for pol in pols for pb in range(phase_bins)]
        self.products = prods
        nf = self.n_frames
        fields = np.zeros(len(prods) * nf, FIELDS)
        if not prods:
            raise ValueError("no products: give at least one baseline and polarization")
        cols = np.array(prods, np.int64)
        for j, name in enumerate(("station_x", "station_y", "baseband_x", "subband_x",
                                  "polarization", "phase_bin")):
            fields[name] = np.repeat(cols[:, j], nf)
        for a, b in (("baseband_y", "baseband_x"), ("subband_y", "subband_x")):
            fields[a] = fields[b]
        fields["start_block"] = np.tile(np.arange(nf), len(prods))
        fields["n_blocks"] = nf
        fields["chip"] = fields["start_block"] % 16
        fields["cell_valid"] = 1
        fields["frame_count"] = np.arange(len(fields)) % 256
        self._fields = fields
        self._payloads: list[np.ndarray] = []  # per variant: frames (M, L) uint8

    # ---------------------------------------------------------------- truth
    def spectrum(self) -> np.ndarray:
        """The noiseless spectrum every product carries (N channels, low to high)."""
        s = np.zeros(self.lags, np.complex128)
        for ch, amp in self.lines:
            s[ch] += amp
        return s

    def _variant(self, v: int) -> np.ndarray:
        while len(self._payloads) <= v:
            rng = np.random.default_rng((self._seed, len(self._payloads)))
            p, n, nf, lpf = len(self.products), self.lags, self.n_frames, self.lags_per_frame
            spec = self.spectrum()[None, :] + self.noise * (
                rng.standard_normal((p, n)) + 1j * rng.standard_normal((p, n)))
            lags = np.fft.fftshift(np.fft.ifft(np.fft.ifftshift(spec, axes=1), axis=1), axes=1)
            centre = (self.count - rng.integers(0, max(1, self.count // 50), (p, nf)))
            edge = np.rint(centre * self.edge_fraction)
            dist = np.abs(np.arange(n) - n // 2) / (n // 2)
            c, e = np.repeat(centre, lpf, axis=1), np.repeat(edge, lpf, axis=1)
            raw = lags * (c + (e - c) * dist)
            fields = self._fields.copy()
            fields["dv_centre"] = centre.ravel()
            fields["dv_edge"] = edge.ravel()
            self._payloads.append(encode(fields, raw.reshape(p * nf, lpf)))
        return self._payloads[v]

    def frames(self, i: int) -> np.ndarray:
        """Clean frames (M, L) uint8 of integration ``i`` (all products, in order)."""
        frames = self._variant(i % self.variants).copy()
        ts = self.start_ns + i * self.integration_ns
        words = frames.view(">u4")
        words[:, 4] = ts >> 32
        words[:, 5] = ts & 0xFFFFFFFF
        return fix_checksums(frames)

    def truth(self, i: int) -> dict[tuple[Any, ...], np.ndarray]:
        """Expected lag sets of integration ``i``: {(product key..., timestamp): complex64}."""
        frames = self.frames(i)
        words = frames.view(">u4")
        lags = to_complex(words[:, 10:].view(">i4")).reshape(len(self.products), self.lags)
        ts = self.start_ns + i * self.integration_ns
        return {(x, y, bb, sb, POLARIZATIONS[pol], pb, ts): lags[k]
                for k, (x, y, bb, sb, pol, pb) in enumerate(self.products)}

    @property
    def frames_per_integration(self) -> int:
        return len(self.products) * self.n_frames

    # ---------------------------------------------------------------- impairments
    def impair(self, frames: np.ndarray) -> list[bytes]:
        """Datagrams of ``frames`` after disorder, duplication, loss and corruption."""
        rng = self.rng
        m = len(frames)
        order = np.arange(m)
        if self.duplicate:
            dup = rng.random(m) < self.duplicate
            self.counts["duplicated"] += int(dup.sum())
            order = np.sort(np.concatenate([order, order[dup]]), kind="stable")
        if self.loss:
            keep = rng.random(len(order)) >= self.loss
            self.counts["lost"] += int((~keep).sum())
            order = order[keep]
        if self.disorder > 1:
            w = self.disorder
            for lo in range(0, len(order), w):
                rng.shuffle(order[lo:lo + w])
        out = [frames[k].tobytes() for k in order]
        if self.corrupt:
            hit = np.flatnonzero(rng.random(len(out)) < self.corrupt)
            kinds = rng.integers(0, 4, len(hit))
            for k, kind in zip(hit.tolist(), kinds.tolist(), strict=True):
                out[k] = self._corrupt(out[k], kind)
        return out

    def _corrupt(self, frame: bytes, kind: int) -> bytes:
        b = bytearray(frame)
        if kind == 0:
            b[0] ^= 0xFF
            self.counts["bad_sync"] += 1
        elif kind == 1:
            b[-1 - int(self.rng.integers(0, len(b) - 40))] ^= 0x01
            self.counts["bad_checksum"] += 1
        elif kind == 2:
            del b[len(b) - 8 * int(self.rng.integers(1, self.lags_per_frame + 1)):]
            self.counts["truncated"] += 1
        else:
            b += b"\0" * 8
            self.counts["bad_length"] += 1
        return bytes(b)

    def datagrams(self, integrations: int | None = None, first: int = 0) -> Iterator[bytes]:
        """The impaired stream, integration by integration (forever when None)."""
        i = first
        while integrations is None or i < first + integrations:
            yield from self.impair(self.frames(i))
            i += 1

    # ---------------------------------------------------------------- sending
    def send(self, dest: tuple[str, int], rate: float = 0.0, frames: int = 0,
             stop: threading.Event | None = None, burst: int = 64,
             source: str | None = None) -> int:
        """Send to ``dest`` at ``rate`` frames/s (0 = flat out) until ``frames`` or ``stop``.

        The socket is bound to ``source`` (default: the address the route to ``dest`` uses),
        never to 0.0.0.0; ``self.source`` is the (address, port) it sent from.
        ``counts`` covers every integration generated, so send whole integrations
        (``frames`` a multiple of ``frames_per_integration``) when comparing counts.
        """
        stop = stop or threading.Event()
        sent = 0
        t0 = time.monotonic()
        with sender_socket(dest, source) as sock:
            self.source = sock.getsockname()
            if mmsg.available() and not (self.disorder > 1 or self.loss or self.duplicate
                                         or self.corrupt):  # clean frames: send whole blocks
                blocks = (self.frames(i) for i in itertools.count())
                sent, failed = send_blocks(sock, dest, blocks, rate, frames, stop, burst)
                self.counts["sent"] += sent
                self.counts["send_failed"] += failed
                return sent
            sendto = sock.sendto
            try:
                for datagram in self.datagrams():
                    if stop.is_set():
                        break
                    if rate and sent % burst == 0:
                        ahead = sent / rate - (time.monotonic() - t0)
                        if ahead > 0 and stop.wait(ahead):
                            break
                    try:
                        sendto(datagram, dest)
                    except OSError:  # ENOBUFS on an overloaded loopback: the frame is lost
                        self.counts["send_failed"] += 1
                    sent += 1
                    if frames and sent >= frames:
                        break  # before generating more: counts cover what was generated
            finally:
                self.counts["sent"] += sent
        return sent


class SenderThread(threading.Thread):
    """``WidarSimulator.send`` on a thread, for tests: ``start()``, then ``stop()``."""

    def __init__(self, sim: WidarSimulator, dest: tuple[str, int], rate: float = 0.0,
                 frames: int = 0, burst: int = 64, source: str | None = None) -> None:
        super().__init__(name="widar-simulator", daemon=True)
        self.sim, self.dest, self.rate, self.frames_total = sim, dest, rate, frames
        self.burst, self.source = burst, source
        self._stop_event = threading.Event()
        self.sent = 0

    def run(self) -> None:
        self.sent = self.sim.send(self.dest, self.rate, self.frames_total, self._stop_event,
                                  self.burst, self.source)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop_event.set()
        self.join(timeout)


def parse_lines(items: Sequence[str]) -> list[tuple[int, float]]:
    """``["64:1.0", "200"]`` -> ``[(64, 1.0), (200, 1.0)]``; ValueError names the format."""
    try:
        return [(int(c), float(a or 1.0)) for c, _, a in
                (str(item).strip().partition(":") for item in items if str(item).strip())]
    except ValueError:
        raise ValueError(f"lines {', '.join(map(str, items))!r}: expected "
                         "channel:amplitude, e.g. 64:1.0, 200:0.5") from None


def _lines(text: str) -> list[tuple[int, float]] | None:
    if not text:
        return None
    try:
        return parse_lines(text.split(","))
    except ValueError:
        raise click.BadParameter("lines are channel:amplitude, e.g. 64:1.0,200:0.5") from None


@click.command("widar")
@click.option("--host", default="127.0.0.1", show_default=True, help="destination address")
@click.option("--port", default=50000, show_default=True, help="destination UDP port")
@click.option("--source", default="", help="address to send from (default: the one the "
              "route to --host uses, 127.0.0.1 for loopback)")
@click.option("--rate", default=1000.0, show_default=True, help="frames per second (0 = flat out)")
@click.option("--frames", "total", default=0, help="stop after this many frames (0 = forever)")
@click.option("--duration", default=0.0, help="stop after this many seconds (0 = forever)")
@click.option("--baselines", default="3", show_default=True,
              help="number of baselines, or station pairs like 1-2,1-3")
@click.option("--basebands", default="0", show_default=True, help="baseband ids, e.g. 0,1")
@click.option("--subbands", default="0", show_default=True, help="sub-band ids")
@click.option("--products", default="AA,BB", show_default=True,
              help="polarization products of AA,AB,BA,BB")
@click.option("--phase-bins", default=1, show_default=True)
@click.option("--lags", default=1024, show_default=True, help="lags per lag set (power of two)")
@click.option("--lags-per-frame", default=128, show_default=True)
@click.option("--lines", default="", help="spectral lines channel:amplitude,... "
              "(default: lags/4 and 5*lags/8)")
@click.option("--noise", default=0.01, show_default=True)
@click.option("--integration-ms", default=10.0, show_default=True,
              help="timestamp step between integrations")
@click.option("--disorder", default=0, help="shuffle frames within windows of this many")
@click.option("--loss", default=0.0, help="fraction of frames lost")
@click.option("--duplicate", default=0.0, help="fraction of frames sent twice")
@click.option("--corrupt", default=0.0, help="fraction of frames corrupted")
@click.option("--seed", default=0, show_default=True)
@click.option("--replay", "replay_path", default="", help="send a recording instead "
              "(a .pcap file, glob or rotation base name)")
@click.option("--restamp/--no-restamp", default=False,
              help="with --replay: rewrite timestamps and checksums to wall-clock time")
def cli(host: str, port: int, source: str, rate: float, total: int, duration: float, baselines: str,
        basebands: str, subbands: str, products: str, phase_bins: int, lags: int,
        lags_per_frame: int, lines: str, noise: float, integration_ms: float, disorder: int,
        loss: float, duplicate: float, corrupt: float, seed: int, replay_path: str,
        restamp: bool) -> None:
    """Send WIDAR lag frames over UDP (radloggerd's frame layout)."""
    stop = threading.Event()
    if duration:
        timer = threading.Timer(duration, stop.set)
        timer.daemon = True
        timer.start()
    try:
        if replay_path:
            from .replay import replay_udp

            n = replay_udp(replay_path, (host, port), rate, restamp=restamp, stop=stop,
                           frames=total, source=source or None)
            click.echo(f"replayed {n} frames to {host}:{port}", err=True)
            return
        bl: int | list[str] = int(baselines) if baselines.isdigit() else baselines.split(",")
        sim = WidarSimulator(
            bl, [int(b) for b in basebands.split(",")], [int(s) for s in subbands.split(",")],
            products.split(","), phase_bins, lags, lags_per_frame, _lines(lines), noise,
            integration_ns=int(integration_ms * 1e6), seed=seed, disorder=disorder, loss=loss,
            duplicate=duplicate, corrupt=corrupt)
    except (ValueError, OSError) as exc:
        stop.set()
        raise click.ClickException(str(exc)) from None
    click.echo(f"sending {frame_bytes(lags_per_frame)}-byte frames for "
               f"{len(sim.products)} products to {host}:{port} at "
               f"{rate or 'max'} frames/s", err=True)
    t0 = time.monotonic()
    try:
        sim.send((host, port), rate, total, stop, source=source or None)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
    elapsed = max(time.monotonic() - t0, 1e-9)
    n = sim.counts["sent"]
    counts = ", ".join(f"{k}={v}" for k, v in sorted(sim.counts.items()))
    click.echo(f"sent {n} frames in {elapsed:.3f} s ({n / elapsed:.0f} frames/s; {counts})",
               err=True)
    sys.stderr.flush()
