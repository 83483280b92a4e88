"""Read manifests: YAML with positions → JSON Schema → typed `Manifest`.

Every schema violation is reported at once, each as `FILE:LINE:COL: path:
message`, so a reviewer fixes a manifest in one round.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from iplosctl import yamlio
from iplosctl.errors import InputError, Location, ManifestError, Problem
from iplosctl.formats import is_format_path
from iplosctl.manifest import parsed_cache
from iplosctl.manifest.model import (
    Certificates,
    Endpoint,
    Epj,
    KeyPair,
    Manifest,
    Municipality,
    RegisterCertificates,
    Sender,
    ServiceUnit,
    Source,
    TestPersons,
    Tls,
)
from iplosctl.validation import schema_problems

SCHEMA_PATH = Path(__file__).resolve().parent / "manifest.schema.json"
DEFAULT_PATH = Path("manifests")


@functools.cache
def _schema_identity() -> str:
    """Part of the parsed cache's key: a manifest kept as schema-valid is valid for this
    schema only, so a changed schema checks every manifest again."""
    return "manifest.schema.json sha256:" + hashlib.sha256(SCHEMA_PATH.read_bytes()).hexdigest()


@functools.cache
def manifest_schema() -> dict[str, Any]:
    """The manifest JSON Schema shipped in the package."""
    with SCHEMA_PATH.open(encoding="utf-8") as fh:
        schema: dict[str, Any] = json.load(fh)
    return schema


def discover(paths: Iterable[Path]) -> list[Path]:
    """Manifest files named by the user; a folder means the manifests below it.

    In a folder (searched recursively, so `examples/` finds every example),
    lockfiles, hidden files and folders, and YAML files of other tools (no
    top-level `apiVersion`, `kind` or `spec`) are skipped; a file named
    explicitly is always read.
    """
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            for candidate in sorted([*path.rglob("*.yaml"), *path.rglob("*.yml")]):
                relative = candidate.relative_to(path).parts
                if any(part.startswith(".") for part in relative):
                    continue
                if candidate.name.endswith(".lock.yaml"):
                    continue
                if _looks_like_manifest(candidate):
                    found.append(candidate)
        else:
            found.append(path)
    return found


def _looks_like_manifest(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            head = fh.read(64_000)
    except OSError:
        return True  # let load() report it
    return any(
        line.startswith((b"apiVersion:", b"kind:", b"spec:", b"\xef\xbb\xbfapiVersion:"))
        for line in head.splitlines()
    )


def load_manifest(path: Path, *, reuse_parsed: bool = False) -> Manifest:
    """Parse and schema-check one manifest; raise ManifestError listing every problem.

    `reuse_parsed` lets an unchanged manifest come from the parsed-manifest cache
    (`parsed_cache`) instead of being parsed again: for commands that only read and
    report (plan, validate, status). Whatever sends or receives parses the manifest
    itself, so a cache folder that someone else could write (a CI cache shared between
    branches) can never change the endpoint or the keys a message goes out with.
    """
    name = str(path)
    try:
        text = yamlio.read_text(path, what="manifest")
    except InputError as exc:
        raise ManifestError(exc.problems) from None
    kept = parsed_cache.read(text, name=name, schema=_schema_identity()) if reuse_parsed else None
    if kept is not None:  # stored only after it passed this schema
        return _build(path, kept.data, kept.root)
    try:
        root = yamlio.loads(text, name=name, what="manifest")
    except InputError as exc:
        raise ManifestError(exc.problems) from None
    plain = yamlio.to_plain(root)
    if not isinstance(plain, dict):
        kind = "a list" if isinstance(plain, list) else "a single value"
        raise ManifestError(
            [
                Problem(
                    Location(name, 1, 1),
                    f"expected a mapping (apiVersion, kind, metadata, spec), got {kind}",
                )
            ]
        )
    problems = schema_problems(manifest_schema(), plain, root, name)
    if problems:
        raise ManifestError(problems + _year_and_environment(plain, root, name, problems))
    parsed_cache.keep(text, name=name, schema=_schema_identity(), data=plain, root=root)
    return _build(path, plain, root)


def _year_and_environment(
    plain: dict[str, Any], root: Any, name: str, known: list[Problem]
) -> list[Problem]:
    """The year and environment checks, also when the schema failed elsewhere.

    The semantic checks need a built manifest, so a schema error used to hide an unknown
    environment until the next run; a reviewer should fix everything in one round.
    """
    from iplosctl import profiles
    from iplosctl.errors import ProfileError

    spec = plain.get("spec")
    if not isinstance(spec, dict) or "profile" in spec:
        return []  # a profile from the repository is checked with the built manifest
    year, environment = spec.get("reportingYear"), spec.get("environment")
    flagged = {p.path for p in known}
    if not isinstance(year, int) or isinstance(year, bool) or "spec.reportingYear" in flagged:
        return []
    if profiles.found_overlay(Path(name), year) is not None:
        return []  # so is an overlay found beside manifests/ (it may add a year or environment)

    def at(key: str, message: str) -> Problem:
        line, col = yamlio.position(root, ["spec", key])
        return Problem(Location(name, line, col), message, f"spec.{key}")

    try:
        profile = profiles.load_profile(year)
    except ProfileError as exc:
        return [at("reportingYear", exc.message)]
    if isinstance(environment, str) and environment not in profile.environments:
        return [
            at(
                "environment",
                f"environment {environment!r} does not exist in the {year} profile "
                f"(choose one of: {', '.join(profile.environments)})",
            )
        ]
    return []


def _digest(plain: dict[str, Any]) -> str:
    """Digest of the manifest's content, independent of key order, comments and quoting."""
    canonical = json.dumps(plain, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _format(value: str | None, base: Path) -> str | None:
    """A format name as it is; a format path resolved against the manifest's folder, absolute."""
    if value is None or not is_format_path(value):
        return value
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else Path(os.path.abspath(base / p)))


def _build(path: Path, data: dict[str, Any], root: Any) -> Manifest:
    # Relative to the manifest's folder, kept relative to where the user stands
    # (manifests/../examples/x.xml → examples/x.xml) so messages stay short.
    base = path.parent

    def file(value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else Path(os.path.normpath(base / p))

    def optional_file(value: str | None) -> Path | None:
        return None if value is None else file(value)

    spec = data["spec"]
    src = spec["source"]
    endpoint = None
    if "endpoint" in spec:
        e = spec["endpoint"]
        t = e.get("tls", {})
        endpoint = Endpoint(
            transport=e["transport"],
            url=e.get("url"),
            namespace=e.get("namespace"),
            username=e.get("username"),
            credential=e.get("credential"),
            cpa_id=e.get("cpaId"),
            receiver_queue=e.get("receiverQueue"),
            tls=Tls(
                ca_file=optional_file(t.get("caFile")),
                verify_peer_name=t.get("verifyPeerName", True),
                client_certificate=optional_file(t.get("clientCertificate")),
                client_key=optional_file(t.get("clientKey")),
            ),
            timeout_seconds=float(e.get("timeoutSeconds", 30)),
            reply_queue=e.get("replyQueue"),
            error_queue=e.get("errorQueue"),
            max_message_size_bytes=e.get("maxMessageSizeBytes"),
            address=e.get("address"),
            smtp=e.get("smtp"),
            imap=e.get("imap"),
            imap_folder=e.get("imapFolder"),
            processed_folder=e.get("processedFolder"),
            register_address=e.get("registerAddress"),
            envelope_agreement=e.get("envelopeAgreement"),
        )
    certificates = None
    if "certificates" in spec:
        c = spec["certificates"]

        def pair(p: dict[str, Any]) -> KeyPair:
            return KeyPair(file(p["certificate"]), file(p["key"]), p.get("passphraseSecret"))

        r = c["register"]
        certificates = Certificates(
            signing=pair(c["signing"]),
            encryption=pair(c["encryption"]),
            register=RegisterCertificates(
                file(r["signing"]),
                file(r["encryption"]),
                optional_file(r.get("trustAnchors")),
            ),
            encryption_previous=(
                pair(c["encryptionPrevious"]) if "encryptionPrevious" in c else None
            ),
            crls=tuple(file(p) for p in c.get("crls", ())),
            intermediates=optional_file(c.get("intermediates")),
        )
    tp = spec.get("testPersons", {})
    return Manifest(
        path=path,
        name=data["metadata"]["name"],
        description=data["metadata"].get("description", ""),
        owner=data["metadata"].get("owner", ""),
        reporting_year=spec["reportingYear"],
        environment=spec["environment"],
        municipality=Municipality(
            spec["municipality"]["number"],
            spec["municipality"]["name"],
            spec["municipality"]["orgNumber"],
        ),
        sender=Sender(spec["sender"]["herId"], spec["sender"]["serviceHerId"]),
        epj=Epj(spec["epj"]["system"], spec["epj"]["version"]),
        service_units=tuple(ServiceUnit(u["orgNumber"], u["name"]) for u in spec["serviceUnits"]),
        source=Source(
            src["plugin"],
            file(src["path"]),
            _format(src.get("format"), base),
            dict(src.get("options", {})),
            {part: file(value) for part, value in src.get("parts", {}).items()},
        ),
        test_persons=TestPersons(tuple(tp.get("names", ())), frozenset(tp.get("ids", ()))),
        endpoint=endpoint,
        certificates=certificates,
        rule_severities=dict(spec.get("rules", {})),
        epj_minimum_versions=dict(spec.get("epjMinimumVersions", {})),
        schemas=optional_file(spec.get("schemas")),
        message_size_limit_bytes=spec.get("messageSizeLimitBytes"),
        profile=optional_file(spec.get("profile")),
        digest=_digest(data),
        node=root,
        payload_schema=spec.get("payloadSchema"),
        payload_format_agreement=spec.get("payloadFormatAgreement"),
    )
