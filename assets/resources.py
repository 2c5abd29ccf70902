"""The Dagster resource that points assets at a Tributary home."""


from typing import Optional

import dagster as dg

from engine.home import Home, open_home


class TributaryHome(dg.ConfigurableResource):
    """A market home; unset means $TRIBUTARY_HOME (read when a run starts), else ./data."""

    home: Optional[str] = None

    def open(self) -> Home:
        return open_home(self.home)
