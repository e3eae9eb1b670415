"""``radloggerd export`` and ``radloggerd plot``: stored data to another format, or to PNGs.

Both are click commands registered under the entry point group ``radlogger.commands``; the
``radloggerd`` group adds them.  Both select by topic, time and meta values (``--where
polarization=RR``) and split by meta keys (``--split baseline``: one file or figure per value;
``plot`` splits by the correlator product keys by default).  On a terminal a tqdm bar on
stderr shows the progress of the read.  User errors (no such store, bad time, existing destination)
end with a one-line message and exit status 1, never a traceback.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from radlogger.measurement import Measurement
from radlogger.plugins import load_class
from radlogger.products import PRODUCT_KEYS
from radlogger.store.progress import tracked
from radlogger.store.reader import KIND_BY_EXTENSION, Store, StoreError, kind_for_path, parse_time
from radlogger.store.rotation import split_name
from radlogger.store.selection import parse_where

from .base import StorageEndpoint, StorageError

__all__ = ["export", "plot", "writer_for"]

KINDS = ("csv", "jsonl", "sqlite", "hdf5")
_WRITERS = {"csv": "radlogger.endpoints.storage.csv:CSVEndpoint",
            "jsonl": "radlogger.endpoints.storage.jsonl:JSONLEndpoint",
            "sqlite": "radlogger.endpoints.storage.sqlite:SQLiteEndpoint",
            "hdf5": "radlogger.endpoints.storage.hdf5:HDF5Endpoint"}


def writer_for(kind: str, path: Path, gzip: bool = False) -> StorageEndpoint:
    """A store endpoint writing one file in one go (no rotation, flush at the end)."""
    settings: dict[str, Any] = {"path": str(path), "flush_every": 0, "flush_interval": 0,
                                "flush_bytes": 64 << 20, "on_disk_error": "fail"}
    cls = load_class(_WRITERS[kind])
    if kind in ("csv", "jsonl"):
        settings["gzip"] = gzip or path.suffix == ".gz"
    elif gzip:
        raise click.UsageError(f"--gzip applies to csv and jsonl, not {kind}")
    writer: StorageEndpoint = cls(f"export-{kind}", settings)
    return writer


def _time(value: str | None, option: str) -> int | None:
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None


def _open(source: str) -> Store:
    try:
        return Store(source)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None


def _where(items: tuple[str, ...]) -> list[tuple[str, str]]:
    try:
        return parse_where(items)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--where") from None


def _read(store: Store, source: str, topics: tuple[str, ...], since: str | None,
          until: str | None, where: tuple[str, ...], progress: bool | None,
          what: str) -> Iterator[Measurement]:
    """The selected measurements, with a progress bar on a terminal."""
    data = store.read(topics, _time(since, "--since"), _time(until, "--until"), _where(where))
    return _checked(tracked(data, f"{what} {source}", progress))


def _checked(it: Iterator[Measurement]) -> Iterator[Measurement]:
    """Turn a store that breaks while being read into a one-line error."""
    try:
        yield from it
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None


_time_options = [
    click.option("--topic", "-t", "topics", multiple=True, metavar="PATTERN",
                 help="only these topics: exact, subtree prefix (wsa1) or glob (*.iq); "
                      "repeat for several"),
    click.option("--since", metavar="TIME", help="from this time on (ISO 8601, epoch seconds, "
                 "or -10m / -2h / -1d)"),
    click.option("--until", metavar="TIME", help="before this time (same forms as --since)"),
    click.option("--where", "-w", multiple=True, metavar="KEY=VALUE",
                 help="only measurements whose meta has this value, e.g. polarization=RR or "
                      "baseline=1-2; repeat for several (all must hold)"),
    click.option("--progress/--no-progress", default=None,
                 help="progress bar on stderr (default: when stderr is a terminal)"),
]


def _with_filters(fn: Any) -> Any:
    for option in reversed(_time_options):
        fn = option(fn)
    return fn


_SAFE = re.compile(r"[^A-Za-z0-9_.+-]")


def _split_path(destination: Path, values: tuple[Any, ...]) -> Path:
    stem, ext = split_name(destination)
    if not values:
        return destination
    return destination.with_name(
        stem + "-" + "-".join(_SAFE.sub("_", str(v)) for v in values) + ext)


def _export_split(data: Iterator[Measurement], kind: str, destination: Path, gzip: bool,
                  append: bool, split: tuple[str, ...]) -> dict[Path, int]:
    """Write each measurement into the file of its values of the ``split`` meta keys
    (``out-1-2-RR.h5``; measurements without any of them go to ``out.h5``)."""
    writers: dict[tuple[Any, ...], tuple[StorageEndpoint, list[Measurement]]] = {}
    counts: dict[Path, int] = {}
    try:
        for m in data:
            meta = m.meta if isinstance(m.meta, dict) else {}
            values = tuple(meta[k] for k in split
                           if isinstance(meta.get(k), (str, int, float, bool)))
            entry = writers.get(values)
            if entry is None:
                writer = writer_for(kind, _split_path(destination, values), gzip)
                if writer.path.exists() and not append:
                    raise click.ClickException(f"{writer.path} exists: choose a new file or "
                                               "add --append")
                writer.open()
                entry = writers[values] = (writer, [])
            entry[1].append(m)
            if len(entry[1]) >= 4096:
                entry[0]._standalone_batch(entry[1])  # noqa: SLF001 - write_all, by hand
                entry[1].clear()
    finally:
        for writer, batch in writers.values():
            try:
                if batch:
                    writer._standalone_batch(batch)  # noqa: SLF001
                writer.flush()
            finally:
                writer.close()
            counts[writer.path] = writer.stats.handled
    for writer, _ in writers.values():
        if writer.stats.dropped:
            raise click.ClickException(f"{writer.stats.dropped} measurements were not stored "
                                       f"in {writer.path}: {writer.last_error or 'see the log'}")
    return counts


@click.command("export")
@click.argument("source")
@click.argument("destination", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--to", "kind", type=click.Choice(KINDS), help="destination format (default: "
              "from the destination's extension: " + ", ".join(sorted(KIND_BY_EXTENSION)) + ")")
@click.option("--gzip", is_flag=True, help="gzip the destination (csv, jsonl)")
@click.option("--append", is_flag=True, help="add to an existing destination")
@click.option("--split", multiple=True, metavar="KEY", help="one destination file per value "
              "of this meta key (e.g. baseline, polarization): out-<value>.<ext>; repeat for "
              "several")
@_with_filters
def export(source: str, destination: Path, kind: str | None, gzip: bool, append: bool,
           split: tuple[str, ...], topics: tuple[str, ...], since: str | None,
           until: str | None, where: tuple[str, ...], progress: bool | None) -> None:
    """Copy the measurements of SOURCE (any store, a spectrum sink's .npy/.npz files or its
    directory; rotated files included) to DESTINATION."""
    kind = kind or kind_for_path(destination)
    if kind is None:
        raise click.UsageError(f"cannot tell the format of {destination} from its extension: "
                               f"add --to {'|'.join(KINDS)}")
    store = _open(source)
    if any(f.resolve() == destination.resolve() for f, _ in store.files):
        raise click.UsageError(f"{destination} is also a source file: choose another name")
    data = _read(store, source, topics, since, until, where, progress, "exporting")
    if split:
        counts = _export_split(data, kind, destination, gzip, append, split)
        for path, n in counts.items():
            click.echo(f"exported {n} measurements to {path} ({kind})")
        click.echo(f"exported {sum(counts.values())} measurements from {source} "
                   f"({', '.join(store.kinds)}) into {len(counts)} files")
        return
    writer = writer_for(kind, destination, gzip)
    if writer.path.exists() and not append:
        raise click.ClickException(f"{writer.path} exists: choose a new file or add --append")
    try:
        n = writer.write_all(data)
    except StorageError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"exported {n} measurements from {source} ({', '.join(store.kinds)}) to "
               f"{writer.path} ({kind})")


def _png_names(output: Path, names: list[str]) -> list[Path]:
    if output.suffix.lower() == ".png":
        if len(names) == 1:
            return [output]
        return [output.with_name(f"{output.stem}-{n}.png") for n in names]
    return [output / f"{n}.png" for n in names]


@click.command("plot")
@click.argument("source")
@click.option("--output", "-o", type=click.Path(path_type=Path), default=Path("."),
              show_default=True, help="directory for the PNG files, or a .png file name")
@_with_filters
@click.option("--split", multiple=True, metavar="KEY", help="one figure per value of this "
              "meta key; repeat for several (default: the correlator product keys "
              f"{', '.join(PRODUCT_KEYS)}, where present); --split none: one per topic")
@click.option("--fft", is_flag=True, help="arrays are time-domain samples (I/Q): plot their "
              "power spectrum")
@click.option("--db", is_flag=True, help="show array values in dB")
@click.option("--max-rows", type=click.IntRange(min=2), default=1000, show_default=True,
              help="waterfall rows (longer recordings are averaged in blocks)")
def plot(source: str, output: Path, topics: tuple[str, ...], since: str | None,
         until: str | None, where: tuple[str, ...], progress: bool | None,
         split: tuple[str, ...], fft: bool, db: bool, max_rows: int) -> None:
    """PNG plots of SOURCE: one time-series figure of all scalar topics (timeseries.png) and a
    spectrum + waterfall figure per array topic (<topic>.png), per product
    (<topic>-<values>.png) where the measurements name one."""
    from . import plot as plots

    keys = () if split == ("none",) else split or PRODUCT_KEYS
    store = _open(source)
    data = plots.collect(_read(store, source, topics, since, until, where, progress,
                               "reading"), keys)
    if not data:
        raise click.ClickException(f"no measurements in {source} match the topics and times "
                                   "given")
    scalars = [td for td in data.values() if td.kind == "scalar" and td.count]
    arrays = [td for td in data.values() if td.kind == "array" and td.count]
    figures: list[tuple[str, Any, str]] = []
    if scalars:
        figures.append(("timeseries", plots.timeseries_figure(scalars),
                        f"time series of {len(scalars)} topics, "
                        f"{sum(td.count for td in scalars)} points"))
    for td in arrays:
        figures.append((td.name, plots.spectrum_figure(td, fft, db, max_rows),
                        f"spectrum + waterfall of {td.topic}, {td.count} x "
                        f"{td.values[0].shape[-1]}"))
    for td in data.values():
        if td.kind == "text" or td.skipped:
            click.echo(f"skipped {td.skipped} measurements of {td.topic} "
                       f"({'text values' if td.kind == 'text' else 'other shapes or types'})")
    if not figures:
        raise click.ClickException(f"nothing plottable in {source}: only text values")
    paths = _png_names(output, [name for name, _, _ in figures])
    for path, (_, fig, what) in zip(paths, figures, strict=True):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(path, dpi=100)
        except OSError as exc:
            raise click.ClickException(f"cannot write {path}: {exc.strerror}") from None
        click.echo(f"wrote {path}: {what}")
