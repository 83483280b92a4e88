"""Checks a schema cannot express: profiles, environments, plugins, files, uniqueness."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from iplosctl import plugins, profiles, transport_policy
from iplosctl.errors import IplosctlError, ManifestError, PluginError, Problem, ProfileError
from iplosctl.manifest.keyfiles import key_file_warnings
from iplosctl.manifest.loader import discover, load_manifest
from iplosctl.manifest.model import Manifest


@dataclass(frozen=True)
class BrokenManifest:
    """A manifest that cannot be planned, and why: one submission's error, not everyone's.

    `name` is the submission name when the manifest parsed far enough to have one;
    `label` is what a reviewer sees (the name, else the file name).
    """

    path: Path
    name: str | None
    problems: tuple[Problem, ...]

    @property
    def label(self) -> str:
        return self.name or self.path.stem

    def selected_by(self, patterns: Sequence[str]) -> bool:
        """`--only` matches the name, or the file name when the name cannot be read."""
        return any(fnmatch.fnmatchcase(self.label, pattern) for pattern in patterns)


@dataclass
class Validation:
    """Manifests that passed every check, and every problem found in the others."""

    manifests: list[Manifest] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    files: int = 0
    #: per file, the manifests with problems (the problems are also in `problems`)
    broken: list[BrokenManifest] = field(default_factory=list)
    #: things that do not stop a command but must be seen (printed as `warning:` lines),
    #: e.g. a private key tracked by git (manifest/keyfiles.py)
    warnings: list[Problem] = field(default_factory=list)

    def only(self, patterns: Sequence[str] | None) -> Validation:
        """The part `--only` selects; a broken manifest outside it is nobody's concern now."""
        if not patterns:
            return self
        manifests = [
            m for m in self.manifests if any(fnmatch.fnmatchcase(m.name, p) for p in patterns)
        ]
        broken = [b for b in self.broken if b.selected_by(patterns)]
        selected = {str(m.path) for m in manifests} | {str(b.path) for b in broken}
        return Validation(
            manifests=manifests,
            problems=[p for b in broken for p in b.problems],
            files=self.files,
            broken=broken,
            warnings=[w for w in self.warnings if w.location.file in selected],
        )


def validate_paths(
    paths: Iterable[Path], *, check_files: bool = True, reuse_parsed: bool = False
) -> Validation:
    """Load and check every manifest under `paths`, collecting all problems.

    `check_files=False` skips "does not exist" for exports and certificates: a
    pre-commit hook or a pull-request runner has the manifests but not the
    export (it holds personal data and is never committed) nor the keys.
    `reuse_parsed`: see `load_manifest`.
    """
    result = Validation()
    loaded: list[Manifest] = []
    files = discover(paths)
    result.files = len(files)
    for path in files:
        try:
            manifest = load_manifest(path, reuse_parsed=reuse_parsed)
        except ManifestError as exc:
            result.problems.extend(exc.problems)
            result.broken.append(BrokenManifest(path, None, tuple(exc.problems)))
            continue
        problems = check_manifest(manifest, check_files=check_files)
        result.problems.extend(problems)
        if check_files:
            result.warnings.extend(key_file_warnings(manifest))
        result.warnings.extend(
            Problem(manifest.locate(*c.path), c.message, ".".join(c.path))
            for c in transport_concerns(manifest)
            if c.severity == transport_policy.WARNING
        )
        if problems:
            result.broken.append(BrokenManifest(path, manifest.name, tuple(problems)))
        else:
            loaded.append(manifest)
    duplicates = _duplicate_names(loaded)
    result.problems.extend(duplicates)
    bad = {p.location.file for p in duplicates}
    result.broken.extend(
        BrokenManifest(
            m.path, m.name, tuple(p for p in duplicates if p.location.file == str(m.path))
        )
        for m in loaded
        if str(m.path) in bad
    )
    result.manifests = [m for m in loaded if str(m.path) not in bad]
    return result


def check_manifest(m: Manifest, *, check_files: bool = True) -> list[Problem]:
    """Semantic problems of one schema-valid manifest."""
    problems: list[Problem] = []

    def add(message: str, *path: str | int) -> None:
        problems.append(Problem(m.locate(*path), message, ".".join(str(p) for p in path)))

    try:
        profile = profiles.profile_for(m)
    except ProfileError as exc:
        add(exc.message, "spec", "profile" if m.profile is not None else "reportingYear")
        profile = None
    if profile is not None:
        env = profile.environments.get(m.environment)
        if env is None:
            add(
                f"environment {m.environment!r} does not exist in the {m.reporting_year} profile "
                f"(choose one of: {', '.join(profile.environments)})",
                "spec",
                "environment",
            )
        elif not env.sandbox:
            if m.endpoint is None:
                add(
                    f"'endpoint' is required in the {m.environment} environment "
                    "(only sandbox has a built-in one)",
                    "spec",
                )
            if m.certificates is None:
                add(
                    f"'certificates' are required in the {m.environment} environment "
                    "(only sandbox generates its own)",
                    "spec",
                )

    for concern in transport_concerns(m):
        if concern.severity == transport_policy.ERROR:
            add(concern.message, *concern.path)

    if _check_plugin(add, "source", m.source.plugin, "spec", "source", "plugin"):
        _check_format(add, m)
    if m.endpoint is not None:
        _check_plugin(add, "transport", m.endpoint.transport, "spec", "endpoint", "transport")

    if check_files and m.source.path.is_dir():
        add(
            f"source {_shown(m, m.source.path)} is a folder, not an export file: "
            "name the export itself",
            "spec",
            "source",
            "path",
        )
    elif check_files and not m.source.path.is_file():
        add(f"source file {_shown(m, m.source.path)} does not exist", "spec", "source", "path")
    for path, where in _referenced_files(m) if check_files else ():
        if not path.is_file():
            add(f"file {_shown(m, path)} does not exist", *where)
    if check_files and m.schemas is not None and not m.schemas.is_dir():
        add(f"schema folder {_shown(m, m.schemas)} does not exist", "spec", "schemas")
    for part, path in m.source.parts.items() if check_files else ():
        if not path.is_file():
            add(f"file {_shown(m, path)} does not exist", "spec", "source", "parts", part)
    if m.payload_schema is not None:
        if m.schemas is None:
            add(
                "payloadSchema names a file in the spec.schemas folder: set spec.schemas too",
                "spec",
                "payloadSchema",
            )
        elif check_files and m.schemas.is_dir() and not (m.schemas / m.payload_schema).is_file():
            add(
                f"{m.payload_schema} is not in the schema folder {_shown(m, m.schemas)}",
                "spec",
                "payloadSchema",
            )

    seen: dict[str, int] = {}
    for index, unit in enumerate(m.service_units):
        if unit.org_number in seen:
            add(
                f"org number {unit.org_number} is listed twice (also at index "
                f"{seen[unit.org_number]})",
                "spec",
                "serviceUnits",
                index,
                "orgNumber",
            )
        seen.setdefault(unit.org_number, index)
    return problems


def transport_concerns(m: Manifest) -> list[transport_policy.Concern]:
    """`amqp://` and `verifyPeerName` refusals and warnings (transport_policy) for one manifest.

    The URL is the manifest's or, without one, the profile's broker; nothing for a
    manifest without an endpoint (the sandbox's built-in register) or an unknown
    year or environment (reported on their own).
    """
    if m.endpoint is None:
        return []
    try:
        env = profiles.profile_for(m).environments.get(m.environment)
    except ProfileError:
        return []
    if env is None:
        return []
    if m.endpoint.transport == "edi":
        e = m.endpoint
        return transport_policy.edi_concerns(
            address=e.address,
            smtp=e.smtp,
            imap=e.imap,
            register_address=e.register_address or profiles.profile_for(m).edi_address,
            register_from_manifest=e.register_address is not None,
            environment=m.environment,
            sandbox=env.sandbox,
            production=env.production,
            verify_peer_name=e.tls.verify_peer_name,
            username=e.username,
            credential=e.credential,
            envelope_agreement=e.envelope_agreement,
        )
    return transport_policy.endpoint_concerns(
        m.endpoint.url or env.broker_url,
        environment=m.environment,
        sandbox=env.sandbox,
        production=env.production,
        verify_peer_name=m.endpoint.tls.verify_peer_name,
        url_from_manifest=m.endpoint.url is not None,
    )


def _check_plugin(add, kind: str, name: str, *where: str) -> bool:  # type: ignore[no-untyped-def]
    try:
        installed = plugins.installed(kind)
    except PluginError as exc:
        add(exc.message, *where)
        return False
    if name not in installed:
        known = ", ".join(installed) or "none"
        add(f"no {kind} plugin named {name!r} is installed (installed: {known})", *where)
        return False
    return True


def _check_format(add, m: Manifest) -> None:  # type: ignore[no-untyped-def]
    """Load the format profile the source reads through: schema, XPaths, prefixes, XSD.

    A broken profile is the manifest's problem (it names the profile), found
    before any export is opened. Only sources that read through profiles
    (`profile_files`) are asked.
    """
    where = ("spec", "source", "format") if m.source.format else ("spec", "source", "plugin")
    try:
        found = plugins.load("source", m.source.plugin)
        source = found() if isinstance(found, type) else found
        profile_files = getattr(source, "profile_files", None)
        if profile_files is not None:
            profile_files(plugins.SourceSpec(m.source.path, m.source.format, m.source.options))
    except IplosctlError as exc:
        add(exc.message, *where)


def _referenced_files(m: Manifest) -> list[tuple[Path, tuple[str | int, ...]]]:
    out: list[tuple[Path, tuple[str | int, ...]]] = []
    if m.certificates is not None:
        c = m.certificates
        pairs = [("signing", c.signing), ("encryption", c.encryption)]
        if c.encryption_previous is not None:
            pairs.append(("encryptionPrevious", c.encryption_previous))
        for role, pair in pairs:
            out.append((pair.certificate, ("spec", "certificates", role, "certificate")))
            out.append((pair.key, ("spec", "certificates", role, "key")))
        for index, crl in enumerate(c.crls):
            out.append((crl, ("spec", "certificates", "crls", index)))
        if c.intermediates is not None:
            out.append((c.intermediates, ("spec", "certificates", "intermediates")))
        out.append((c.register.signing, ("spec", "certificates", "register", "signing")))
        out.append((c.register.encryption, ("spec", "certificates", "register", "encryption")))
        if c.register.trust_anchors is not None:
            out.append(
                (c.register.trust_anchors, ("spec", "certificates", "register", "trustAnchors"))
            )
    if m.endpoint is not None:
        tls = m.endpoint.tls
        for value, key in (
            (tls.ca_file, "caFile"),
            (tls.client_certificate, "clientCertificate"),
            (tls.client_key, "clientKey"),
        ):
            if value is not None:
                out.append((value, ("spec", "endpoint", "tls", key)))
    return out


def _shown(m: Manifest, path: Path) -> str:
    """A path as the user wrote it relative to the manifest, not an absolute one."""
    return os.path.relpath(path, m.path.parent) if not path.is_absolute() else str(path)


def _duplicate_names(manifests: list[Manifest]) -> list[Problem]:
    first: dict[str, Manifest] = {}
    problems: list[Problem] = []
    for m in manifests:
        if m.name in first:
            problems.append(
                Problem(
                    m.locate("metadata", "name"),
                    f"submission name {m.name!r} is also used by {first[m.name].path}: "
                    "names must be unique, each has its own lockfile series",
                    "metadata.name",
                )
            )
        else:
            first[m.name] = m
    return problems
