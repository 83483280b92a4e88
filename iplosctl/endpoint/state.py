"""Where local, git-ignored state lives: sandbox certificates and queues, quarantine.

It follows the manifest, not the current folder (`state_dir`), so every command run for
one submission, from wherever, finds the same state (DESIGN.md §8).
"""

from __future__ import annotations

import os
from pathlib import Path

from iplosctl.manifest import Manifest

STATE_FOLDER = ".iplosctl"


def state_dir(manifest: Manifest | None = None) -> Path:
    """Local, git-ignored state (sandbox certificates and queues, quarantine).

    `IPLOSCTL_STATE_DIR` when set; else `.iplosctl/` at the root of the repository that
    holds the manifest (the nearest folder above it with `.git`), or beside the manifest
    outside a repository. It follows the manifest, not the current folder: `apply` run
    from the repository root and `receipts` run from `manifests/` must see the same
    sandbox queues and quarantine. Without a manifest (`sandbox serve`), the current folder.
    """
    override = os.environ.get("IPLOSCTL_STATE_DIR")
    if override:
        return Path(override)
    if manifest is None:
        return Path(STATE_FOLDER)
    return repository_root(manifest.path) / STATE_FOLDER


def repository_root(path: Path) -> Path:
    """The nearest folder above `path` holding `.git` (a folder, or a file in a worktree),
    else the folder of `path`."""
    folder = path.resolve().parent
    for candidate in (folder, *folder.parents):
        if (candidate / ".git").exists():
            return candidate
    return folder
