"""Where the official KITH schemas (MsgHead, AppRec) are: never copied into this repository.

They live in the team's shared folder beside the checkout (`../shared/reference/xsd`).
A clone elsewhere (CI) finds them through `IPLOSCTL_REFERENCE_XSD`, or the
workspace's shared folder. Tests that need them fail, rather than skip, when
they are missing: validation against the real schemas is the point of those tests.
"""

from __future__ import annotations

import os
from pathlib import Path

_CANDIDATES = [
    os.environ.get("IPLOSCTL_REFERENCE_XSD", ""),
    str(Path(__file__).resolve().parents[2] / "shared" / "reference" / "xsd"),
    "/work/shared/reference/xsd",
]


def reference_xsd_dir() -> Path:
    for candidate in _CANDIDATES:
        if candidate and (Path(candidate) / "MsgHead-v1_2.xsd").is_file():
            return Path(candidate)
    raise AssertionError(
        "the official MsgHead/AppRec XSDs were not found: set IPLOSCTL_REFERENCE_XSD to the "
        "folder holding MsgHead-v1_2.xsd and apprec-v1.*.xsd (shared/reference/xsd)"
    )


XSD_DIR = reference_xsd_dir()
