"""File names of rotating stores: ``<stem>-<index>-<UTC time of first measurement><ext>``.

The index (six digits or more, counting up from the highest one already on disk) orders the
files even if the clock steps back; the time tells a user which file to open.  The reader finds
a store's files from its configured path with :func:`rotated_files`.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path

__all__ = ["split_name", "rotated_files", "next_index", "rotated_path"]


def split_name(path: Path) -> tuple[str, str]:
    """``run.csv.gz`` -> ``("run", ".csv.gz")``; ``run.h5`` -> ``("run", ".h5")``."""
    name = path.name
    suffixes = path.suffixes
    n = 2 if len(suffixes) >= 2 and suffixes[-1] == ".gz" else 1 if suffixes else 0
    ext = "".join(suffixes[-n:]) if n else ""
    return name[: len(name) - len(ext)], ext


def rotated_re(path: Path) -> re.Pattern[str]:
    stem, ext = split_name(path)
    return re.compile(re.escape(stem) + r"-(\d{6,})-\d{8}T\d{6}Z" + re.escape(ext) + "$")


def rotated_files(path: Path) -> list[Path]:
    """The numbered siblings of ``path`` (``run-000001-20240501T120000Z.csv``), in order."""
    pattern = rotated_re(path)
    try:
        names = os.listdir(path.parent)
    except OSError:
        return []
    found = [(int(mt.group(1)), n) for n in names if (mt := pattern.match(n))]
    return [path.parent / n for _, n in sorted(found)]


def next_index(path: Path) -> int:
    """The index after the highest numbered sibling of ``path`` on disk (1 if none)."""
    existing = rotated_files(path)
    last = rotated_re(path).match(existing[-1].name) if existing else None
    return int(last.group(1)) + 1 if last else 1


def rotated_path(path: Path, index: int, t_ns: int) -> Path:
    stem, ext = split_name(path)
    stamp = datetime.fromtimestamp(t_ns / 1e9, UTC).strftime("%Y%m%dT%H%M%SZ")
    return path.parent / f"{stem}-{index:06d}-{stamp}{ext}"
