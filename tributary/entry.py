"""The `tributary` command's entry point: cron's hot path, `tributary [--home H] epoch run [--close]`, without
loading the full CLI (typer builds pydantic adapters for all 60 commands' options: about 0.2 s of every start).

Any other command line, `--help` included, goes to the typer CLI (tributary/cli.py). The fast path calls the same
functions as the CLI's `epoch run` and prints the same report; errors are told apart the same way (`guarded`).
"""

from __future__ import annotations

import atexit
import gc
import logging
import os
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

_EPOCH_RUN = ("epoch", "run")


def quiet_logging() -> None:
    """The CLI's logging: warnings only, and Beam's and GX's chatter off."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("apache_beam", "great_expectations", "root"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def guarded(run: Callable[[], object]) -> None:
    """Run a command: a user error (engine.errors.is_user_error) prints one clear line and exits 1, no traceback;
    anything else is a bug: its full traceback on stderr, then a one-line summary, exit 2."""
    try:
        run()
    except Exception as e:  # classified, never swallowed: every path below exits non-zero
        import traceback

        from rich.markup import escape

        from engine.errors import is_user_error
        from tributary.console import CliConsole

        one_line = " ".join(str(e).split())
        if is_user_error(e):
            CliConsole(stderr=True).print(f"[red]error:[/] {escape(one_line)}", highlight=False, soft_wrap=True)
            sys.exit(1)
        sys.stdout.flush()
        traceback.print_exception(e, file=sys.stderr)
        sys.stderr.write(f"internal error: {type(e).__name__}: {one_line} (a bug: please report it with the "
                         "traceback above)\n")
        sys.stderr.flush()
        sys.exit(2)


def plain_epoch_run(args: Sequence[str]) -> tuple[Path | None, bool] | None:
    """(home or None, close) when `args` is exactly `[--home H] epoch run [--close] [--home H]` (each option at
    most once), else None: anything else is the full CLI's to parse."""
    home: Path | None = None
    close = False
    rest = list(args)
    seen: set[str] = set()

    def take_home() -> bool:
        nonlocal home
        if rest and rest[0].startswith("--home="):
            value = rest.pop(0)[len("--home="):]
        elif len(rest) >= 2 and rest[0] == "--home" and not rest[1].startswith("-"):
            value = rest[1]
            del rest[:2]
        else:
            return False
        if "home" in seen or not value:
            raise ValueError
        home = Path(value)
        seen.add("home")
        return True

    try:
        take_home()
        if tuple(rest[:2]) != _EPOCH_RUN:
            return None
        del rest[:2]
        while rest:
            if rest[0] == "--close" and not close:
                rest.pop(0)
                close = True
            elif not take_home():
                return None
    except ValueError:
        return None
    return home, close


def finish(code: int) -> NoReturn:
    """Exit with `code` as the interpreter would, less its teardown: after an epoch the process holds Beam, Great
    Expectations and pandas (millions of objects), and freeing them one by one took 1.2 s of every run.

    What an exit must do still happens: the atexit handlers (logging's flush among them) run and both streams are
    flushed. Every file the epoch wrote was closed (and synced) before its step returned, and the ledger's commits
    are in its WAL. Where a thread that is not a daemon is still running, the interpreter's own exit, which waits
    for it, is used instead.
    """
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing more can reach the reader
            pass
    os._exit(code)


GC_GEN0_ALLOCATIONS = 50_000
"""The cyclic collector's first threshold for a CLI process (CPython's default: 700 allocations). Importing Beam and
Great Expectations creates millions of objects, none of them garbage, and the default ran a collection every 700 of
them: about 6% of an epoch run's CPU time. The collector still runs, only less often."""


def main() -> None:
    gc.set_threshold(GC_GEN0_ALLOCATIONS, 20, 20)
    fast = plain_epoch_run(sys.argv[1:])
    if fast is None:
        from tributary.cli import main as full_cli

        full_cli()
        return
    quiet_logging()
    home, close = fast

    def run() -> None:
        from engine.epoch import run_epoch
        from engine.home import open_home
        from tributary.console import CliConsole
        from tributary.report import print_epoch_run

        h = open_home(home)
        print_epoch_run(CliConsole(), h, run_epoch(h, close=close))

    try:
        guarded(run)
    except SystemExit as e:  # guarded's exit 1 (user error) or 2 (bug), after its message
        if not isinstance(e.code, int):
            raise
        finish(e.code)
    finish(0)


if __name__ == "__main__":
    main()
