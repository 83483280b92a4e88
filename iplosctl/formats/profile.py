"""Format profiles: an export format's XSD and its mapping onto the record model, as data.

A profile (`<name>.yaml` beside its XSD in this folder) maps each record field
to an XPath relative to the element it lives in (header, recipient, service,
assessment, diagnosis), so another EPJ format is another file rather than
another reader. Loading validates the file against
`format-profile.schema.json`, resolves prefixes and compiles every XPath once
(`smart_strings=False`: results are plain strings, not proxies that keep the
tree alive). An expression that is a single child step (`x:LocalId`) or
attribute (`@code`) is also recorded as a Clark name, so the reader can walk an
element's children once instead of running one query per field.

The target types are fixed by `iplosctl.records`, not by the profile: a profile
says where a value is and how its text is written (a `Conversion`: date
patterns, a time zone for zone-less times, a decimal comma, yes/no words, a
code map), never what it is. A field is either an XPath string or a mapping
`{path: XPath, ...conversion...}`; the conversion is checked here (patterns
round-trip, the zone exists, each option fits the field's kind) so a profile
that loads can only fail on the export's values, never on itself.

Services, assessments and diagnoses are either found inside each recipient
(`element` relative to it) or, with `join`, are sibling lists anywhere outside
the recipients, each item naming its recipient by a key (see the xml source
plugin for how they are streamed and what that holds in memory).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import os
import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lxml import etree

from iplosctl import plugins, yamlio
from iplosctl.errors import InputError, ProfileError
from iplosctl.formats import FORMATS_DIR, is_format_path
from iplosctl.plugins import PayloadSpec
from iplosctl.validation import schema_problems

DEFAULT_FORMAT = "iplos-export-v1"
#: the zone of a zone-less date and time read through a conversion (Norwegian EPJs)
DEFAULT_TIMEZONE = "Europe/Oslo"
ValueKind = Literal["string", "integer", "decimal", "date", "datetime", "boolean", "year"]

#: profile key → (record attribute, value kind), per mapped element
HEADER_FIELDS: dict[str, tuple[str, ValueKind]] = {
    "municipality": ("municipality", "string"),
    "reportingYear": ("reporting_year", "year"),
    "epjSystem": ("epj_system", "string"),
    "epjVersion": ("epj_version", "string"),
    "extractedAt": ("extracted_at", "datetime"),
}
RECIPIENT_FIELDS: dict[str, tuple[str, ValueKind]] = {
    "localId": ("local_id", "string"),
    "personId": ("person_id", "string"),
    "name": ("name", "string"),
    "district": ("district", "string"),
    "housing": ("housing", "string"),
    "rehabilitation": ("rehabilitation", "boolean"),
}
SERVICE_FIELDS: dict[str, tuple[str, ValueKind]] = {
    "code": ("code", "string"),
    "from": ("start", "date"),
    "to": ("end", "date"),
    "hoursPerWeek": ("hours_per_week", "decimal"),
    "decisionDate": ("decision_date", "date"),
    "orgNumber": ("org_number", "string"),
}
ASSESSMENT_FIELDS: dict[str, tuple[str, ValueKind]] = {
    "variable": ("variable", "string"),
    "score": ("score", "integer"),
    "date": ("date", "date"),
}
DIAGNOSIS_FIELDS: dict[str, tuple[str, ValueKind]] = {"code": ("code", "string")}

_NAME = r"[A-Za-z_][\w.-]*"
_CHILD_STEP = re.compile(rf"(?:(?P<prefix>{_NAME}):)?(?P<local>{_NAME})")
_ATTRIBUTE_STEP = re.compile(rf"@(?P<local>{_NAME})")


@dataclass(frozen=True)
class Conversion:
    """How a field's text is written in the export, when it is not the XSD lexical form.

    Applied in this order: `trim`, `empty_is_missing`, `value_map` (vendor code
    → KPR code; a value it does not list is an error), then the kind's parse:
    `patterns` (strptime, first match wins) for dates and datetimes, with
    `timezone` for a datetime without a zone (stored as UTC), the
    `decimal_separator` for decimals, `true_values`/`false_values` for booleans.
    """

    patterns: tuple[str, ...] = ()
    timezone: str = DEFAULT_TIMEZONE
    decimal_separator: str = "."
    true_values: frozenset[str] = frozenset()
    false_values: frozenset[str] = frozenset()
    empty_is_missing: bool = False
    trim: bool = False
    value_map: Mapping[str, str] | None = None


@dataclass(frozen=True)
class FieldMap:
    """One record field and where the profile says it is.

    Exactly one of `child` (Clark name of a child element), `attribute` (an
    unqualified attribute name) and `xpath` (anything else, compiled) is set.
    `optional` fields may be absent in every record without a plan finding.
    """

    key: str
    target: str
    kind: ValueKind
    expression: str
    child: str | None = None
    attribute: str | None = None
    xpath: etree.XPath | None = None
    convert: Conversion | None = None
    optional: bool = False


@dataclass(frozen=True)
class Join:
    """Items kept beside the recipients: `key` on the item equals the recipient's `references`."""

    key: FieldMap
    references: str  # the recipient field's profile key, e.g. localId
    target: str  # its record attribute, e.g. local_id


@dataclass(frozen=True)
class ElementMap:
    """An element of the export (by Clark `tag`, or by compiled `xpath`) and its fields.

    With `join`, the element is one name (`tag`) found anywhere outside the
    recipients. `optional` item kinds may match nothing without a plan finding.
    """

    key: str
    expression: str
    fields: tuple[FieldMap, ...]
    tag: str | None = None
    xpath: etree.XPath | None = None
    join: Join | None = None
    optional: bool = False


@dataclass(frozen=True)
class FormatProfile:
    """A loaded, compiled format profile."""

    name: str
    path: Path
    description: str
    schema_path: Path
    namespaces: Mapping[str, str]
    root: str
    max_depth: int
    header: ElementMap
    recipient: ElementMap
    services: ElementMap
    assessments: ElementMap | None
    diagnoses: ElementMap | None
    #: what apply sends for an export of this format (`payload` in the profile)
    payload: PayloadSpec = field(default_factory=PayloadSpec)

    def xml_schema(self) -> etree.XMLSchema:
        """The format's XSD, compiled once per process (again when the file changes)."""
        try:
            st = self.schema_path.stat()
        except OSError as exc:
            raise ProfileError(
                f"broken format schema {self.schema_path.name}: cannot read ({exc.strerror})"
            ) from None
        return _xml_schema(self.schema_path, (st.st_mtime_ns, st.st_size))

    @property
    def files(self) -> tuple[Path, ...]:
        """The files that decide how an export is read: the profile YAML and its XSD."""
        return (self.path, self.schema_path)

    def items(self) -> tuple[tuple[str, ElementMap], ...]:
        """(record kind, map) of each item kind the profile reads: service, assessment..."""
        found = (
            ("service", self.services),
            ("assessment", self.assessments),
            ("diagnosis", self.diagnoses),
        )
        return tuple((kind, emap) for kind, emap in found if emap is not None)

    @property
    def joined(self) -> bool:
        """Whether any item kind is a sibling list joined to recipients by a key."""
        return any(emap.join is not None for _kind, emap in self.items())


def local_name(clark: str) -> str:
    """`Recipient` from `{urn:…}Recipient`, for messages."""
    return clark.rsplit("}", 1)[-1]


def available_formats() -> list[str]:
    """Names of the format profiles shipped in iplosctl/formats, sorted."""
    return sorted(p.stem for p in FORMATS_DIR.glob("*.yaml"))


def load_format(name: str | None = None) -> FormatProfile:
    """The format profile `name` (default iplos-export-v1), or ProfileError listing the known ones.

    `name` is a shipped name, a name a plugin provides through the
    `iplosctl.formats` entry-point group (a shipped name wins), or a path to a
    format-profile YAML (the manifest loader makes a manifest's relative path
    absolute).
    """
    name = name or DEFAULT_FORMAT
    if is_format_path(name):
        path = Path(name)
        if not path.is_file():
            state = "is a folder" if path.is_dir() else "not found"
            raise ProfileError(f"no export format profile at {path} ({state})")
        return load_format_file(path)
    shipped = FORMATS_DIR / f"{name}.yaml"
    if re.fullmatch(r"[a-z0-9][a-z0-9.-]*", name) and shipped.is_file():
        return load_format_file(shipped)
    provided = plugins.installed("format")
    if name in provided:
        return load_format_file(_plugin_format_path(name))
    known = ", ".join(sorted({*available_formats(), *provided})) or "none"
    raise ProfileError(f"no export format profile named {name!r} (formats: {known})")


def _plugin_format_path(name: str) -> Path:
    """The YAML an `iplosctl.formats` entry point names: a path, or a callable giving one."""
    info = plugins.installed("format")[name]
    target = plugins.load("format", name)
    try:
        value = target() if callable(target) else target
    except Exception as exc:  # a broken third-party plugin must not look like our bug
        raise ProfileError(
            f"format {name!r} of {info.distribution} {info.version} ({info.target}) failed: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(value, str | os.PathLike):
        raise ProfileError(
            f"format {name!r} of {info.distribution} {info.version} ({info.target}) gave "
            f"{type(value).__name__}, not the path of a format-profile YAML"
        )
    path = Path(value)
    if not path.is_file():
        raise ProfileError(
            f"format {name!r} of {info.distribution} {info.version}: {path} not found"
        )
    return path


def load_format_file(path: Path) -> FormatProfile:
    """Load, validate and compile the profile at `path` (its XSD must sit beside it).

    Compiled once per content: an edited profile is compiled again, the same
    bytes give the same object.
    """
    path = Path(path)
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise ProfileError(f"format profile {path}: cannot read ({exc.strerror})") from None
    return _load_format_file(path, hashlib.sha256(content).hexdigest())


@functools.cache
def _load_format_file(path: Path, _digest: str) -> FormatProfile:
    try:
        root = yamlio.load(path, what="format profile")
    except InputError as exc:
        raise ProfileError(f"broken format profile {path.name}: {exc.lines()[0]}") from None
    data = yamlio.to_plain(root)
    problems = schema_problems(_profile_schema(), data, root, str(path))
    if problems:
        raise ProfileError(f"broken format profile {path.name}: {problems[0]}")
    if data["name"] != path.stem:
        raise ProfileError(
            f"broken format profile {path.name}: name {data['name']!r} must match the file name"
        )
    return _Compiler(path, data).profile()


@functools.cache
def _profile_schema() -> dict[str, Any]:
    with (FORMATS_DIR / "format-profile.schema.json").open(encoding="utf-8") as fh:
        schema: dict[str, Any] = json.load(fh)
    return schema


@functools.cache
def _xml_schema(path: Path, _stamp: tuple[int, int] = (0, 0)) -> etree.XMLSchema:
    # The XSD is ours, but it is parsed with the same care as an export: no network,
    # no DTD, no entities.
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    try:
        return etree.XMLSchema(etree.parse(str(path), parser))
    except (OSError, etree.XMLSyntaxError, etree.XMLSchemaParseError) as exc:
        raise ProfileError(f"broken format schema {path.name}: {exc}") from None


class _Compiler:
    """Turns the validated YAML into a FormatProfile, naming the key of any bad XPath."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data
        self.ns: dict[str, str] = dict(data["namespaces"])

    def profile(self) -> FormatProfile:
        data = self.data
        schema_path = self.path.parent / data["schema"]
        if not schema_path.is_file():
            raise self._error("schema", f"{data['schema']} not found beside the profile")
        recipient = data["recipient"]
        profile_recipient = self._element("recipient", recipient, RECIPIENT_FIELDS, top=True)
        self.recipient_fields = {f.key: f for f in profile_recipient.fields}
        return FormatProfile(
            name=data["name"],
            path=self.path,
            description=data.get("description", ""),
            schema_path=schema_path,
            namespaces=self.ns,
            root=self._clark("root", data["root"]),
            max_depth=data["maxDepth"],
            header=self._element("header", data["header"], HEADER_FIELDS, top=True),
            recipient=profile_recipient,
            services=self._element("recipient.services", recipient["services"], SERVICE_FIELDS),
            assessments=self._optional("assessments", ASSESSMENT_FIELDS),
            diagnoses=self._optional("diagnoses", DIAGNOSIS_FIELDS),
            payload=self._payload(schema_path),
        )

    def _payload(self, schema_path: Path) -> PayloadSpec:
        item = self.data.get("payload")
        if item is None:
            return PayloadSpec(schema=schema_path, origin=self.path.name)
        parts = tuple(item.get("parts", {}).items())
        exports = [t for t, where in parts if where == "export"]
        if item["mode"] == "passthrough" and len(exports) != 1:
            raise self._error(
                "payload.parts",
                f"exactly one part must be 'export' (the file this profile reads), "
                f"found {len(exports)}",
            )
        return PayloadSpec(item["mode"], parts, schema_path, self.path.name)

    def _optional(self, key: str, known: dict[str, tuple[str, ValueKind]]) -> ElementMap | None:
        item = self.data["recipient"].get(key)
        return None if item is None else self._element(f"recipient.{key}", item, known)

    def _element(
        self,
        key: str,
        item: dict[str, Any],
        known: dict[str, tuple[str, ValueKind]],
        *,
        top: bool = False,
    ) -> ElementMap:
        expression = item["element"]
        fields = tuple(
            self._field(f"{key}.fields.{name}", name, spec, *known[name])
            for name, spec in item["fields"].items()
        )
        optional = bool(item.get("optional", False))
        join = self._join(key, item["join"]) if "join" in item else None
        if top or join is not None or _CHILD_STEP.fullmatch(expression):
            # Header, recipient and joined items are streamed by tag: one step only.
            tag = self._clark(f"{key}.element", expression)
            return ElementMap(key, expression, fields, tag=tag, join=join, optional=optional)
        xpath = self._xpath(f"{key}.element", expression)
        return ElementMap(key, expression, fields, xpath=xpath, optional=optional)

    def _join(self, key: str, spec: dict[str, Any]) -> Join:
        references = spec["references"]
        referenced = self.recipient_fields.get(references)
        if referenced is None or referenced.kind != "string":
            mapped = ", ".join(k for k, f in self.recipient_fields.items() if f.kind == "string")
            raise self._error(
                f"{key}.join.references",
                f"{references!r} is not a text field of recipient.fields (mapped: {mapped})",
            )
        field = self._field(f"{key}.join.key", "join", spec["key"], referenced.target, "string")
        return Join(field, references, referenced.target)

    def _field(
        self, key: str, name: str, spec: str | dict[str, Any], target: str, kind: ValueKind
    ) -> FieldMap:
        if isinstance(spec, str):
            expression, convert, optional = spec, None, False
        else:
            expression = spec["path"]
            convert = self._conversion(key, spec, kind)
            optional = bool(spec.get("optional", False))
        extra: dict[str, Any] = {"convert": convert, "optional": optional}
        if _CHILD_STEP.fullmatch(expression):
            child = self._clark(key, expression)
            return FieldMap(name, target, kind, expression, child=child, **extra)
        attribute = _ATTRIBUTE_STEP.fullmatch(expression)
        if attribute:
            return FieldMap(name, target, kind, expression, attribute=attribute["local"], **extra)
        return FieldMap(name, target, kind, expression, xpath=self._xpath(key, expression), **extra)

    def _conversion(self, key: str, spec: dict[str, Any], kind: ValueKind) -> Conversion | None:
        """Check each option against the field's kind; None when the mapping has none."""
        fits: dict[str, tuple[str, ...]] = {
            "patterns": ("date", "datetime"),
            "timezone": ("datetime",),
            "decimalSeparator": ("decimal",),
            "trueValues": ("boolean",),
            "falseValues": ("boolean",),
        }
        for option, kinds in fits.items():
            if option in spec and kind not in kinds:
                raise self._error(
                    f"{key}.{option}", f"applies to {' or '.join(kinds)} fields, not {kind}"
                )
        options = set(spec) - {"path", "optional"}
        if not options:
            return None
        patterns = tuple(spec.get("patterns", ()))
        for pattern in patterns:
            self._check_pattern(f"{key}.patterns", pattern, kind)
        timezone = spec.get("timezone", DEFAULT_TIMEZONE)
        try:
            zoneinfo.ZoneInfo(timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise self._error(
                f"{key}.timezone", f"{timezone!r} is not an IANA time zone (e.g. Europe/Oslo)"
            ) from None
        true_values = frozenset(spec.get("trueValues", ()))
        false_values = frozenset(spec.get("falseValues", ()))
        if ("trueValues" in spec) != ("falseValues" in spec):
            raise self._error(key, "trueValues and falseValues go together")
        if true_values & false_values:
            raise self._error(f"{key}.falseValues", "a word cannot mean both true and false")
        value_map = spec.get("map")
        return Conversion(
            patterns=patterns,
            timezone=timezone,
            decimal_separator=spec.get("decimalSeparator", "."),
            true_values=true_values,
            false_values=false_values,
            empty_is_missing=bool(spec.get("emptyIsMissing", False)),
            trim=bool(spec.get("trim", False)),
            value_map={str(k): str(v) for k, v in value_map.items()} if value_map else None,
        )

    def _check_pattern(self, key: str, pattern: str, kind: ValueKind) -> None:
        """A pattern must read back the day, month and year it writes (catches `%d.%m`)."""
        sample = dt.datetime(2001, 11, 23, 14, 35, 56)
        try:
            back = dt.datetime.strptime(sample.strftime(pattern), pattern)
        except ValueError as exc:
            raise self._error(key, f"{pattern!r} is not a strptime pattern ({exc})") from None
        if back.date() != sample.date():
            raise self._error(key, f"{pattern!r} must contain the day, month and year")
        if kind == "datetime" and (back.hour, back.minute) != (sample.hour, sample.minute):
            raise self._error(key, f"{pattern!r} must contain the hour and minute (%H:%M)")

    def _clark(self, key: str, qname: str) -> str:
        match = _CHILD_STEP.fullmatch(qname)
        if match is None:
            raise self._error(key, f"{qname!r} must be one element name, e.g. x:Recipient")
        prefix = match["prefix"]
        if prefix is None:
            return match["local"]
        if prefix not in self.ns:
            raise self._error(key, f"prefix {prefix!r} is not declared in namespaces")
        return f"{{{self.ns[prefix]}}}{match['local']}"

    def _xpath(self, key: str, expression: str) -> etree.XPath:
        try:
            compiled = etree.XPath(expression, namespaces=self.ns, smart_strings=False)
            compiled(etree.Element("probe"))  # undeclared prefixes only show on evaluation
        except etree.XPathError as exc:
            raise self._error(key, f"invalid XPath {expression!r} ({exc})") from None
        return compiled

    def _error(self, key: str, message: str) -> ProfileError:
        return ProfileError(f"broken format profile {self.path.name}: {key}: {message}")
