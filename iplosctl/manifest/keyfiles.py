"""Warnings about the private keys a manifest names: in git, readable by all, unencrypted.

A manifest lives in a repository that is shared, pushed and mirrored, and
whose CI logs are read by many; the keys it names sign and decrypt the
municipality's register traffic. `validate` therefore warns (it does not fail:
a laptop rehearsal may be fine) when a key file is tracked by git, is
readable by every user of the machine, or is stored without a passphrase in
`production` or `qa` (issue 12). The file's content is never shown.
"""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

from iplosctl.errors import IplosctlError, Problem
from iplosctl.manifest.model import Manifest

#: environments in which a key must carry a passphrase
PROTECTED_ENVIRONMENTS = frozenset({"production", "qa"})
_PKCS12 = frozenset({".p12", ".pfx"})


def key_file_warnings(m: Manifest) -> list[Problem]:
    """One warning per problem per key file the manifest names (missing files: no warning,
    `validate` reports those as errors)."""
    from iplosctl.manifest.checks import _shown  # one way to show a path; checks imports us

    warnings: list[Problem] = []
    for path, where in _key_files(m):
        try:
            mode = path.stat().st_mode
        except OSError:
            continue
        if not stat.S_ISREG(mode):
            continue
        shown = _shown(m, path)

        def warn(message: str, where: tuple[str, ...] = where) -> None:
            warnings.append(Problem(m.locate(*where), message, ".".join(where)))

        if _tracked_by_git(path):
            warn(
                f"private key {shown} is tracked by git: remove it from the repository and its "
                "history (git rm --cached), ignore key files in .gitignore, and keep keys "
                "outside the repository"
            )
        if mode & stat.S_IROTH:
            warn(f"private key {shown} is readable by every user of this machine: chmod 600 it")
        if m.environment in PROTECTED_ENVIRONMENTS and _unencrypted(path):
            warn(
                f"private key {shown} has no passphrase, in {m.environment}: encrypt it "
                "(openssl pkcs8 -topk8 -v2 aes-256-cbc) and name the passphrase's secret in "
                "passphraseSecret"
            )
    return warnings


def _key_files(m: Manifest) -> list[tuple[Path, tuple[str, ...]]]:
    out: list[tuple[Path, tuple[str, ...]]] = []
    if m.certificates is not None:
        c = m.certificates
        for role, pair in (("signing", c.signing), ("encryption", c.encryption)):
            out.append((pair.key, ("spec", "certificates", role, "key")))
            if pair.certificate.suffix.lower() in _PKCS12 and pair.certificate != pair.key:
                out.append((pair.certificate, ("spec", "certificates", role, "certificate")))
    if m.endpoint is not None and m.endpoint.tls.client_key is not None:
        out.append((m.endpoint.tls.client_key, ("spec", "endpoint", "tls", "clientKey")))
    return out


def _tracked_by_git(path: Path) -> bool:
    """Whether git's index holds the file; False outside a repository or without git."""
    try:
        proc = subprocess.run(
            ["git", "-C", str(path.parent), "ls-files", "-z", "--", path.name],
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return proc.returncode == 0 and bool(proc.stdout.strip(b"\0"))


def _unencrypted(path: Path) -> bool:
    """Whether the key loads without a passphrase (a key that does not load at all is
    another problem, reported when it is used)."""
    from iplosctl.payload.key_files import load_private_key

    try:
        load_private_key(path, None)
    except (IplosctlError, ValueError, TypeError):
        return False
    return True
