"""The CLI's rich console (imports only rich: every command loads it)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

PIPE_TABLE_WIDTH = 100_000  # a table's room when output is not a terminal: it takes only its natural width of that


class CliConsole(Console):
    """The CLI's console. On a terminal, plain rich. When output is not a terminal (a pipe, a file), a table is laid
    out at its natural width, never shrunk to the console's 80 columns (which cuts headers to `account…`): every
    column and cell stays whole for whoever reads or parses it. Everything else prints at the usual width."""

    def print(self, *objects, **kwargs) -> None:  # type: ignore[override]
        if self.is_terminal or not any(isinstance(o, Table) for o in objects):
            super().print(*objects, **kwargs)
            return
        detected = self._width  # None: rich detects the width (COLUMNS, the terminal) each time
        self.width = max(self.width, PIPE_TABLE_WIDTH)
        try:
            super().print(*objects, **kwargs)
        finally:
            self._width = detected
