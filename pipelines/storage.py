"""Every file the ingest pipeline reads or writes goes through here, on Beam's `FileSystems`.

drop/, the lake and the staging area may then live on shared or object storage. Local paths get two extra
guarantees that object stores give by construction: a listing that never follows links (`lstat`), and reads that
open regular files only (`O_NOFOLLOW | O_NONBLOCK`, then `fstat`), so a symlink or FIFO in drop/ is never opened.
"""

from __future__ import annotations

import hashlib
import os
import stat
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.filesystems import FileSystems

READ_CHUNK_BYTES = 1 << 20
TEMP_PREFIX = "."  # a writer's in-progress name in drop/ (the rename contract); also our own temporaries


class NotRegularFile(OSError):
    """A path is a symlink, FIFO, socket, device or directory: it was not opened."""


@dataclass(frozen=True)
class Entry:
    """One name in a listed folder, described without following links or opening it."""

    name: str
    regular: bool
    size: int            # bytes for a regular file, 0 otherwise
    identity: str        # changes when the file under this name is replaced (local: device, inode and ctime)
    what: str            # "file", "symlink", "directory", "fifo", "socket", "device"
    changed_ns: int = 0  # local: the inode's ctime, set by the kernel (a sender cannot backdate it); ties only


def is_local(path: str) -> bool:
    """Whether `path` is on the local filesystem (no URL scheme)."""
    return "://" not in path


def join(base: str, *parts: str) -> str:
    return FileSystems.join(base, *parts)


def _what(mode: int, links: int = 1) -> str:
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


def list_folder(folder: str) -> list[Entry]:
    """The entries of `folder`, sorted by name; a missing folder is empty. Never follows a link."""
    if is_local(folder):
        try:
            scan = list(os.scandir(folder))
        except FileNotFoundError:
            return []
        out = []
        for e in scan:
            try:
                st = e.stat(follow_symlinks=False)
            except FileNotFoundError:  # taken away while listing
                continue
            regular = stat.S_ISREG(st.st_mode) and st.st_nlink == 1
            out.append(Entry(e.name, regular, st.st_size if regular else 0,
                             f"{st.st_dev}:{st.st_ino}:{st.st_ctime_ns}", _what(st.st_mode, st.st_nlink),
                             st.st_ctime_ns))
        return sorted(out, key=lambda x: x.name)
    prefix = folder.rstrip("/") + "/"
    matched = FileSystems.match([prefix + "*"])[0].metadata_list
    out = [Entry(m.path[len(prefix):], True, m.size_in_bytes, f"{m.size_in_bytes}:{m.last_updated_in_seconds}", "file")
           for m in matched if "/" not in m.path[len(prefix):]]
    return sorted(out, key=lambda x: x.name)


def listing_digest(entries: list[Entry]) -> str:
    """A short digest of names, kinds and sizes: changes when anything lands, grows or leaves (no file times)."""
    h = hashlib.blake2b(digest_size=16)
    for e in entries:
        h.update(f"{e.name}\0{e.what}\0{e.size}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def _open_regular_local(path: str) -> BinaryIO:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        if e.errno in (getattr(os, "ELOOP", 40), 40):
            raise NotRegularFile(e.errno, "a symbolic link, not opened", path) from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        raise NotRegularFile(0, f"a {_what(st.st_mode, st.st_nlink)}, not a regular file", path)
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def open_regular(path: str) -> BinaryIO:
    """Open a regular file for reading; NotRegularFile for anything else (never follows a local link)."""
    if is_local(path):
        return _open_regular_local(path)
    return FileSystems.open(path)


def read_regular(path: str, max_bytes: int) -> bytes:
    """At most `max_bytes + 1` bytes of a regular file, so a caller can tell 'over the limit' without reading it all."""
    with open_regular(path) as f:
        chunks, left = [], max_bytes + 1
        while left > 0:
            chunk = f.read(min(READ_CHUNK_BYTES, left))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    return b"".join(chunks)


def exists(path: str) -> bool:
    if is_local(path):
        return os.path.lexists(path)
    return FileSystems.exists(path)


def write_atomic(path: str, write: Callable[[BinaryIO], None]) -> None:
    """Write `path` through a temporary name in the same folder, then rename it into place."""
    folder, name = path.rsplit("/", 1)
    tmp = f"{folder}/{TEMP_PREFIX}{name}.{uuid.uuid4().hex[:8]}.tmp"
    if is_local(path):
        os.makedirs(folder, exist_ok=True)
    f = FileSystems.create(tmp)
    try:
        write(f)
    finally:
        f.close()
    FileSystems.rename([tmp], [path])


def move(src: str, dst: str) -> None:
    """Rename `src` to `dst` (a link is moved as the link itself, never followed)."""
    if is_local(dst):
        os.makedirs(dst.rsplit("/", 1)[0], exist_ok=True)
    FileSystems.rename([src], [dst])


def delete(path: str) -> None:
    """Delete a file or folder if it is there."""
    try:
        if exists(path):
            FileSystems.delete([path])
    except BeamIOError:
        if exists(path):
            raise
