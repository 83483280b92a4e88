"""Reporting-year profiles: the register's facts for one year, shipped as data.

A new reporting year is a new YAML file here, validated against
`profile.schema.json` when loaded; no code changes. The files cite their
sources (the KPR letter, Helsedirektoratet's pages via DOMAIN.md).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from iplosctl import yamlio
from iplosctl.errors import InputError, ProfileError
from iplosctl.validation import schema_problems

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
    """The validated profile for `year`, or ProfileError naming the years that exist."""
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
    if problems:
        raise ProfileError(f"broken profile {path.name}: {problems[0]}")
    return _build(plain)


def _build(data: dict) -> Profile:  # type: ignore[type-arg]
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
    )
