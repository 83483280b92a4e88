"""Plan renderers: text (terminal), markdown (pull-request comment), json (versioned).

Pure functions from a Plan to a string. They print what the plan holds:
counts, codes, digests and record indices, never a person id or a name.
"""

from __future__ import annotations

from iplosctl.render.common import next_command, summary_line
from iplosctl.render.json import render_json
from iplosctl.render.markdown import render_markdown
from iplosctl.render.text import render_text

RENDERERS = {"text": render_text, "markdown": render_markdown, "json": render_json}

__all__ = [
    "RENDERERS",
    "next_command",
    "render_json",
    "render_markdown",
    "render_text",
    "summary_line",
]
