"""Child processes a crash test can kill: run to the end, or SIGKILL after a while, and check how it ended."""

from __future__ import annotations

import signal
import subprocess


def finish_or_kill(proc: subprocess.Popen, kill_after: float | None = None, timeout: float = 600) -> tuple[int, str]:
    """Wait for proc (SIGKILL it once `kill_after` seconds have passed); it must exit 0 or die by that kill.
    Returns its exit code and what it wrote on stderr."""
    if kill_after is not None:
        try:
            proc.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=timeout)
    text = err.decode()
    assert proc.returncode in (0, -signal.SIGKILL), text[-2000:]
    return proc.returncode, text
