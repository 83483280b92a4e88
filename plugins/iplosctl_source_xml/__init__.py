"""First-party plugin: EPJ XML exports read through a format profile (issue 3).

Registered through its entry point like any third-party plugin. Only its
name is real so far: the work it does lands with the issue named above, and
until then using it fails with a clear error instead of pretending.
"""

from __future__ import annotations

from iplosctl.errors import PluginError


class XmlSource:
    """Placeholder until the implementation lands; see the module docstring."""

    name = "xml"

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise PluginError(f"the {self.name} plugin is installed but not built yet")
