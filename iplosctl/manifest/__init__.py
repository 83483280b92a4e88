"""Submission manifests: schema, loading with positions, semantic checks, typed model."""

from __future__ import annotations

from iplosctl.manifest.checks import Validation, check_manifest, validate_paths
from iplosctl.manifest.loader import DEFAULT_PATH, discover, load_manifest, manifest_schema
from iplosctl.manifest.model import Manifest

__all__ = [
    "DEFAULT_PATH",
    "Manifest",
    "Validation",
    "check_manifest",
    "discover",
    "load_manifest",
    "manifest_schema",
    "validate_paths",
]
