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
says where a value is, never what it is.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
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
class FieldMap:
    """One record field and where the profile says it is.

    Exactly one of `child` (Clark name of a child element), `attribute` (an
    unqualified attribute name) and `xpath` (anything else, compiled) is set.
    """

    key: str
    target: str
    kind: ValueKind
    expression: str
    child: str | None = None
    attribute: str | None = None
    xpath: etree.XPath | None = None


@dataclass(frozen=True)
class ElementMap:
    """An element of the export (by Clark `tag`, or by compiled `xpath`) and its fields."""

    key: str
    expression: str
    fields: tuple[FieldMap, ...]
    tag: str | None = None
    xpath: etree.XPath | None = None


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
        return FormatProfile(
            name=data["name"],
            path=self.path,
            description=data.get("description", ""),
            schema_path=schema_path,
            namespaces=self.ns,
            root=self._clark("root", data["root"]),
            max_depth=data["maxDepth"],
            header=self._element("header", data["header"], HEADER_FIELDS, top=True),
            recipient=self._element("recipient", recipient, RECIPIENT_FIELDS, top=True),
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
            self._field(f"{key}.fields.{name}", name, expr, *known[name])
            for name, expr in item["fields"].items()
        )
        if top or _CHILD_STEP.fullmatch(expression):
            # Header and recipient are streamed by tag, so they must be one step.
            return ElementMap(key, expression, fields, tag=self._clark(key, expression))
        return ElementMap(key, expression, fields, xpath=self._xpath(f"{key}.element", expression))

    def _field(
        self, key: str, name: str, expression: str, target: str, kind: ValueKind
    ) -> FieldMap:
        if _CHILD_STEP.fullmatch(expression):
            return FieldMap(name, target, kind, expression, child=self._clark(key, expression))
        attribute = _ATTRIBUTE_STEP.fullmatch(expression)
        if attribute:
            return FieldMap(name, target, kind, expression, attribute=attribute["local"])
        return FieldMap(name, target, kind, expression, xpath=self._xpath(key, expression))

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
