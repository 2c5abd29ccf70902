"""drop/ as ingest sees it: the listing sorted into what each name is, the decisions the listing alone makes, and
the moves out of drop/ once the ledger has recorded a decision."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pipelines import storage
from pipelines.manifest import MANIFEST_SUFFIX
from pipelines.records import Sighting, unverified_record
from protocol import reasons as R


@dataclass(frozen=True)
class DropScan:
    """drop/ as listed, sorted into what ingest does with each name."""

    entries: tuple[storage.Entry, ...]
    manifests: tuple[storage.Entry, ...]      # regular files named <payload>.manifest.json
    loose: tuple[storage.Entry, ...]          # regular files no listed manifest names (payload before its manifest)
    in_progress: tuple[storage.Entry, ...]    # regular dot-names: a writer's temporary files
    not_regular: tuple[storage.Entry, ...]    # links, FIFOs, devices, directories nobody's manifest names
    bad_names: tuple[storage.Entry, ...] = ()  # names that are not valid UTF-8: nothing can be recorded under them


def scan_drop(drop: str) -> DropScan:
    """List drop/ without opening or following anything."""
    listed = storage.list_folder(str(drop))
    bad_names = [e for e in listed if not _is_utf8(e.name)]
    entries = [e for e in listed if _is_utf8(e.name)]
    manifests = [e for e in entries if e.regular and not e.name.startswith(".") and e.name.endswith(MANIFEST_SUFFIX)
                 and e.name != MANIFEST_SUFFIX]
    # Each manifest's own name and its payload's: those are judged with the submission, not on their own.
    claimed = {m.name for m in manifests} | {m.name[: -len(MANIFEST_SUFFIX)] for m in manifests}
    loose, in_progress, not_regular = [], [], []
    for e in entries:
        if e.name in claimed:
            continue
        if not e.regular:
            not_regular.append(e)
        elif e.name.startswith("."):
            in_progress.append(e)
        else:
            loose.append(e)
    return DropScan(tuple(listed), tuple(manifests), tuple(loose), tuple(in_progress), tuple(not_regular),
                    tuple(bad_names))


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:   # os.scandir decodes undecodable bytes to lone surrogates
        return False
    return True


def display_name(name: str) -> str:
    """A listed name as text the ledger can store: undecodable bytes written as \\xNN escapes."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def standalone_records(scan: DropScan, sightings: Mapping[str, Sighting]) -> list[dict]:
    """Decisions the driver makes from the listing alone: non-regular entries, and loose files past the wait."""
    out = []
    bad = {e.name: e for e in scan.bad_names}
    paired = {e.name[: -len(MANIFEST_SUFFIX)] for e in scan.bad_names if e.regular and e.name.endswith(MANIFEST_SUFFIX)}
    for e in scan.bad_names:
        shown = display_name(e.name)
        if not e.regular:
            out.append(unverified_record(shown, (e.name,), sightings[e.name], R.NOT_REGULAR,
                                         f"{shown}: a {e.what}, not a regular file; not opened or followed"))
        elif e.name.endswith(MANIFEST_SUFFIX):
            payload = e.name[: -len(MANIFEST_SUFFIX)]
            files = (payload, e.name) if payload in bad and bad[payload].regular else (e.name,)
            out.append(unverified_record(shown, files, sightings[e.name], R.UNREADABLE,
                                         f"{shown}: field 'payload': the file name is not valid UTF-8"))
        elif e.name not in paired:
            out.append(unverified_record(shown, (e.name,), sightings[e.name], R.UNREADABLE,
                                         f"{shown}: the file name is not valid UTF-8; name files in UTF-8"))
    for e in scan.not_regular:
        out.append(unverified_record(e.name, (e.name,), sightings[e.name], R.NOT_REGULAR,
                                     f"{e.name}: a {e.what}, not a regular file; not opened or followed"))
    for e in (*scan.loose, *scan.in_progress):
        s = sightings[e.name]
        if s.stale:
            out.append(unverified_record(e.name, (e.name,), s, R.INCOMPLETE,
                                         f"{e.name}: no manifest completed this file before the wait ran out"))
    return out


def _free_name(dest: str, name: str) -> str:
    """`name`, or `stem~N.ext`, so that nothing already in `dest` is overwritten."""
    if not storage.exists(storage.join(dest, name)):
        return name
    stem, dot, ext = name.partition(".")
    n = 1
    while storage.exists(storage.join(dest, f"{stem}~{n}{dot}{ext}")):
        n += 1
    return f"{stem}~{n}{dot}{ext}"


def move_files(drop: str, dest: str, names: Sequence[str]) -> list[str]:
    """Move named entries of drop/ into `dest` (links as links), never overwriting; returns the names moved.

    A name that is no longer in drop/ was moved by an earlier, interrupted run: skipped, so moving is idempotent.
    """
    moved = []
    for name in names:
        src = storage.join(str(drop), name)
        if not storage.exists(src):
            continue
        storage.move(src, storage.join(str(dest), _free_name(str(dest), name)))
        moved.append(name)
    return moved
