"""The HDF5 store (h5py): chunked, compressed, extendable datasets per topic.

Layout (its names and reader in radlogger.store.hdf5; also in README.md)::

    /                      attrs radlogger_format, radlogger_version
    /<topic>/              one group per topic, attr topic
    /<topic>/<n>/          a *segment*: one homogeneous run of the topic's data, attrs source,
                           unit, kind, dtype, shape, device_time (none|int|float), meta (bool)
        order   int64 (N,)          write order within the file (merges segments and topics)
        t_ns    int64 (N,)          host wall-clock, ns
        seq     int64 (N,)
        value   (N, *shape) dtype   arrays (I/Q, spectra, lag sets); int64/float64/bool
                                    scalars; vlen UTF-8 str; vlen uint8 bytes; absent for None
                                    and for arrays with a zero-length axis
        device_time int64|float64 (N,)   only when the segment has device times
        meta    vlen str (N,)       JSON, only when the segment's measurements carry meta

Most topics have one segment (``/wsa1.iq/0``).  A topic whose value type, array shape, source,
unit, or presence of device time or meta changes gets a segment per combination, so that every
dataset stays a plain, typed, fixed-shape column that any HDF5 tool reads without our code.

Crash safety.  Data is written only at flushes, each ending with ``file.flush()``; between
flushes the file is not touched, so a ``kill -9`` between flushes (tests/test_storage_crash.py)
leaves a readable file holding every flushed row.  With ``swmr = yes`` (the default) the file
is in HDF5's single-writer/multiple-reader mode, whose ordered metadata writes are designed to
keep it consistent at every instant, so even a kill *during* a flush should leave it readable
(HDF5's guarantee; not something a test can hit on purpose), and other processes can read it
while it is written.  Such a file must then be opened with ``h5py.File(path, "r",
swmr=True)`` (plain ``"r"`` refuses a file whose writer did not close it, pointing at
``h5clear``; our reader always passes ``swmr=True``), and it cannot be appended to again: the
next run continues in a new numbered file.

SWMR forbids creating groups and datasets, so when a new topic (or segment) appears the store
closes the file, reopens it normally to create them, and re-enters SWMR mode: a few
milliseconds, once per new topic.  That reopen does not take HDF5's file lock, which a SWMR
reader in another process holds and which would otherwise block the writer until the reader
closes; such a reader keeps reading what it has and sees the new topic when it reopens.

With ``swmr = no`` the file stays plain; a crash between flushes still leaves it readable, a
crash during a flush may not.

File format version.  Files are written with HDF5's format bounded to 1.10 (``libver =
("v110", "v110")`` with SWMR, which needs the 1.10 superblock; ``("earliest", "v110")``
without), never ``"latest"``: the HDF5 2.0 in h5py's wheel would otherwise write structures
that the distributions' HDF5 1.10 tools (Debian's ``h5dump``, HDFView, MATLAB) cannot read.
tests/test_storage_h5dump.py reads every kind of value with Debian's ``h5dump``.

Indexable metadata.  Meta keys named in ``index_keys`` (by default the correlator product
fields, baseline ... phase_bin) split a topic's segments by their values, which are written as
the segment's attributes ``index.<key>``: the 40 products of a WIDAR spectrum topic are 40
segments a tool can pick without parsing JSON, and the reader skips segments a ``--where``
excludes.  Units and descriptions are dataset attributes (``units``, ``description``).
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py  # type: ignore[import-untyped]
import numpy as np

from radlogger.measurement import Measurement
from radlogger.options import Option
from radlogger.store import codec
from radlogger.store.hdf5 import (
    FORMAT,
    INDEX_KEYS,
    LIBVER_PLAIN,
    LIBVER_SWMR,
    Key,
    complete_rows,
    group_name,
    has_value,
    index_of,
    segment_key,
    segments,
)

from .base import StorageEndpoint

__all__ = ["HDF5Endpoint"]

_STR = h5py.string_dtype("utf-8")
_BYTES = h5py.vlen_dtype(np.dtype("uint8"))
_SCALARS = {"int": np.dtype("<i8"), "float": np.dtype("<f8"), "bool": np.dtype("bool")}
_MAX_SCALAR_CHUNK = 8192

class _Segment:
    """Pending rows of one segment, kept as Python lists until a flush converts them."""

    __slots__ = ("key", "rel", "t_ns", "seq", "values", "dts", "metas")

    def __init__(self, key: Key) -> None:
        self.key = key
        self.rel: list[int] = []
        self.t_ns: list[int] = []
        self.seq: list[int] = []
        self.values: list[Any] = []
        self.dts: list[Any] = []
        self.metas: list[str] = []

    def clear(self) -> None:
        self.rel, self.t_ns, self.seq = [], [], []
        self.values, self.dts, self.metas = [], [], []


class HDF5Endpoint(StorageEndpoint):
    kind = "hdf5"
    summary = "HDF5 file (h5py): chunked compressed datasets per topic, SWMR crash safety"
    options = (
        Option("compression", str, "gzip", "compression of numeric datasets",
               choices=("gzip", "lzf", "none")),
        Option("compression_level", int, 1, "gzip level (higher: smaller, slower)", min=0,
               max=9),
        Option("chunk_bytes", int, 256 << 10, "target size of a dataset chunk", min=1024),
        Option("swmr", bool, True, "single-writer/multiple-reader mode: the file stays "
               "consistent, readable while written and after a crash (then with swmr=True)"),
        Option("min_free_bytes", int, 16 << 20, "refuse to flush (as on a full disk) unless "
               "this much plus twice the buffered data is free: HDF5 cannot recover from a "
               "write that fails for lack of space", min=0),
        Option("index_keys", list, list(INDEX_KEYS), "meta keys whose (scalar) values split a "
               "topic into segments with the value as attribute index.<key>: selectable "
               "without reading the per-row JSON"),
    )
    storage_exceptions = (OSError, RuntimeError)

    def __init__(self, name: str, settings: Any = None, **kw: Any) -> None:
        super().__init__(name, settings, **kw)
        self._file: h5py.File | None = None
        self._segments: dict[Key, _Segment] = {}
        self._dirty: list[_Segment] = []
        self._disk: dict[Key, list[Any]] = {}  # key -> [group path, rows on disk]
        self._file_order = 0
        self._order_path: Path | None = None

    # ---------------------------------------------------------------- file
    def _h5open(self, path: Path, mode: str, **kw: Any) -> h5py.File:
        libver = LIBVER_SWMR if self.settings.swmr else LIBVER_PLAIN
        return h5py.File(path, mode, libver=libver, **kw)

    def _can_append(self, path: Path) -> bool:
        try:
            with self._h5open(path, "a") as f:
                return f.attrs.get("radlogger_format") == FORMAT or not len(f)
        except Exception:  # noqa: BLE001 - unreadable or left open by a crash: a new file
            return False

    def _open_file(self, path: Path) -> None:
        f = self._h5open(path, "a")
        try:
            if "radlogger_format" not in f.attrs:
                f.attrs["radlogger_format"] = FORMAT
                f.attrs["radlogger_version"] = 1
            boundary = self._file_order if self._dirty and path == self._order_path else None
            self._disk, order = _scan(f, boundary)
            if self.settings.swmr:
                f.swmr_mode = True
        except BaseException:
            f.close()
            raise
        self._file = f
        self._file_order = order
        self._order_path = path

    def _close_file(self) -> None:
        f, self._file = self._file, None
        if f is not None:
            f.close()

    # ---------------------------------------------------------------- data
    def _encode(self, m: Measurement) -> int:
        kind, v = codec.classify(m.value)
        dtype, shape = "", ()
        size: int
        if kind == "array":
            dtype, shape, size = v.dtype.str, v.shape, v.nbytes
        elif kind == "str":
            v = v.encode("utf-8")
            size = len(v)
        elif kind == "bytes":
            size = len(v)
        else:
            size = 8
        dt = codec.check_device_time(m.device_time)
        meta = codec.meta_to_json(m.meta)
        key = (m.topic, m.source, m.unit, kind, dtype, shape,
               "none" if dt is None else "int" if type(dt) is int else "float", meta is not None,
               index_of(m.meta, self.settings.index_keys))
        seg = self._segments.get(key)
        if seg is None:
            seg = self._segments[key] = _Segment(key)
        if not seg.rel:
            self._dirty.append(seg)
        seg.rel.append(self._pending)
        seg.t_ns.append(m.t_ns)
        seg.seq.append(m.seq)
        if kind != "none":
            seg.values.append(v)
        if dt is not None:
            seg.dts.append(dt)
        if meta is not None:
            seg.metas.append(meta)
            size += len(meta)
        return size + 24

    def _check_space(self) -> None:
        """Refuse a flush that might not fit (see the min_free_bytes option).

        HDF5 2.0 does not survive a write failing with ENOSPC: the chunk being written reads
        back as zeros or fails its filter, and closing the file then fails, or crashes the
        process at exit.  Checking ``statvfs`` first keeps HDF5 away from a full disk; only
        another process filling the last bytes during a flush can still get through."""
        assert self.current_path is not None
        st = os.statvfs(self.current_path.parent)
        free = st.f_bavail * st.f_frsize
        need = self.settings.min_free_bytes + 2 * self._buffered
        if free < need:
            raise OSError(errno.ENOSPC, f"{free} bytes free, a flush needs {need} "
                          f"(min_free_bytes + twice the {self._buffered} buffered)")

    def _write_pending(self) -> None:
        self._check_space()
        try:
            new = [s for s in self._dirty if s.key not in self._disk]
            if new:
                self._create(new)
            f = self._file
            assert f is not None
            if self.settings.swmr and not f.swmr_mode:  # a failed _create left it plain
                f.flush()
                f.swmr_mode = True
            base = self._file_order
            for seg in self._dirty:
                path, n0 = self._disk[seg.key]
                group = f[path]
                k = len(seg.rel)
                for name, data in _columns(seg, base):
                    ds = group[name]
                    ds.resize(n0 + k, axis=0)
                    if name == "value" and seg.key[3] == "bytes":
                        for i, b in enumerate(data):  # h5py mis-broadcasts equal-length vlens
                            ds[n0 + i] = b
                    else:
                        ds[n0:] = data
            f.flush()
        except BaseException:
            # Keep the handle: closing a file whose write failed can crash HDF5.  The retry
            # writes the same rows at the same place again (rows on disk were not counted).
            if self._file is None:  # reopening for _create failed
                self._close_quietly()
            raise
        for seg in self._dirty:
            self._disk[seg.key][1] += len(seg.rel)
            seg.clear()
        self._dirty = []
        self._file_order += self._pending

    def _create(self, new: list[_Segment]) -> None:
        if self.settings.swmr:  # SWMR forbids creating objects: reopen outside it, without
            # the file lock, which live SWMR readers in other processes hold (module doc)
            assert self._file is not None and self.current_path is not None
            self._file.close()
            self._file = None
            self._file = self._h5open(self.current_path, "a", locking=False)
        f = self._file
        assert f is not None
        s = self.settings
        comp: dict[str, Any] = {}
        if s.compression == "gzip":
            comp = {"compression": "gzip", "compression_opts": s.compression_level}
        elif s.compression == "lzf":
            comp = {"compression": "lzf"}
        for seg in new:
            topic, source, unit, kind, dtype, shape, dt_kind, has_meta, index = seg.key
            tg = f.require_group(group_name(topic))
            if "topic" not in tg.attrs:
                tg.attrs["topic"] = topic
            name = str(len(tg))
            g = tg.create_group(name)
            g.attrs.update({"source": source, "unit": unit, "kind": kind, "dtype": dtype,
                            "shape": codec.format_shape(shape), "device_time": dt_kind,
                            "meta": has_meta,
                            "index_keys": json.dumps([k for k, _ in index])})
            for k, v in index:
                g.attrs[f"index.{k}"] = json.loads(v)
            for col in ("order", "t_ns", "seq"):
                _create_column(g, col, np.dtype("<i8"), (), s.chunk_bytes, comp)
            g["t_ns"].attrs.update(units="ns since 1970-01-01T00:00:00Z",
                                   description="host wall-clock time (UTC)")
            if has_value(kind, shape):
                if kind == "array":
                    _create_column(g, "value", np.dtype(dtype), shape, s.chunk_bytes, comp)
                elif kind in _SCALARS:
                    _create_column(g, "value", _SCALARS[kind], (), s.chunk_bytes, comp)
                else:
                    _create_column(g, "value", _STR if kind == "str" else _BYTES, (),
                                   s.chunk_bytes, {})
                g["value"].attrs.update(units=unit, description=f"{topic} from {source}")
            if dt_kind != "none":
                _create_column(g, "device_time", _SCALARS[dt_kind], (), s.chunk_bytes, comp)
                g["device_time"].attrs["description"] = "instrument clock (its own units)"
            if has_meta:
                _create_column(g, "meta", _STR, (), s.chunk_bytes, {})
            self._disk[seg.key] = [g.name, 0]
        if s.swmr:
            f.flush()
            f.swmr_mode = True

    def _discard_pending(self) -> None:
        for seg in self._dirty:
            seg.clear()
        self._dirty = []


def _create_column(g: h5py.Group, name: str, dtype: Any, shape: tuple[int, ...],
                   chunk_bytes: int, comp: dict[str, Any]) -> None:
    numeric = isinstance(dtype, np.dtype) and dtype.kind in "biufc"
    row_bytes = (dtype.itemsize if numeric else 16) * int(np.prod(shape, dtype=np.int64))
    rows = max(1, chunk_bytes // max(1, row_bytes))
    if not shape:
        rows = min(rows, _MAX_SCALAR_CHUNK)
    opts = dict(comp) if numeric else {}
    if opts:
        opts["shuffle"] = dtype.itemsize > 1
    g.create_dataset(name, shape=(0, *shape), maxshape=(None, *shape), dtype=dtype,
                     chunks=(rows, *shape), **opts)


def _columns(seg: _Segment, base: int) -> Iterator[tuple[str, Any]]:
    _, _, _, kind, dtype, shape, dt_kind, has_meta, _ = seg.key
    if has_value(kind, shape):
        if kind == "array":
            yield "value", np.stack(seg.values) if shape else np.asarray(seg.values, dtype)
        elif kind in _SCALARS:
            yield "value", np.asarray(seg.values, _SCALARS[kind])
        elif kind == "str":
            yield "value", np.array(seg.values, dtype=object)
        else:
            yield "value", [np.frombuffer(b, np.uint8) for b in seg.values]
    if dt_kind != "none":
        yield "device_time", np.asarray(seg.dts, _SCALARS[dt_kind])
    if has_meta:
        yield "meta", np.array(seg.metas, dtype=object)
    yield "t_ns", np.asarray(seg.t_ns, np.int64)
    yield "seq", np.asarray(seg.seq, np.int64)
    yield "order", np.asarray(seg.rel, np.int64) + base  # last: a row counts once all is there


def _scan(f: h5py.File, boundary: int | None) -> tuple[dict[Key, list[Any]], int]:
    """Segments already in an opened file; trims columns to complete rows (and, when a flush
    into this file failed, to rows before ``boundary``, which will be written again)."""
    disk: dict[Key, list[Any]] = {}
    order = 0
    for topic, g in segments(f):
        rows = complete_rows(g)
        if boundary is not None and rows:
            rows = int(np.searchsorted(g["order"][:rows], boundary))
        for ds in g.values():
            if isinstance(ds, h5py.Dataset) and len(ds) > rows:
                ds.resize(rows, axis=0)
        if rows:
            order = max(order, int(g["order"][rows - 1]) + 1)
        disk[segment_key(topic, g.attrs)] = [g.name, rows]
    return disk, order if boundary is None else boundary
