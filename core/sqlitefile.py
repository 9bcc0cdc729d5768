"""An SQLite file one lgf process owns: how the sink spools (``lgf.spool``) and the alert journal
(``lgf.journal``) open theirs and write to it.

Why one place: both must refuse a second lgf on the same file (two writers would send or replay
the same items twice) and both write in explicit transactions; the two copies had drifted apart
only in their error text.
"""

from __future__ import annotations

import contextlib
import fcntl
import sqlite3
from pathlib import Path
from typing import IO

from .errors import DeliveryError


def open_owned(path: Path, in_use: str, page_size: int | None = None) -> tuple[IO[str], sqlite3.Connection]:
    """``(lock file, connection)`` of ``path``, in WAL mode, shared across threads (the caller
    locks). The lock file beside it (``flock``) is held for the connection's life and released by
    the kernel when the holder dies, even by ``kill -9``; a second holder gets
    ``DeliveryError(in_use)``, not retryable. ``page_size``: SQLite's page size for a file made
    now (a file that exists keeps its own)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lockfile = open(path.with_suffix(".lock"), "a+")  # noqa: SIM115 (held for life)
    try:
        fcntl.flock(lockfile, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lockfile.close()
        raise DeliveryError(in_use, retryable=False) from None
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    if page_size is not None:  # before WAL mode: in WAL a page size cannot change any more
        db.execute(f"PRAGMA page_size={int(page_size)}")
    db.execute("PRAGMA journal_mode=WAL")
    return lockfile, db


@contextlib.contextmanager
def transaction(db: sqlite3.Connection):
    """One write transaction: committed, or rolled back on any error (which propagates)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
