"""The server's own storage trouble, told to callers the same way by every interface.

A full disk, a data folder that cannot be written, a database another program holds locked: none is the
caller's fault and none is a bug. `describe` turns such an error into an `Outage` (an HTTP status, a
message without server paths, how soon to try again); anything else is not an outage and stays a bug.
"""

from __future__ import annotations

import errno
import sqlite3
from dataclasses import dataclass

DISK_FULL = "the server is out of disk space; try again later"
UNWRITABLE = "the server cannot write to its data folder (read-only or no permission); its operator must fix it"
BUSY = "the database is busy (another program holds a lock on it); try again in a few seconds"

_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
_UNWRITABLE = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})
# SQLite's primary result codes (the low byte of an extended code): SQLITE_BUSY, _LOCKED, _READONLY, _FULL
_SQLITE_CODES = {5: "busy", 6: "busy", 8: "readonly", 13: "full"}


@dataclass(frozen=True)
class Outage:
    """How one storage fault is answered: `status` for HTTP, `message` for people, `retry_after` seconds."""

    status: int
    message: str
    retry_after: int | None = None


def describe(error: BaseException) -> Outage | None:
    """The outage `error` stands for, or None when it is something else (a bug, a caller's mistake)."""
    if isinstance(error, OSError):
        if error.errno in _FULL:
            return Outage(507, DISK_FULL)
        if error.errno in _UNWRITABLE:
            return Outage(503, UNWRITABLE)
        return None
    if isinstance(error, sqlite3.OperationalError):
        code = _SQLITE_CODES.get((getattr(error, "sqlite_errorcode", None) or 0) & 0xFF)
        if code == "full":
            return Outage(507, DISK_FULL)
        if code == "readonly":
            return Outage(503, UNWRITABLE)
        if code == "busy":
            return Outage(503, BUSY, retry_after=5)
    return None
