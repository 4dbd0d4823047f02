"""Exclusive ownership of a database file by one engine.

Two engines on one file would run the same workflows twice, so ``Engine.open()``
takes an ``flock`` on a sidecar file (``<db>.lock``) and writes its pid there.
The lock belongs to the open file description: a second engine in the same
process is refused like one in another process, and the kernel releases it
when the process dies, so a SIGKILLed server never blocks its own restart.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from ._errors import DatabaseLocked


def lock_path_for(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".lock")


def read_holder_pid(db_path: Path) -> int | None:
    """The pid written by the engine that holds (or last held) ``db_path``."""
    try:
        text = lock_path_for(db_path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def is_locked(db_path: Path) -> bool:
    """Whether an engine holds ``db_path`` right now (the lock is not taken)."""
    path = lock_path_for(db_path)
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return True
        raise
    finally:
        os.close(fd)  # closing releases the shared lock taken to probe
    return False


class FileLock:
    """An exclusive, non-blocking lock on ``<db>.lock``, held until ``release()``."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self.path = lock_path_for(db_path)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise ``DatabaseLocked`` naming the file and the holder's pid."""
        if self._fd is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise DatabaseLocked(self.db_path, read_holder_pid(self.db_path)) from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Give the lock back. Idempotent."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the flock
