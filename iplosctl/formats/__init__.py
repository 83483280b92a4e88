"""Export formats: XSDs and format profiles (XPath mappings) shipped as data."""

from __future__ import annotations

from pathlib import Path

FORMATS_DIR = Path(__file__).resolve().parent
EXPORT_V1_NAMESPACE = "urn:iplosctl:export:v1"
EXPORT_V1_XSD = FORMATS_DIR / "iplos-export-v1.xsd"


def is_format_path(value: str) -> bool:
    """A format given as a file (`./formats/acme.yaml`) rather than a name (`iplos-export-v1`)."""
    return "/" in value or "\\" in value or value.endswith((".yaml", ".yml"))
