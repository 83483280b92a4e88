"""First-party plugin: an outbox folder for air-gapped or manual upload (issue 4).

Registered through its entry point like any third-party plugin. Only its
name is real so far: the work it does lands with the issue named above, and
until then using it fails with a clear error instead of pretending.
"""

from __future__ import annotations

from iplosctl.errors import PluginError


class DirectoryTransport:
    """Placeholder until the implementation lands; see the module docstring."""

    name = "directory"

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise PluginError(f"the {self.name} plugin is installed but not built yet")
