"""The one safe reader of a file someone else put there, and the one atomic writer (local paths).

Reading: only a regular file with a single link is opened (`O_NOFOLLOW | O_NONBLOCK`, then `fstat`), so a symlink,
hard link, FIFO, socket, device or directory is never opened or followed, and at most `max_bytes + 1` bytes are read,
so a caller can tell "over the limit" without reading it all. Ingest (pipelines/storage.py) and `tributary validate`
(quality/reader.py) both read through here.

Writing: through a dot-prefixed temporary name in the same folder (ingest never reads dot-names), fsynced, renamed
into place, and the folder fsynced, so a reader sees the old file or the whole new one, also after a crash.
"""

from __future__ import annotations

import errno
import os
import stat
import uuid
from collections.abc import Callable
from os import PathLike
from typing import BinaryIO

READ_CHUNK_BYTES = 1 << 20
TEMP_PREFIX = "."                 # a writer's in-progress name in drop/ (the rename contract); also our own temporaries
MAX_PAYLOAD_BYTES = 64 * 2**20    # the default of the market's max_payload_bytes setting


class NotRegularFile(OSError):
    """A path is a symlink, FIFO, socket, device or directory: it was not opened."""


def file_kind(mode: int, links: int = 1) -> str:
    """What a `stat` mode (and link count) describes: "file" only for a regular file with a single link."""
    if stat.S_ISREG(mode):
        # A second name for a file elsewhere (a hard link) could make us read what the sender cannot: refused too.
        return "file" if links == 1 else "hard link"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "device"


def open_regular(path: str | PathLike) -> BinaryIO:
    """Open a regular file with a single link for reading; NotRegularFile for anything else (never follows a link).
    FileNotFoundError and other OSErrors of the open pass through."""
    path = os.fspath(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        if e.errno in (getattr(os, "ELOOP", 40), 40):
            raise NotRegularFile(e.errno, "a symbolic link, not opened", path) from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        raise NotRegularFile(0, f"a {file_kind(st.st_mode, st.st_nlink)}, not a regular file", path)
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_bounded(f: BinaryIO, max_bytes: int) -> bytes:
    """At most `max_bytes + 1` bytes of an open file, read in chunks."""
    chunks, left = [], max_bytes + 1
    while left > 0:
        chunk = f.read(min(READ_CHUNK_BYTES, left))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_regular(path: str | PathLike, max_bytes: int) -> bytes:
    """At most `max_bytes + 1` bytes of a regular file, so a caller can tell 'over the limit' without reading it all."""
    with open_regular(path) as f:
        return read_bounded(f, max_bytes)


def fsync_dir(folder: str | PathLike) -> None:
    """Make a rename in `folder` durable (a no-op where the filesystem cannot sync a directory)."""
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def write_atomic(path: str | PathLike, write: Callable[[BinaryIO], None], *, durable: bool = True,
                 sync_folder: bool = True) -> None:
    """Write `path` through a dot-prefixed temporary name in the same folder (created if missing), fsync it, rename
    it into place and fsync the folder. `write` gets the open binary file; nothing is left behind if it raises.
    `durable=False` skips both fsyncs: for scratch files a crash may lose (they are rebuilt by the rerun);
    `sync_folder=False` syncs the data only, for a file that will be renamed again (its last folder is synced then)."""
    path = os.fspath(path)
    folder, name = os.path.split(path)
    folder = folder or "."
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f"{TEMP_PREFIX}{name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as f:
            write(f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
        if durable and sync_folder:
            fsync_dir(folder)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
