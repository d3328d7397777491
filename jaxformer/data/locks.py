"""One process at a time in a directory: a training workdir, a data cache being built.

A lock is an advisory `fcntl.flock` on a file in the directory that also records who holds it
(pid, host, start time), so that a process turned away can name the holder. The kernel drops the
flock when its process dies, however it dies, so a lock left by a killed process is free: the next
process takes it over and says whose it was. A holder that ends normally empties the record. The
file itself is never deleted: a process that opened it just before a deletion would lock a file
nobody else sees.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path

log = logging.getLogger("jaxformer")


class LockedError(RuntimeError):
    """Another live process holds the lock."""


def describe(record: dict) -> str:
    """`pid 123 on host h since 2024-01-01 12:00:00` from a lock file's record."""
    since = record.get("since")
    when = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(since)) if since else ""
    return f"pid {record.get('pid', '?')} on host {record.get('host', '?')}{when}"


class FileLock:
    """`with FileLock(path, what):` holds an exclusive lock on `path` (created if needed).

    `wait=False`: LockedError at once if another process holds it; `wait=True`: blocks until it is
    free, logging whom it waits for. `what` names the thing locked in those messages."""

    def __init__(self, path: str | os.PathLike, what: str, wait: bool = False):
        self.path = Path(path)
        self.what = what
        self.wait = wait
        self._fd: int | None = None

    def _record(self) -> dict:
        try:
            return json.loads(os.pread(self._fd, 4096, 0) or b"{}")
        except (OSError, ValueError):
            return {}

    def acquire(self) -> FileLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = describe(self._record())
            if not self.wait:
                os.close(self._fd)
                self._fd = None
                raise LockedError(
                    f"{self.what} is in use by another process ({holder}; lock file {self.path}); "
                    "wait for it to finish or stop it"
                ) from None
            log.warning("waiting for %s, held by %s (lock file %s)", self.what, holder, self.path)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        previous = self._record()
        if previous.get("pid"):  # a holder that ends normally empties the record
            log.warning(
                "taking over the lock on %s left by %s, which is no longer running",
                self.what,
                describe(previous),
            )
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, json.dumps(record).encode(), 0)
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
