"""Named crash points for the crash-recovery tests: `TRIBUTARY_FAILPOINT=name` SIGKILLs the process there.

Read when reached, never at import; unset (always, outside tests) it does nothing.
"""

from __future__ import annotations

import os
import signal

FAILPOINT_ENV = "TRIBUTARY_FAILPOINT"


def reach(name: str) -> None:
    """Die here, as a power cut would, if the environment names this point."""
    if os.environ.get(FAILPOINT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
