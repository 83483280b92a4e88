"""init.questions: the answers `iplosctl init` needs, from flags or a prompt, checked at once.

Answers are checked as they are given (mod-11 org numbers, a 4-digit
kommunenummer, a year with a profile, an environment of that profile), with the
patterns and limits read from the manifest schema (`init.schema_rules`), so a typo is
re-asked at once instead of surfacing later as a validate error. Without a terminal
nothing is asked: every missing flag is named in one line.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iplosctl import output, plugins, profiles
from iplosctl.errors import PluginError, ProfileError, UsageError
from iplosctl.identifiers import is_valid_org_number
from iplosctl.init import schema_rules
from iplosctl.init.answers import CertificatePaths, InitAnswers, ServiceUnitAnswer, is_sandbox

#: Ask the user: (question, default or None) → the answer as typed ("" keeps the default).
Ask = Callable[[str, str | None], str]
#: Show one line to the user (a rejected answer, a note).
Tell = Callable[[str], None]

#: How often a wrong answer is re-asked before giving up (a script piping bad input
#: into a terminal must not loop for ever).
MAX_ATTEMPTS = 5


class _Invalid(ValueError):
    """An answer that cannot be used; the message says what a good one looks like."""


@dataclass(frozen=True)
class _Field:
    key: str
    flag: str
    #: the prompt, or a function of the answers so far (to list the choices)
    question: str | Callable[[dict[str, Any]], str]
    parse: Callable[[str, dict[str, Any]], Any]
    default: Callable[[dict[str, Any]], str | None] = lambda _: None
    applies: Callable[[dict[str, Any]], bool] = lambda _: True
    #: asked at a prompt; otherwise only a flag (and its default)
    asked: bool = True
    #: missing without a default is an error (otherwise left out of the manifest)
    required: bool = True
    #: the default comes from earlier answers: not named as missing when those are
    derived: bool = False


def _text(value: str, _: dict[str, Any]) -> str:
    if not value.strip():
        raise _Invalid("must not be empty")
    return value.strip()


def _name(value: str, _: dict[str, Any]) -> str:
    if not schema_rules.matches(schema_rules.NAME, value):
        raise _Invalid("lower-case letters, digits and '-', at most 63 characters (e.g. oslo-2023)")
    return value


def _year(value: str, _: dict[str, Any]) -> int:
    years = profiles.available_years()
    try:
        year = int(value)
    except ValueError:
        raise _Invalid(f"a year such as {years[-1]}") from None
    if year not in years:
        raise _Invalid(
            f"no reporting-year profile for {year} (profiles exist for: "
            f"{', '.join(str(y) for y in years)})"
        )
    return year


def _environment(value: str, done: dict[str, Any]) -> str:
    year = done.get("reporting_year")
    if year is None:  # the year is missing too, and reported as such
        return value
    environments = profiles.load_profile(year).environments
    if value not in environments:
        raise _Invalid(
            f"not an environment of the {year} profile (choose one of: {', '.join(environments)})"
        )
    return value


def _kommunenummer(value: str, _: dict[str, Any]) -> str:
    if not schema_rules.matches(schema_rules.MUNICIPALITY_NUMBER, value):
        raise _Invalid('a kommunenummer is exactly 4 digits (e.g. "0301")')
    return value


def _org_number(value: str, _: dict[str, Any] | None = None) -> str:
    digits = value.replace(" ", "")
    if not schema_rules.matches(schema_rules.ORG_NUMBER, digits) or not is_valid_org_number(digits):
        raise _Invalid("an organisasjonsnummer is 9 digits with a valid mod-11 check digit")
    return digits


def _her_id(value: str, _: dict[str, Any]) -> int:
    try:
        her_id = int(value)
    except ValueError:
        raise _Invalid("a HER-id is a number (see Adresseregisteret)") from None
    low, high = schema_rules.bounds(schema_rules.HER_ID)
    if not low <= her_id <= high:
        raise _Invalid(f"a HER-id is between {low} and {high}")
    return her_id


def _service_her_id(value: str, done: dict[str, Any]) -> int:
    her_id = _her_id(value, done)
    if her_id == done.get("her_id"):
        raise _Invalid("the Saksbehandling service has its own HER-id, not the municipality's")
    return her_id


def _version(value: str, _: dict[str, Any]) -> str:
    if not schema_rules.matches(schema_rules.EPJ_VERSION, value):
        raise _Invalid("a version is dotted numbers, e.g. 5.4.1")
    return value


def _source_plugin(value: str, _: dict[str, Any]) -> str:
    if not schema_rules.matches(schema_rules.SOURCE_PLUGIN, value):
        raise _Invalid("a plugin name is lower-case letters, digits, '_' or '-'")
    try:
        installed = plugins.installed("source")
    except PluginError as exc:
        raise _Invalid(exc.message) from None
    if value not in installed:
        raise _Invalid(f"no such source plugin (installed: {', '.join(installed) or 'none'})")
    return value


def _optional(value: str, _: dict[str, Any]) -> str | None:
    return value.strip() or None


def _url(value: str, _: dict[str, Any]) -> str:
    if not schema_rules.matches(schema_rules.ENDPOINT_URL, value):
        raise _Invalid("an amqps://host:port URL without user or password")
    return value


def _secret_name(value: str, _: dict[str, Any]) -> str:
    if not schema_rules.matches(schema_rules.SECRET_NAME, value):
        raise _Invalid("a secret name is letters, digits, '.', '_' or '-' (not the secret itself)")
    return value


def _certs(value: str, _: dict[str, Any]) -> CertificatePaths:
    return CertificatePaths.in_folder(_text(value, _))


def _slug(text: str) -> str:
    text = text.lower().replace("æ", "ae").replace("ø", "o").replace("å", "a")
    text = re.sub(r"\bkommune\b", "", text)
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")


def _default_name(done: dict[str, Any]) -> str | None:
    if "municipality_name" not in done or "reporting_year" not in done:
        return None
    candidate = f"{_slug(done['municipality_name'])}-{done['reporting_year']}"[:63]
    return candidate if schema_rules.matches(schema_rules.NAME, candidate) else None


def _broker(done: dict[str, Any], attribute: str) -> str | None:
    try:
        env = profiles.load_profile(done["reporting_year"]).environments[done["environment"]]
    except (KeyError, ProfileError):
        return None
    value: str | None = getattr(env, attribute)
    return value


def _not_sandbox(done: dict[str, Any]) -> bool:
    if "reporting_year" not in done or "environment" not in done:
        return False
    return not is_sandbox(done["reporting_year"], done["environment"])


def _environment_question(done: dict[str, Any]) -> str:
    try:
        choices = ", ".join(profiles.load_profile(done["reporting_year"]).environments)
    except (KeyError, ProfileError):
        return "Environment"
    return f"Environment ({choices}; sandbox sends nothing)"


def _newest_year(_: dict[str, Any]) -> str:
    return str(profiles.available_years()[-1])


_FIELDS: tuple[_Field, ...] = (
    _Field("municipality_name", "--municipality-name", "Municipality name", _text),
    _Field(
        "municipality_number", "--municipality-number", "Kommunenummer (4 digits)", _kommunenummer
    ),
    _Field("org_number", "--org-number", "The municipality's organisasjonsnummer", _org_number),
    _Field("reporting_year", "--year", "Reporting year", _year, _newest_year),
    _Field(
        "environment",
        "--environment",
        _environment_question,
        _environment,
        lambda _: "sandbox",
    ),
    _Field("name", "--name", "Submission name", _name, _default_name, derived=True),
    _Field("her_id", "--her-id", "The municipality's HER-id", _her_id),
    _Field(
        "service_her_id",
        "--service-her-id",
        'HER-id of its "Saksbehandling" service (receives the receipts)',
        _service_her_id,
    ),
    _Field("epj_system", "--epj-system", "EPJ system (as in the export header)", _text),
    _Field("epj_version", "--epj-version", "EPJ version", _version),
    # service_units are collected by _collect_units, between these two
    _Field("source_path", "--source", "Path of the EPJ export", _text),
    _Field("source_plugin", "--source-plugin", "Source plugin", _source_plugin, lambda _: "xml"),
    _Field(
        "source_format",
        "--source-format",
        "Export format profile",
        _optional,
        lambda done: "iplos-export-v1" if done.get("source_plugin") == "xml" else None,
        asked=False,
        required=False,
    ),
    _Field(
        "endpoint_url",
        "--endpoint-url",
        "Broker URL",
        _url,
        lambda done: _broker(done, "broker_url"),
        _not_sandbox,
    ),
    _Field(
        "namespace",
        "--namespace",
        "NHN namespace",
        _optional,
        lambda done: _broker(done, "namespace"),
        _not_sandbox,
        required=False,
    ),
    _Field("username", "--username", "Broker user name (from NHN)", _text, applies=_not_sandbox),
    _Field(
        "credential",
        "--credential",
        "Name of the secret holding the broker password",
        _secret_name,
        lambda done: f"{done['name']}-amqp" if "name" in done else None,
        _not_sandbox,
        derived=True,
    ),
    _Field(
        "certificates",
        "--certs",
        "Folder with the certificates (municipality-signing.pem, …)",
        _certs,
        applies=_not_sandbox,
    ),
    _Field("owner", "--owner", "Owner", _optional, asked=False, required=False),
)
_UNITS_FLAG = "--service-unit"


def _unit(value: str, seen: Sequence[ServiceUnitAnswer]) -> ServiceUnitAnswer:
    org, sep, name = value.partition("=")
    if not sep or not name.strip():
        raise _Invalid("give ORGNUMBER=Name, e.g. 310000078=Hjemmetjenesten")
    org_number = _org_number(org.strip())
    if any(u.org_number == org_number for u in seen):
        raise _Invalid(f"org number {org_number} is already listed")
    return ServiceUnitAnswer(org_number, name.strip())


def answers_from_values(values: Mapping[str, Any]) -> InitAnswers:
    """Answers from flags only (no terminal): every missing flag is named in one error.

    `values` maps InitAnswers field names to the strings given (None when not
    given); `service_units` is a list of `ORGNUMBER=Name` strings.
    """
    return _collect(values, ask=None, tell=output.note)


def prompt_answers(
    ask: Ask, *, given: Mapping[str, Any] | None = None, tell: Tell = output.error
) -> InitAnswers:
    """Ask for every answer not in `given`, checking each one and re-asking a wrong one.

    `ask(question, default)` returns what the user typed; an empty answer takes
    the default. A given value that is wrong is reported and asked for again.
    """
    return _collect(given or {}, ask=ask, tell=tell)


def _collect(values: Mapping[str, Any], *, ask: Ask | None, tell: Tell) -> InitAnswers:
    done: dict[str, Any] = {}
    missing: list[str] = []
    for field in _FIELDS:
        if field.key == "source_path":
            _collect_units(values, ask, tell, done, missing)
        if not field.applies(done):
            continue
        raw = values.get(field.key)
        if raw is not None:
            try:
                done[field.key] = field.parse(str(raw), done)
                continue
            except _Invalid as exc:
                if ask is None:
                    raise UsageError(f"{field.flag} {raw!r}: {exc}") from None
                tell(f"{field.flag}: {exc}")
        default = field.default(done)
        if ask is None or not field.asked:
            if default is not None:
                done[field.key] = field.parse(default, done)
            elif field.required and not (field.derived and missing):
                missing.append(field.flag)
            else:
                done[field.key] = None
            continue
        question = field.question if isinstance(field.question, str) else field.question(done)
        done[field.key] = _ask_until_valid(ask, tell, question, default, _parser(field, done))
        _note_missing_files(field.key, done[field.key], tell)
    if missing:
        raise UsageError(
            f"missing {', '.join(missing)}: give them as flags, or run `iplosctl init` "
            "on a terminal to be asked"
        )
    done["service_units"] = tuple(done["service_units"])
    return InitAnswers(**done)


def _parser(field: _Field, done: dict[str, Any]) -> Callable[[str], Any]:
    """`field`'s check against the answers so far, as `_ask_until_valid` calls it."""
    return lambda value: field.parse(value, done)


def _collect_units(
    values: Mapping[str, Any],
    ask: Ask | None,
    tell: Tell,
    done: dict[str, Any],
    missing: list[str],
) -> None:
    units: list[ServiceUnitAnswer] = []
    for raw in values.get("service_units") or ():
        try:
            units.append(_unit(str(raw), units))
        except _Invalid as exc:
            if ask is None:
                raise UsageError(f"{_UNITS_FLAG} {raw!r}: {exc}") from None
            tell(f"{_UNITS_FLAG}: {exc}")
    if ask is not None and not units:
        while True:
            number = len(units) + 1
            question = f"Service unit {number} as ORGNUMBER=Name"
            if units:
                question += " (empty when done)"
            answer = _ask_until_valid(
                ask, tell, question, None, lambda v: _unit(v, units) if v or not units else None
            )
            if answer is None:
                break
            units.append(answer)
    elif not units:
        missing.append(_UNITS_FLAG)
    done["service_units"] = units


def _ask_until_valid(
    ask: Ask, tell: Tell, question: str, default: str | None, parse: Callable[[str], Any]
) -> Any:
    for _ in range(MAX_ATTEMPTS):
        answer = ask(question, default).strip()
        if not answer and default is not None:
            answer = default
        try:
            return parse(answer)
        except _Invalid as exc:
            tell(f"  {exc}" if answer else "  an answer is needed")
    raise UsageError(f"no valid answer to {question!r} after {MAX_ATTEMPTS} tries")


def _note_missing_files(key: str, value: Any, tell: Tell) -> None:
    """Files may legitimately come later (certificates from NHN); say so, do not refuse."""
    if key == "source_path" and not Path(value).is_file():
        tell(f"  note: {value} does not exist yet; validate will insist on it")
    if isinstance(value, CertificatePaths):
        absent = [p for p in value.paths() if not Path(p).is_file()]
        if absent:
            tell(f"  note: {len(absent)} certificate file(s) not there yet, e.g. {absent[0]}")
