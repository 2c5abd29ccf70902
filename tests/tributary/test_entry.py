"""The `tributary` script's entry: plain `epoch run` skips the typer CLI, everything else goes to it unchanged."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tributary.entry import plain_epoch_run

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("args", "expect"), [
    (["epoch", "run"], (None, False)),
    (["--home", "h", "epoch", "run"], (Path("h"), False)),
    (["--home=h", "epoch", "run", "--close"], (Path("h"), True)),
    (["epoch", "run", "--home", "h", "--close"], (Path("h"), True)),
    (["epoch", "run", "--close", "--home=h"], (Path("h"), True)),
])
def test_plain_epoch_run_lines_take_the_fast_path(args, expect) -> None:
    assert plain_epoch_run(args) == expect


@pytest.mark.parametrize("args", [
    [], ["--help"], ["epoch"], ["epoch", "run", "--help"], ["epoch", "run", "--epoch", "3"],
    ["epoch", "run", "--close-when-due"], ["epoch", "run", "--close", "--close"], ["epoch", "settle"],
    ["--home", "a", "epoch", "run", "--home", "b"], ["--home", "epoch", "run"], ["--home=", "epoch", "run"],
    ["epoch", "run", "extra"], ["sql", "SELECT 1"], ["--home", "h", "status"],
])
def test_everything_else_goes_to_the_full_cli(args) -> None:
    assert plain_epoch_run(args) is None


def _tributary(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("tributary")
    return subprocess.run([str(script), *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, **(env or {})))


def _full_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tributary.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.process
def test_the_fast_path_says_what_the_full_cli_says(market) -> None:
    home = str(market.home.root)
    fast, full = _tributary("--home", home, "epoch", "run"), _full_cli("--home", home, "epoch", "run")
    assert fast.returncode == full.returncode == 0, fast.stderr + full.stderr
    assert fast.stdout == full.stdout and "epoch 1: accepted 0 submissions" in fast.stdout
    # A user error is one line and exit 1 on both paths (here: a broken task file).
    (market.home.paths.tasks / "x.toml").write_text("name = 'x'\nlabel = \n")
    fast, full = _tributary("--home", home, "epoch", "run"), _full_cli("--home", home, "epoch", "run")
    assert fast.returncode == full.returncode == 1
    assert fast.stderr == full.stderr and fast.stderr.startswith("error:") and "Traceback" not in fast.stderr


def _child(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)


@pytest.mark.process
def test_finish_keeps_what_an_exit_must_do(tmp_path) -> None:
    """finish skips only the interpreter's teardown: the exit code, buffered output on both streams and the atexit
    handlers all survive it."""
    marker = tmp_path / "atexit-ran"
    proc = _child(
        "import atexit, sys\n"
        "from pathlib import Path\n"
        f"atexit.register(Path({str(marker)!r}).write_text, 'yes')\n"
        "sys.stdout.write('no newline yet')\n"
        "sys.stderr.write('to stderr')\n"
        "from tributary.entry import finish\n"
        "finish(3)\n")
    assert proc.returncode == 3
    assert proc.stdout == "no newline yet" and proc.stderr == "to stderr"
    assert marker.read_text() == "yes"


@pytest.mark.process
def test_finish_waits_for_a_running_thread(tmp_path) -> None:
    """A non-daemon thread still at work gets the interpreter's own exit, which waits for it to end."""
    done = tmp_path / "thread-done"
    proc = _child(
        "import threading, time\n"
        "from pathlib import Path\n"
        f"threading.Thread(target=lambda: (time.sleep(0.3), Path({str(done)!r}).write_text('done'))).start()\n"
        "from tributary.entry import finish\n"
        "finish(4)\n")
    assert proc.returncode == 4
    assert done.read_text() == "done"
