"""Disk errors as users read them: a short reason for counters and a one-line message with
the fix (the file, what the system said, what to do about it)."""

from __future__ import annotations

import errno
import os

from radlogger.errors import OperationError

__all__ = ["StorageError", "describe"]

_FIXES = {
    errno.ENOSPC: "free disk space or point path at a larger disk",
    errno.EDQUOT: "raise the disk quota or point path elsewhere",
    errno.EACCES: "check the permissions of the file and its directory, or change path",
    errno.EPERM: "check the permissions of the file and its directory, or change path",
    errno.EROFS: "the file system is read-only: remount it or change path",
    errno.ENOENT: "the directory vanished: recreate it or change path",
    errno.ENOTDIR: "a part of path is a file, not a directory: change path",
    errno.EEXIST: "a file is where the directory of path should be: move it or change path",
    errno.EIO: "the disk reports I/O errors: check it",
}


class StorageError(OperationError):
    """A store could not keep what it was given (raised only by :meth:`write_all`)."""


def describe(exc: BaseException) -> tuple[str, str]:
    """``(short reason for counters, one-line message with the fix)``."""
    code = getattr(exc, "errno", None)
    if isinstance(code, int) and code in errno.errorcode:
        name = errno.errorcode[code]
        detail = (getattr(exc, "strerror", None) or os.strerror(code)).splitlines()[0][:200]
        text = f"{detail} [{name}]"
        fix = _FIXES.get(code, "")
        return name, f"{text}; {fix}" if fix else text
    name = getattr(exc, "sqlite_errorname", None) or type(exc).__name__
    text = (str(exc) or type(exc).__name__).splitlines()[0][:200]
    if name in ("SQLITE_FULL",):
        return name, f"{text} [{name}]; free disk space or raise max_bytes"
    if name in ("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM"):
        return name, f"{text} [{name}]; check permissions of the file and its directory"
    return name, f"{type(exc).__name__}: {text}"
