"""First-party plugin: tabular exports with a column mapping (issue 3).

Registered through its entry point like any third-party plugin. Only its
name is real so far: the work it does lands with the issue named above, and
until then using it fails with a clear error instead of pretending.
"""

from __future__ import annotations

from iplosctl.errors import PluginError


class CsvSource:
    """Placeholder until the implementation lands; see the module docstring."""

    name = "csv"

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise PluginError(f"the {self.name} plugin is installed but not built yet")
