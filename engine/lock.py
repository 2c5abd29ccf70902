"""The home's epoch lock: one writer at a time for every step that writes an epoch (ingest, score, settle).

An advisory `flock` on `<home>/ledger.lock`, held for a whole step (DuckDB's own file lock is held only per
connection, and ingest runs Beam with the ledger closed). A second writer waits up to `lock_wait_seconds`, then
names who holds it. Re-entrant within a process, so `epoch run --close` holds it across its stages.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from engine.errors import TributaryError

LOCK_FILE = "ledger.lock"
LOCK_POLL_SECONDS = 0.1

_held: dict[Path, tuple[int, int]] = {}  # lock path -> (fd, depth) held by this process


class EpochBusy(TributaryError):
    """Another process holds the home's epoch lock for longer than this writer may wait."""


def _describe(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "another process"
    return f"pid {info.get('pid')} ({info.get('holder')}) since {info.get('since')}"


def lock_holder(root: Path) -> str | None:
    """Who holds the lock of the home at `root` now, or None when it is free (never waits)."""
    path = root / LOCK_FILE
    if path in _held:
        return f"this process (pid {os.getpid()})"
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return _describe(path)
    finally:
        os.close(fd)  # closing drops a lock this probe may have taken
    return None


@contextmanager
def epoch_lock(home, holder: str | None = None) -> Iterator[None]:
    """Hold the home's epoch lock for the block: wait up to `lock_wait_seconds`, then EpochBusy naming the holder."""
    path = home.root / LOCK_FILE
    if path in _held:  # re-entrant: the outer block of this process already holds it
        fd, depth = _held[path]
        _held[path] = (fd, depth + 1)
        try:
            yield
        finally:
            fd, depth = _held[path]
            _held[path] = (fd, depth - 1)
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + home.settings.lock_wait_seconds
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                raise EpochBusy(f"{path}: the epoch lock is held by {_describe(path)}; waited "
                                f"{home.settings.lock_wait_seconds:g} s (lock_wait_seconds). Try again when it "
                                "finishes") from None
            time.sleep(LOCK_POLL_SECONDS)
    info = {"pid": os.getpid(), "holder": holder or " ".join(["tributary", *sys.argv[1:]]),
            "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)
    _held[path] = (fd, 1)
    try:
        yield
    finally:
        del _held[path]
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
