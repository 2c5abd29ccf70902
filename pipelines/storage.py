"""Every file the ingest pipeline reads or writes goes through here, on Beam's `FileSystems`.

drop/, the lake and the staging area may then live on shared or object storage. Local paths get two extra
guarantees that object stores give by construction: a listing that never follows links (`lstat`), and reads that
open regular files only (`O_NOFOLLOW | O_NONBLOCK`, then `fstat`), so a symlink or FIFO in drop/ is never opened.
Local reads and the local atomic writer (fsynced) are protocol.files's, the one reader `tributary validate` uses too.
Beam is imported only for a path that is not local, so listing a local drop/ costs no Beam import.
"""

from __future__ import annotations

import hashlib
import os
import stat
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import BinaryIO

from protocol import files
from protocol.files import TEMP_PREFIX, file_kind


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


def _filesystems():
    from apache_beam.io.filesystems import FileSystems

    return FileSystems


def join(base: str, *parts: str) -> str:
    if is_local(base):
        return os.path.join(base, *parts)
    return _filesystems().join(base, *parts)


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
                             f"{st.st_dev}:{st.st_ino}:{st.st_ctime_ns}", file_kind(st.st_mode, st.st_nlink),
                             st.st_ctime_ns))
        return sorted(out, key=lambda x: x.name)
    prefix = folder.rstrip("/") + "/"
    matched = _filesystems().match([prefix + "*"])[0].metadata_list
    out = [Entry(m.path[len(prefix):], True, m.size_in_bytes, f"{m.size_in_bytes}:{m.last_updated_in_seconds}", "file")
           for m in matched if "/" not in m.path[len(prefix):]]
    return sorted(out, key=lambda x: x.name)


def listing_digest(entries: list[Entry]) -> str:
    """A short digest of names, kinds and sizes: changes when anything lands, grows or leaves (no file times)."""
    h = hashlib.blake2b(digest_size=16)
    for e in entries:
        h.update(f"{e.name}\0{e.what}\0{e.size}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def open_regular(path: str) -> BinaryIO:
    """Open a regular file for reading; protocol.files.NotRegularFile for anything else (never follows a local link)."""
    if is_local(path):
        return files.open_regular(path)
    return _filesystems().open(path)


def read_regular(path: str, max_bytes: int) -> bytes:
    """At most `max_bytes + 1` bytes of a regular file, so a caller can tell 'over the limit' without reading it all."""
    if is_local(path):
        return files.read_regular(path, max_bytes)
    with _filesystems().open(path) as f:
        return files.read_bounded(f, max_bytes)


def exists(path: str) -> bool:
    if is_local(path):
        return os.path.lexists(path)
    return _filesystems().exists(path)


def write_atomic(path: str, write: Callable[[BinaryIO], None], *, durable: bool = True,
                 sync_folder: bool = True) -> None:
    """Write `path` through a temporary name in the same folder, then rename it into place (locally: fsynced, with
    its folder, as protocol.files.write_atomic's `durable` and `sync_folder` say)."""
    if is_local(path):
        files.write_atomic(path, write, durable=durable, sync_folder=sync_folder)
        return
    folder, name = path.rsplit("/", 1)
    tmp = f"{folder}/{TEMP_PREFIX}{name}.{uuid.uuid4().hex[:8]}.tmp"
    fs = _filesystems()
    f = fs.create(tmp)
    try:
        write(f)
    finally:
        f.close()
    fs.rename([tmp], [path])


def sync_folders(folders: Iterable[str]) -> None:
    """Make the renames into local `folders` durable (each file's data was synced when it was written). Object
    stores make a write durable when it completes, so there it does nothing."""
    for folder in sorted(set(folders)):
        if is_local(folder):
            files.fsync_dir(folder)


def move(src: str, dst: str) -> None:
    """Rename `src` to `dst` (a link is moved as the link itself, never followed)."""
    if is_local(dst):
        os.makedirs(dst.rsplit("/", 1)[0], exist_ok=True)
    _filesystems().rename([src], [dst])


def delete(path: str) -> None:
    """Delete a file or folder if it is there."""
    from apache_beam.io.filesystem import BeamIOError

    try:
        if exists(path):
            _filesystems().delete([path])
    except BeamIOError:
        if exists(path):
            raise
