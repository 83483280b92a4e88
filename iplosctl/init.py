"""`iplosctl init`: write a first, commented manifest from flags or answers at a prompt.

A municipality's IT person starts from a blank repository (issue 6). The file
they get must pass `iplosctl validate` once the export and certificates are in
place, and must explain itself: every key carries the comment a reviewer
needs, like `examples/fjordvik/manifests/fjordvik-2023.yaml`. It is built as a
ruamel round-trip document and written through `iplosctl.yamlio`, so the
comments are ordinary YAML comments that survive later round-trip edits.

Answers are checked as they are given (mod-11 org numbers, a 4-digit
kommunenummer, a year with a profile, an environment of that profile), so a
typo is re-asked at once instead of surfacing later as a validate error.
Without a terminal nothing is asked: every missing flag is named in one line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.scalarstring import DoubleQuotedScalarString

from iplosctl import output, plugins, profiles, yamlio
from iplosctl.atomic import write_atomic
from iplosctl.errors import IplosctlError, PluginError, ProfileError, UsageError
from iplosctl.identifiers import is_valid_org_number
from iplosctl.manifest.loader import SCHEMA_PATH

#: Ask the user: (question, default or None) → the answer as typed ("" keeps the default).
Ask = Callable[[str, str | None], str]
#: Show one line to the user (a rejected answer, a note).
Tell = Callable[[str], None]

#: How often a wrong answer is re-asked before giving up (a script piping bad input
#: into a terminal must not loop for ever).
MAX_ATTEMPTS = 5

# The same patterns as manifest.schema.json, so a prompt never accepts what validate refuses.
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_VERSION = re.compile(r"^[0-9]+(\.[0-9]+)*([-+.][0-9A-Za-z.-]+)?$")
_PLUGIN = re.compile(r"^[a-z][a-z0-9_-]*$")
_SECRET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_AMQP_URL = re.compile(r"^(amqps?://[^/@\s]+(:[0-9]+)?/?|[^:]+)$")
_COMMENT_COLUMN = 32


@dataclass(frozen=True)
class ServiceUnitAnswer:
    """One unit allowed as the executing unit on services."""

    org_number: str
    name: str


@dataclass(frozen=True)
class CertificatePaths:
    """The seven certificate files of a non-sandbox manifest, relative to the current folder."""

    signing_certificate: str
    signing_key: str
    encryption_certificate: str
    encryption_key: str
    register_signing: str
    register_encryption: str
    trust_anchors: str | None = None

    @classmethod
    def in_folder(cls, folder: str | Path) -> CertificatePaths:
        """The file names `iplosctl sandbox pki` writes and examples/fjordvik/certs uses."""
        base = Path(folder)
        return cls(
            signing_certificate=str(base / "municipality-signing.pem"),
            signing_key=str(base / "municipality-signing.key"),
            encryption_certificate=str(base / "municipality-encryption.pem"),
            encryption_key=str(base / "municipality-encryption.key"),
            register_signing=str(base / "register-signing.pem"),
            register_encryption=str(base / "register-encryption.pem"),
            trust_anchors=str(base / "ca.pem"),
        )

    def paths(self) -> list[str]:
        return [p for p in (getattr(self, f.name) for f in fields(self)) if p is not None]


@dataclass(frozen=True)
class InitAnswers:
    """Everything `init` needs; file paths are relative to the current folder, as typed.

    `endpoint_*`, `username`, `credential` and `certificates` are ignored in a
    sandbox environment (the built-in register needs none of them).
    """

    name: str
    reporting_year: int
    environment: str
    municipality_number: str
    municipality_name: str
    org_number: str
    her_id: int
    service_her_id: int
    epj_system: str
    epj_version: str
    service_units: tuple[ServiceUnitAnswer, ...]
    source_path: str
    source_plugin: str = "xml"
    source_format: str | None = "iplos-export-v1"
    endpoint_url: str | None = None
    namespace: str | None = None
    username: str | None = None
    credential: str | None = None
    certificates: CertificatePaths | None = None
    owner: str | None = None
    test_person_names: tuple[str, ...] = ("Donald Duck",)
    #: `$schema` reference for editors; a path to the installed schema when None
    schema: str | None = None

    @property
    def sandbox(self) -> bool:
        return _is_sandbox(self.reporting_year, self.environment)


def _is_sandbox(year: int, environment: str) -> bool:
    try:
        env = profiles.load_profile(year).environments.get(environment)
    except ProfileError:
        return environment == "sandbox"
    return env.sandbox if env is not None else environment == "sandbox"


# ---------------------------------------------------------------- rendering


def schema_reference(out: Path | None = None) -> str:
    """Where editors find the installed schema, as seen from the manifest's folder.

    Relative when manifest and package share a folder below the filesystem root
    (a repository with its own .venv, or this repository); a file URI otherwise,
    since `../../../usr/lib/…` breaks as soon as the repository moves.
    """
    base = (out.parent if out is not None else Path.cwd()).resolve()
    schema = SCHEMA_PATH.resolve()
    try:
        common = Path(os.path.commonpath([schema, base]))
        relative = os.path.relpath(schema, base)
    except ValueError:  # another drive on Windows
        return schema.as_uri()
    if common == Path(common.anchor):
        return schema.as_uri()
    return Path(relative).as_posix()


def render_manifest(answers: InitAnswers, *, out: Path | None = None) -> str:
    """The manifest as commented YAML.

    With `out`, file paths in the answers (relative to the current folder) are
    rewritten relative to the manifest's folder, as the manifest format wants,
    and the `$schema` line points at the installed schema from there.
    """

    def path(value: str) -> str:
        if out is None or Path(value).is_absolute():
            return Path(value).as_posix()
        return Path(os.path.relpath(os.path.abspath(value), os.path.abspath(out.parent))).as_posix()

    schema = answers.schema or schema_reference(out)
    root = CommentedMap()
    root.yaml_set_start_comment(
        f"yaml-language-server: $schema={schema}\n"
        "\n"
        f"{answers.municipality_name} reports its IPLOS data for {answers.reporting_year} to KPR\n"
        f"({answers.environment} environment). Written by `iplosctl init`; edit freely, then run\n"
        "`iplosctl validate` and `iplosctl plan`. Keys and values: `iplosctl schema`."
    )
    root["apiVersion"] = "iplosctl/v1"
    root["kind"] = "Submission"

    metadata = CommentedMap()
    metadata["name"] = answers.name
    metadata.yaml_set_comment_before_after_key(
        "name",
        before=f"Unique in the repository; names the lockfile ({answers.name}.lock.yaml) "
        "beside this file.\nKeep it stable once something has been sent.",
        indent=2,
    )
    metadata["description"] = (
        f"{answers.municipality_name}, IPLOS {answers.reporting_year} ({answers.environment})"
    )
    if answers.owner:
        metadata["owner"] = answers.owner
        metadata.yaml_add_eol_comment("answers for this submission", "owner", _COMMENT_COLUMN)
    root["metadata"] = metadata

    spec = CommentedMap()
    root["spec"] = spec
    spec["reportingYear"] = answers.reporting_year
    spec.yaml_set_comment_before_after_key(
        "reportingYear",
        before="The year the data describe; selects the reporting-year profile "
        "(deadlines, HER-ids, codes).",
        indent=2,
    )
    spec["environment"] = answers.environment
    spec.yaml_set_comment_before_after_key(
        "environment",
        before=_environment_comment(answers),
        indent=2,
    )

    municipality = CommentedMap()
    municipality["number"] = DoubleQuotedScalarString(answers.municipality_number)
    municipality["name"] = answers.municipality_name
    municipality["orgNumber"] = DoubleQuotedScalarString(answers.org_number)
    municipality.yaml_add_eol_comment("kommunenummer, 4 digits, quoted", "number", _COMMENT_COLUMN)
    municipality.yaml_add_eol_comment(
        "organisasjonsnummer, checked with mod 11", "orgNumber", _COMMENT_COLUMN
    )
    spec["municipality"] = municipality

    sender = CommentedMap()
    sender["herId"] = answers.her_id
    sender["serviceHerId"] = answers.service_her_id
    sender.yaml_add_eol_comment(
        "the municipality's HER-id in Adresseregisteret", "herId", _COMMENT_COLUMN
    )
    sender.yaml_add_eol_comment(
        'its "Saksbehandling" service: receipts arrive on its queues',
        "serviceHerId",
        _COMMENT_COLUMN,
    )
    spec["sender"] = sender

    epj = CommentedMap()
    epj["system"] = answers.epj_system
    epj["version"] = answers.epj_version
    epj.yaml_add_eol_comment("as the EPJ writes it in the export header", "system", _COMMENT_COLUMN)
    epj.yaml_add_eol_comment(
        "checked against the export and the year's minimum", "version", _COMMENT_COLUMN
    )
    spec["epj"] = epj

    units = CommentedSeq()
    for unit in answers.service_units:
        item = CommentedMap()
        item["orgNumber"] = DoubleQuotedScalarString(unit.org_number)
        item["name"] = unit.name
        item.fa.set_flow_style()
        units.append(item)
    spec["serviceUnits"] = units
    spec.yaml_set_comment_before_after_key(
        "serviceUnits",
        before="Units allowed as the executing unit on services (the only org numbers "
        "a service may carry).",
        indent=2,
    )

    source = CommentedMap()
    source["plugin"] = answers.source_plugin
    source["path"] = path(answers.source_path)
    if answers.source_format:
        source["format"] = answers.source_format
    source.yaml_add_eol_comment("see `iplosctl plugins`", "plugin", _COMMENT_COLUMN)
    source.yaml_add_eol_comment(
        "the EPJ export: personal data, never commit it", "path", _COMMENT_COLUMN
    )
    if not answers.sandbox and answers.source_format == "iplos-export-v1":
        # plan blocks iplosctl's own format outside the sandbox (rule payload-format)
        source.yaml_add_eol_comment(
            "iplosctl's own: blocked here, see README 'Sending the register's own file'",
            "format",
            _COMMENT_COLUMN,
        )
    spec["source"] = source
    spec.yaml_set_comment_before_after_key(
        "source", before="Where the EPJ export is read from.", indent=2
    )

    names = CommentedSeq(DoubleQuotedScalarString(n) for n in answers.test_person_names)
    names.fa.set_flow_style()
    test_persons = CommentedMap()
    test_persons["names"] = names
    spec["testPersons"] = test_persons
    spec.yaml_set_comment_before_after_key(
        "testPersons",
        before='The EPJ\'s test users ("Donald Duck") never go to the register; add yours.',
        indent=2,
    )

    if not answers.sandbox:
        spec["endpoint"] = _endpoint(answers)
        spec.yaml_set_comment_before_after_key(
            "endpoint", before="How messages travel to the register (NHN's AMQP broker).", indent=2
        )
        if answers.certificates is not None:
            spec["certificates"] = _certificates(answers.certificates, path)
            spec.yaml_set_comment_before_after_key(
                "certificates",
                before="CMS sign-then-encrypt: the municipality's own pairs, the register's "
                "public certificates.",
                indent=2,
            )
    return yamlio.dumps(root)


def _environment_comment(answers: InitAnswers) -> str:
    try:
        names = " | ".join(profiles.load_profile(answers.reporting_year).environments)
    except ProfileError:
        names = "production | qa | test | sandbox"
    text = f"{names}. "
    if answers.sandbox:
        return (
            text + "sandbox = the built-in register simulator: nothing leaves this machine,\n"
            "and no endpoint or certificates are needed. Add both when you move to test."
        )
    return text + "Rehearse in sandbox first; test is KPR's communication test."


def _endpoint(answers: InitAnswers) -> CommentedMap:
    endpoint = CommentedMap()
    endpoint["transport"] = "amqp"
    if answers.endpoint_url:
        endpoint["url"] = answers.endpoint_url
        endpoint.yaml_add_eol_comment("never a user or password in the URL", "url", 40)
    if answers.namespace:
        endpoint["namespace"] = answers.namespace
        endpoint.yaml_add_eol_comment("case-sensitive; confirm with NHN", "namespace", 40)
    if answers.username:
        endpoint["username"] = answers.username
    if answers.credential:
        variable = "IPLOSCTL_SECRET_" + re.sub(r"[^A-Z0-9]", "_", answers.credential.upper())
        endpoint["credential"] = answers.credential
        endpoint.yaml_set_comment_before_after_key(
            "credential",
            before=f"A secret's name, not the secret: `iplosctl secrets set {answers.credential}`,"
            f"\nor {variable} in CI.",
            indent=4,
        )
    return endpoint


def _certificates(certs: CertificatePaths, path: Callable[[str], str]) -> CommentedMap:
    def pair(certificate: str, key: str) -> CommentedMap:
        out = CommentedMap()
        out["certificate"] = path(certificate)
        out["key"] = path(key)
        return out

    result = CommentedMap()
    result["signing"] = pair(certs.signing_certificate, certs.signing_key)
    result["encryption"] = pair(certs.encryption_certificate, certs.encryption_key)
    register = CommentedMap()
    register["signing"] = path(certs.register_signing)
    register["encryption"] = path(certs.register_encryption)
    if certs.trust_anchors:
        register["trustAnchors"] = path(certs.trust_anchors)
    result["register"] = register
    result.yaml_add_eol_comment("KPR's certificates from Adresseregisteret", "register", 36)
    return result


def default_out(answers: InitAnswers) -> Path:
    """`manifests/<name>.yaml`: where `iplosctl validate` looks by default."""
    return Path("manifests") / f"{answers.name}.yaml"


def refuse_existing(out: Path, *, force: bool) -> None:
    """Raise before anything is asked or written: a manifest may hold weeks of review."""
    if out.exists() and not force:
        raise IplosctlError(f"{out} exists: refusing to overwrite it (use --force to replace it)")


def write_manifest(answers: InitAnswers, out: Path, *, force: bool = False) -> Path:
    """Render and write the manifest atomically; an existing file needs `force`."""
    refuse_existing(out, force=force)
    text = render_manifest(answers, out=out)
    # all or nothing: ^C never leaves half a manifest for validate to trip over
    write_atomic(out, text.encode("utf-8"))
    return out


# ---------------------------------------------------------------- answers


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
    if not _NAME.match(value):
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
    if not re.fullmatch(r"[0-9]{4}", value):
        raise _Invalid('a kommunenummer is exactly 4 digits (e.g. "0301")')
    return value


def _org_number(value: str, _: dict[str, Any] | None = None) -> str:
    digits = value.replace(" ", "")
    if not is_valid_org_number(digits):
        raise _Invalid("an organisasjonsnummer is 9 digits with a valid mod-11 check digit")
    return digits


def _her_id(value: str, _: dict[str, Any]) -> int:
    try:
        her_id = int(value)
    except ValueError:
        raise _Invalid("a HER-id is a number (see Adresseregisteret)") from None
    if not 1 <= her_id <= 999_999_999:
        raise _Invalid("a HER-id is between 1 and 999999999")
    return her_id


def _service_her_id(value: str, done: dict[str, Any]) -> int:
    her_id = _her_id(value, done)
    if her_id == done.get("her_id"):
        raise _Invalid("the Saksbehandling service has its own HER-id, not the municipality's")
    return her_id


def _version(value: str, _: dict[str, Any]) -> str:
    if not _VERSION.match(value):
        raise _Invalid("a version is dotted numbers, e.g. 5.4.1")
    return value


def _source_plugin(value: str, _: dict[str, Any]) -> str:
    if not _PLUGIN.match(value):
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
    if not _AMQP_URL.match(value):
        raise _Invalid("an amqps://host:port URL without user or password")
    return value


def _secret_name(value: str, _: dict[str, Any]) -> str:
    if not _SECRET.match(value):
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
    return candidate if _NAME.match(candidate) else None


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
    return not _is_sandbox(done["reporting_year"], done["environment"])


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
        done[field.key] = _ask_until_valid(
            ask, tell, question, default, lambda v, f=field: f.parse(v, done)
        )
        _note_missing_files(field.key, done[field.key], tell)
    if missing:
        raise UsageError(
            f"missing {', '.join(missing)}: give them as flags, or run `iplosctl init` "
            "on a terminal to be asked"
        )
    done["service_units"] = tuple(done["service_units"])
    return InitAnswers(**done)


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
