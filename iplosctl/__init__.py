"""iplosctl: declarative, reviewable IPLOS submissions to KPR.

The version comes from the installed distribution so that `iplosctl --version`,
saved plans and support bundles all report the same number.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("iplosctl")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
