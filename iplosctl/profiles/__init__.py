"""Reporting-year profiles: the register's facts for one year, shipped as data.

A new reporting year is a new YAML file here, validated against
`profile.schema.json` when loaded; no code changes. The files cite their
sources (the KPR letter, Helsedirektoratet's pages via DOMAIN.md), and list
what they could not source under `unverified`, so a plan can say so.

A municipality does not wait for a release when KPR announces a new HER-id
or deadline: an overlay file in its own repository (`spec.profile`, or
`profiles/<year>.yaml` beside the `manifests/` folder) is layered over the
shipped profile of that year or over the year it `extends`. Mappings merge
key by key, lists and scalars replace, `null` removes a key; the merged
result is validated like a shipped profile, and errors name the overlay.
`profile_for(manifest)` is the one way code gets a manifest's profile.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from iplosctl import yamlio
from iplosctl.errors import InputError, Location, Problem, ProfileError
from iplosctl.validation import schema_problems

if TYPE_CHECKING:
    from iplosctl.manifest.model import Manifest

PROFILE_DIR = Path(__file__).resolve().parent
OrgNumberRule = Literal["required", "optional", "forbidden"]


@dataclass(frozen=True)
class Environment:
    """Where the register receives in one environment."""

    name: str
    receiver_her_id: int
    description: str
    production: bool = False
    sandbox: bool = False
    broker_url: str | None = None
    namespace: str | None = None


@dataclass(frozen=True)
class Deadline:
    name: str
    date: dt.date
    description: str


@dataclass(frozen=True)
class MessagePart:
    """One MsgHead message of a submission (KPR_IPL, KPR_IDE)."""

    type: str
    description: str
    #: full | without-person-ids | identity-only (see profile.schema.json)
    content: str = "full"


@dataclass(frozen=True)
class ServiceCode:
    """A tjenestetype of kodeverk 9151 and whether it takes the executing unit's org number."""

    code: str
    name: str
    org_number: OrgNumberRule


@dataclass(frozen=True)
class Contact:
    topic: str
    address: str


@dataclass(frozen=True)
class Unverified:
    """A fact of a profile that no source confirms (`unverified:` in the file)."""

    #: dotted path into the profile, e.g. `deadlines` or `environments.production.receiverHerId`
    path: str
    reason: str


@dataclass(frozen=True)
class Profile:
    """Everything iplosctl knows about one reporting year."""

    year: int
    register_name: str
    edi_address: str | None
    contacts: tuple[Contact, ...]
    environments: dict[str, Environment]
    deadlines: tuple[Deadline, ...]
    message_parts: tuple[MessagePart, ...]
    service_codes: dict[str, ServiceCode]
    housing_current: frozenset[str]
    housing_obsolete: frozenset[str]
    welfare_technology_codes: frozenset[str]
    epj_minimum_versions: dict[str, str]
    assessment_variables: dict[str, str]
    message_warn_bytes: int
    message_limit_bytes: int
    sources: tuple[str, ...] = ()
    unverified: tuple[Unverified, ...] = ()
    #: the YAML files this profile was built from: the shipped base first, then an overlay
    files: tuple[Path, ...] = ()
    #: the overlay from the municipality's repository, if any
    overlay: Path | None = None


@functools.cache
def _schema() -> dict[str, object]:
    with (PROFILE_DIR / "profile.schema.json").open(encoding="utf-8") as fh:
        schema: dict[str, object] = json.load(fh)
    return schema


def available_years() -> list[int]:
    """Reporting years with a shipped profile, ascending."""
    return sorted(int(p.stem) for p in PROFILE_DIR.glob("[0-9][0-9][0-9][0-9].yaml"))


@functools.cache
def load_profile(year: int) -> Profile:
    """The validated shipped profile for `year`, or ProfileError naming the years that exist."""
    plain, path = _shipped(year)
    return _build(plain, files=(path,))


@functools.cache
def _shipped_checked(year: int) -> tuple[dict[str, Any], Path]:
    path = PROFILE_DIR / f"{year}.yaml"
    if not path.is_file():
        years = ", ".join(str(y) for y in available_years())
        raise ProfileError(f"no reporting-year profile for {year} (profiles exist for: {years})")
    try:
        root = yamlio.load(path, what="profile")
    except InputError as exc:
        raise ProfileError(f"broken profile {path.name}: {exc.lines()[0]}") from None
    plain = yamlio.to_plain(root)
    problems = schema_problems(_schema(), plain, root, str(path))
    problems += _unverified_problems(plain, root, str(path))
    if problems:
        raise ProfileError(f"broken profile {path.name}: {problems[0]}")
    return plain, path


def _shipped(year: int) -> tuple[dict[str, Any], Path]:
    """A private copy of the shipped profile's data (overlays merge into it)."""
    plain, path = _shipped_checked(year)
    return copy.deepcopy(plain), path


# --- overlays from the municipality's repository -------------------------------------

#: folder name an overlay is looked up in, beside the `manifests/` folder
PROFILES_FOLDER = "profiles"


def overlay_path(manifest: Manifest) -> Path | None:
    """The overlay for `manifest`: `spec.profile`, else `profiles/<year>.yaml` beside `manifests/`.

    The automatic lookup walks up from the manifest to the nearest folder named
    `manifests` and looks for `profiles/<reportingYear>.yaml` beside it; a
    manifest outside any `manifests/` folder gets no automatic overlay (so a
    stray file above the repository is never picked up).
    """
    explicit: Path | None = getattr(manifest, "profile", None)
    if explicit is not None:
        return explicit
    return found_overlay(manifest.path, manifest.reporting_year)


def found_overlay(manifest_path: Path, year: int) -> Path | None:
    """`profiles/<year>.yaml` beside the nearest `manifests/` folder above `manifest_path`."""
    start = manifest_path.absolute().parent
    for folder in (start, *start.parents):
        if folder.name == "manifests":
            candidate = folder.parent / PROFILES_FOLDER / f"{year}.yaml"
            if not candidate.is_file():
                return None
            try:
                return candidate.relative_to(Path.cwd())
            except ValueError:
                return candidate
    return None


def profile_for(manifest: Manifest) -> Profile:
    """The profile a manifest works with: the shipped year, with its overlay if it has one."""
    path = overlay_path(manifest)
    if path is None:
        return load_profile(manifest.reporting_year)
    return load_overlay(path, year=manifest.reporting_year)


_OVERLAYS: dict[tuple[str, int | None, str], Profile] = {}


def load_overlay(path: Path, *, year: int | None = None) -> Profile:
    """The profile an overlay file makes, layered over its base; ProfileError names the file.

    `year` is the manifest's reporting year: the overlay's `reportingYear`
    defaults to it and must not contradict it. The result is cached by the
    overlay's bytes, so an edited overlay is read again.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ProfileError(f"profile overlay {path} not found") from None
    except IsADirectoryError:
        raise ProfileError(f"profile overlay {path} is a folder, not a YAML file") from None
    except OSError as exc:
        raise ProfileError(f"profile overlay {path}: cannot read ({exc.strerror})") from None
    key = (str(path.absolute()), year, hashlib.sha256(raw).hexdigest())
    if key not in _OVERLAYS:
        _OVERLAYS[key] = _load_overlay(path, year)
    return _OVERLAYS[key]


def _load_overlay(path: Path, year: int | None) -> Profile:
    name = str(path)

    def fail(message: str, *where: str | int) -> ProfileError:
        line, col = yamlio.position(root, where) if where else (0, 0)
        at = f"{name}:{line}:{col}" if line else name
        return ProfileError(f"broken profile overlay {at}: {message}")

    try:
        root = yamlio.load(path, what="profile overlay")
    except InputError as exc:
        raise ProfileError(f"broken profile overlay {exc.lines()[0]}") from None
    if not isinstance(root, Mapping):
        raise ProfileError(f"broken profile overlay {name}:1:1: expected a mapping of profile keys")
    plain: dict[str, Any] = yamlio.to_plain(root)
    extends = plain.pop("extends", None)
    if extends is not None and (isinstance(extends, bool) or not isinstance(extends, int)):
        raise fail("extends: must be a reporting year with a shipped profile, e.g. 2023", "extends")
    own_year = plain.get("reportingYear", year)
    if not isinstance(own_year, int) or isinstance(own_year, bool):
        raise fail("reportingYear: set it (or use the overlay from a manifest)", "reportingYear")
    if year is not None and own_year != year:
        raise fail(
            f"reportingYear: the overlay is for {own_year} but the manifest reports {year}",
            "reportingYear",
        )
    base_year = extends if extends is not None else own_year
    base: dict[str, Any] = {}
    base_files: tuple[Path, ...] = ()
    if base_year in available_years():
        base, base_path = _shipped(base_year)
        base_files = (base_path,)
    elif extends is not None:
        years = ", ".join(str(y) for y in available_years())
        raise fail(
            f"extends: no shipped profile for {extends} (profiles exist for: {years})", "extends"
        )
    base_unverified = base.pop("unverified", [])
    own_unverified = plain.pop("unverified", None)
    restated = _leaves(plain)
    merged = merge(base, plain)
    merged["reportingYear"] = own_year
    # A fact the overlay restates is the municipality's word now, no longer unverified.
    # A mark on a key the overlay removed (null) has nothing left to mark.
    kept = [
        u
        for u in base_unverified
        if not _covered(u["path"], restated) and _resolve(merged, u["path"])
    ]
    if kept or own_unverified is not None:
        merged["unverified"] = kept + list(own_unverified or [])
    problems = schema_problems(_schema(), merged, root, name)
    if not problems and own_unverified:
        # Checked against the merged profile, located at the overlay's own entries.
        problems = _unverified_problems({**merged, "unverified": own_unverified}, root, name)
    if problems:
        hint = ""
        if not base_files:
            hint = (
                f" (there is no shipped {own_year} profile to layer over, so the overlay must "
                "be complete or name a base with `extends: YEAR`)"
            )
        raise ProfileError(f"broken profile overlay {problems[0]}{hint}")
    return _build(merged, files=(*base_files, path), overlay=path)


def merge(base: Any, over: Any) -> Any:
    """`over` on `base`: mappings merge key by key, lists and scalars replace, null deletes."""
    if not isinstance(base, dict) or not isinstance(over, dict):
        return copy.deepcopy(over)
    out = dict(base)
    for key, value in over.items():
        if value is None:
            out.pop(key, None)
        elif key in out:
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _leaves(data: Mapping[str, Any], prefix: str = "") -> set[str]:
    """Dotted paths the overlay sets a value at (a mapping is descended into)."""
    out: set[str] = set()
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out |= _leaves(value, path + ".")
        else:
            out.add(path)
    return out


def _covered(path: str, restated: set[str]) -> bool:
    return any(path == leaf or path.startswith(leaf + ".") for leaf in restated)


def _resolve(data: Any, path: str) -> bool:
    node = data
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False
    return True


def _unverified_problems(data: dict[str, Any], root: Any, name: str) -> list[Problem]:
    """An `unverified` path that names nothing is a typo that would hide a warning."""
    out = []
    for index, item in enumerate(data.get("unverified") or []):
        path = item.get("path", "") if isinstance(item, dict) else ""
        if path and not _resolve(data, path):
            line, col = yamlio.position(root, ["unverified", index, "path"])
            out.append(
                Problem(
                    Location(name, line, col),
                    f"{path!r} names nothing in the profile",
                    f"unverified[{index}].path",
                )
            )
    return out


def _build(
    data: dict,  # type: ignore[type-arg]
    *,
    files: tuple[Path, ...] = (),
    overlay: Path | None = None,
) -> Profile:
    envs = {
        name: Environment(
            name=name,
            receiver_her_id=env["receiverHerId"],
            description=env["description"],
            production=env.get("production", False),
            sandbox=env.get("sandbox", False),
            broker_url=env.get("broker", {}).get("url"),
            namespace=env.get("broker", {}).get("namespace"),
        )
        for name, env in data["environments"].items()
    }
    return Profile(
        year=data["reportingYear"],
        register_name=data["register"]["name"],
        edi_address=data["register"].get("ediAddress"),
        contacts=tuple(Contact(c["topic"], c["address"]) for c in data["register"]["contacts"]),
        environments=envs,
        deadlines=tuple(
            Deadline(d["name"], dt.date.fromisoformat(d["date"]), d["description"])
            for d in sorted(data["deadlines"], key=lambda d: d["date"])
        ),
        message_parts=tuple(
            MessagePart(p["type"], p["description"], p["content"]) for p in data["messageParts"]
        ),
        service_codes={
            code: ServiceCode(code, item["name"], item["orgNumber"])
            for code, item in data["serviceCodes"].items()
        },
        housing_current=frozenset(data["housingCodes"]["current"]),
        housing_obsolete=frozenset(data["housingCodes"]["obsolete"]),
        welfare_technology_codes=frozenset(data["welfareTechnologyCodes"]),
        epj_minimum_versions=dict(data["epjMinimumVersions"]),
        assessment_variables=dict(data.get("assessmentVariables", {})),
        message_warn_bytes=data["messageSize"]["warnBytes"],
        message_limit_bytes=data["messageSize"]["limitBytes"],
        sources=tuple(data.get("sources", ())),
        unverified=tuple(Unverified(u["path"], u["reason"]) for u in data.get("unverified", ())),
        files=files,
        overlay=overlay,
    )
