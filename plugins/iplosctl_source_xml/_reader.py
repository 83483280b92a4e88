"""The streaming reader behind the xml source: one export, header first, then recipients.

Split from the plugin class (`iplosctl_source_xml.XmlSource`) so that this, the
per-record path, can be compiled with mypyc (setup.py) while the plugin class
stays an ordinary Python class that tests and third parties may patch. The
package docstring describes the streaming, the two passes of linked layouts,
the memory bound and the hardening; this module implements them.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from lxml import etree

from iplosctl.errors import Location, Problem, SourceError
from iplosctl.formats.profile import ElementMap, FieldMap, FormatProfile, local_name
from iplosctl.plugins import FieldCoverage
from iplosctl.records import Assessment, ExportHeader, Recipient, Service, record_number

from ._diagnose import HARDENED_PARSING, diagnose
from ._values import MISSING, Convert, converter_for, reason

#: bytes handed to libxml2 per read; larger chunks did not measure faster
CHUNK_SIZE = 1 << 16
#: the join key's slot among an item's values (never a record attribute)
_KEY = "__join_key__"
_SERVICE_ORDER = ("code", "start", "end", "hours_per_week", "decision_date", "org_number")
_SERVICE, _ASSESSMENT, _DIAGNOSIS = "service", "assessment", "diagnosis"
#: where each joined kind goes in a `_JoinStore` bucket
_SLOTS = {_SERVICE: 1, _ASSESSMENT: 2, _DIAGNOSIS: 3}
#: what a child of a recipient is, in `_RecipientReader.dispatch`
_OWN_FIELD: Final = 0
_SERVICE_ITEM: Final = 1
_ASSESSMENT_ITEM: Final = 2
_DIAGNOSIS_ITEM: Final = 3


@dataclass
class SampleCheck:
    """What `iplosctl format check` reports: coverage, and each field's failed records.

    `failures` maps a field (`recipient.localId`, `service.from`, `service.join`)
    to where it could not be read: (record index or None, line). No values.
    """

    profile: FormatProfile
    coverage: FieldCoverage
    records: int = 0
    failures: dict[str, list[tuple[int | None, int]]] = field(default_factory=dict)


def _drop(elem: etree._Element) -> None:
    """Free a read element and its already-read siblings (the tree stays small)."""
    elem.clear(keep_tail=False)
    parent = elem.getparent()
    if parent is not None:
        while elem.getprevious() is not None:
            del parent[0]


class _Context:
    """What every reader of one stream shares: names for messages, unread tags, check mode."""

    def __init__(self, path: Path, profile: FormatProfile, check: SampleCheck | None) -> None:
        self.filename = str(path)
        self.profile = profile
        self.profile_name = profile.path.name
        self.check = check
        #: tags of children nobody reads; `object`, as lxml gives comments a function as tag
        self.unread: set[object] = set()

    def cannot_read(self, elem: etree._Element, what: str, index: int | None) -> SourceError:
        """The profile's fault: the export is valid, the profile does not fit it."""
        record = f" (record {record_number(index)})" if index is not None else ""
        return SourceError(
            [
                Problem(
                    Location(self.filename, elem.sourceline or 0),
                    f"the format profile {self.profile_name} cannot read {what}{record}: "
                    "fix the profile (iplosctl format check shows every field)",
                )
            ]
        )

    def fail(self, key: str, index: int | None, line: int) -> None:
        assert self.check is not None
        self.check.failures.setdefault(key, []).append((index, line))


class ExportStream:
    """One export: the header first, then each recipient (one pass, or two with joins)."""

    def __init__(
        self,
        path: Path,
        profile: FormatProfile,
        encoding: str | None,
        *,
        check: SampleCheck | None = None,
    ) -> None:
        self.path = path
        self.name = str(path)
        self.profile = profile
        self.encoding = encoding
        self.ctx = _Context(path, profile, check)
        self.header_reader = _ElementReader(profile.header, self.ctx, "header")
        self.joins = _JoinStore(profile, self.ctx)
        self.recipient_reader = _RecipientReader(profile, self.ctx, self.joins)
        self.coverage = FieldCoverage()
        self.recipient_total = 0

    def items(self) -> Iterator[ExportHeader | Recipient]:
        if self.joins.readers:
            yield from self._pass(validate=True, recipients=False)
            # Pass 1 proved the file whole and valid and counted the recipients, so
            # pass 2 stops after the last one (item lists after it need no second parse).
            yield from self._pass(validate=False, recipients=True, stop=self.recipient_total)
            self.joins.finish()
        else:
            yield from self._pass(validate=True, recipients=True)
        self._fill_coverage()

    def _pass(
        self, *, validate: bool, recipients: bool, stop: int | None = None
    ) -> Iterator[ExportHeader | Recipient]:
        """Stream the file once: with `validate` the XSD runs and the header is yielded;
        with `recipients` recipients are read and yielded, else joined items are stored."""
        profile = self.profile
        root_tag, header_tag, recipient_tag = (
            profile.root,
            profile.header.tag,
            profile.recipient.tag,
        )
        joined = self.joins.readers
        read_recipient = self.recipient_reader.read
        store = self.joins.add
        checking = self.ctx.check is not None
        seen_header = False
        # With schema= and resolve_entities=False, lxml can swallow a well-formedness
        # error and simply stop (a truncated file "succeeds"). Only seeing the root's
        # end event proves the document was complete; anything less is diagnosed.
        complete = False
        index = 0
        with self.path.open("rb") as fh:
            events = etree.iterparse(
                fh,
                events=("end",),
                tag=(root_tag, header_tag, recipient_tag, *joined),
                schema=profile.xml_schema() if validate else None,
                remove_blank_text=True,
                chunk_size=CHUNK_SIZE,
                **HARDENED_PARSING,
            )  # type: ignore[call-overload]  # types-lxml lacks chunk_size
            try:
                for _event, elem in events:
                    tag = elem.tag
                    if tag == recipient_tag and seen_header:
                        if recipients:
                            if checking:
                                recipient = self._checked(elem, index)
                            else:
                                recipient = read_recipient(elem, index)
                        index += 1
                        _drop(elem)
                        if recipients and recipient is not None:
                            yield recipient
                        if index == stop:
                            return
                    elif tag in joined and seen_header:
                        if not recipients:
                            store(tag, elem)
                        # inline _drop: pass 2 sees a million of these and only frees them
                        elem.clear(keep_tail=False)
                        parent = elem.getparent()
                        while elem.getprevious() is not None:
                            del parent[0]
                    elif tag == header_tag and not seen_header:
                        seen_header = True
                        if validate:
                            yield self._header(elem)
                    elif tag == root_tag and elem.getparent() is None:
                        complete = True
                    else:
                        break  # out of order: the second pass says where
            except etree.XMLSyntaxError as exc:
                raise self._diagnosed(exc) from None
        if not complete or not seen_header:
            raise self._diagnosed(None)
        self.recipient_total = index

    def _checked(self, elem: etree._Element, index: int) -> Recipient | None:
        """format check: a recipient that cannot be read is counted per failing field."""
        try:
            return self.recipient_reader.read(elem, index)
        except SourceError:
            for key in self.recipient_reader.failing_fields(elem) or ["recipient"]:
                self.ctx.fail(key, index, elem.sourceline or 0)
            return None

    def _diagnosed(self, exc: etree.XMLSyntaxError | None) -> SourceError:
        return diagnose(self.path, self.profile, encoding=self.encoding, streaming_error=exc)

    def _header(self, elem: etree._Element) -> ExportHeader:
        values = self.header_reader.read(elem)
        for key in ("municipality", "reporting_year", "epj_system", "epj_version"):
            if key not in values:
                raise self.header_reader.missing(elem, key, None)
        return ExportHeader(**values)

    def _fill_coverage(self) -> None:
        """Coverage is complete once the last recipient has been read.

        `mapped` lists what the profile expects to find somewhere: each item
        kind's element under `<kind>.element` and each field under
        `<kind>.<field>`; what the profile marks `optional` is also named in
        `optional`, so the plan's zero findings never fire for it.
        """
        cov = self.coverage
        readers = [self.recipient_reader.own, *self.recipient_reader.items.values()]
        readers += list(self.joins.readers.values())
        for reader in readers:
            kind = reader.kind
            cov.items[kind] += reader.count
            if kind != "recipient":
                cov.mapped[f"{kind}.element"] = reader.emap.expression
                if reader.emap.optional:
                    cov.optional.add(f"{kind}.element")
            for f in reader.emap.fields:
                cov.mapped[f"{kind}.{f.key}"] = f.expression
                if f.optional:
                    cov.optional.add(f"{kind}.{f.key}")
                cov.present[f"{kind}.{f.key}"] += reader.present(f.target)
        named = _names_in_expressions(self.profile)
        cov.unread = sorted(
            {local_name(tag) for tag in self.ctx.unread if isinstance(tag, str)} - named
        )


def _names_in_expressions(profile: FormatProfile) -> set[str]:
    """Local names any mapping mentions: a longer XPath may read what a walk calls unread."""
    text = [profile.header.expression, profile.recipient.expression]
    for emap in [profile.header, profile.recipient, *[e for _k, e in profile.items()]]:
        text.append(emap.expression)
        text.extend([f.expression for f in emap.fields])
        if emap.join is not None:
            text.append(emap.join.key.expression)
    return {name for t in text for name in re.findall(r"[A-Za-z_][\w.-]*", t)}


class _ElementReader:
    """Reads the fields of one mapped element: children in one walk, attributes, then XPaths.

    A field mapped to one child step reads that child's text. Values are
    converted inside one `try`; only when one fails are the fields walked again
    one by one to name the culprit and its line (the fast path stays lean).
    Counts what it read for `Export.coverage`: a record with every field is one
    integer increment, only a partial one updates a dict.
    """

    def __init__(self, emap: ElementMap, ctx: _Context, kind: str) -> None:
        self.emap = emap
        self.ctx = ctx
        self.kind = kind
        fields = list(emap.fields)
        if emap.join is not None:
            fields.append(replace(emap.join.key, target=_KEY))
        self.fields = tuple(fields)
        self.converts: dict[str, Convert] = {f.target: converter_for(f) for f in self.fields}
        #: some field may convert to MISSING, which is dropped after reading
        self.drops = any(f.convert is not None and f.convert.empty_is_missing for f in fields)
        children: dict[str, list[tuple[str, Convert]]] = {}
        attributes: list[tuple[str, str, Convert]] = []
        xpaths: list[tuple[etree.XPath, str, Convert]] = []
        for f in self.fields:
            convert = self.converts[f.target]
            if f.child is not None:
                children.setdefault(f.child, []).append((f.target, convert))
            elif f.attribute is not None:
                attributes.append((f.attribute, f.target, convert))
            elif f.xpath is not None:
                xpaths.append((f.xpath, f.target, convert))
        #: keyed by `object`: a child's tag is looked up whatever it is (see `_Context.unread`)
        self.children: dict[object, tuple[tuple[str, Convert], ...]] = {
            tag: tuple(fs) for tag, fs in children.items()
        }
        self.attributes = tuple(attributes)
        self.xpaths = tuple(xpaths)
        self.width = len(self.fields)
        self.count = 0
        self.full = 0
        #: per field, the items that had it among those that had not every field
        self.partial: dict[str, int] = {}

    def read(self, elem: etree._Element, index: int | None = None) -> dict[str, Any]:
        values: dict[str, Any] = {}
        try:
            children = self.children
            if children:
                unread = self.ctx.unread
                for child in elem:
                    fields = children.get(child.tag)
                    if fields is not None:
                        text = child.text
                        if text is not None:
                            for target, convert in fields:
                                if target not in values:
                                    values[target] = text if convert is None else convert(text)
                    else:
                        unread.add(child.tag)
            for attribute, target, convert in self.attributes:
                raw = elem.get(attribute)
                if raw is not None:
                    values[target] = raw if convert is None else convert(raw)
            if self.xpaths:
                self.read_xpaths(elem, values)
        except ValueError:
            raise self.bad_value(elem, index) from None
        self.tally(values)
        return values

    def tally(self, values: dict[str, Any]) -> None:
        """Drop MISSING values and count the item and its fields for coverage."""
        if self.drops and MISSING in values.values():
            for target in [t for t, v in values.items() if v is MISSING]:
                del values[target]
        self.count += 1
        if len(values) == self.width:
            self.full += 1
        else:
            partial = self.partial
            for target in values:  # not Counter.update: a Python-level call per item
                partial[target] = partial.get(target, 0) + 1

    def present(self, target: str) -> int:
        return self.full + self.partial.get(target, 0)

    def read_xpaths(self, elem: etree._Element, values: dict[str, Any]) -> None:
        """The fields mapped by a longer XPath; may raise ValueError."""
        for xpath, target, convert in self.xpaths:
            raw, _where = _evaluate(xpath, elem)
            if raw is not None:
                values[target] = raw if convert is None else convert(raw)

    def raw_values(
        self, elem: etree._Element, f: FieldMap
    ) -> list[tuple[str | None, etree._Element]]:
        if f.child is not None:
            return [(c.text, c) for c in elem if c.tag == f.child][:1]
        if f.attribute is not None:
            return [(elem.get(f.attribute), elem)]
        assert f.xpath is not None
        return [_evaluate(f.xpath, elem)]

    def failures(self, elem: etree._Element) -> list[tuple[FieldMap, str, etree._Element]]:
        """Every field whose value fails to convert: (field, reason, element)."""
        out = []
        for f in self.fields:
            convert = self.converts[f.target]
            for raw, where in self.raw_values(elem, f):
                if raw is None or convert is None:
                    continue
                try:
                    convert(raw)
                except ValueError as exc:
                    out.append((f, reason(exc, f.kind, f), where))
        return out

    def bad_value(self, elem: etree._Element, index: int | None) -> SourceError:
        """Name the field whose value failed to convert and its line, not the value."""
        for f, why, where in self.failures(elem):
            return self.ctx.cannot_read(where, f"{self.describe(f)}: {why}", index)
        return self.ctx.cannot_read(elem, f"<{self.owner}>: a value", index)

    def missing(self, elem: etree._Element, target: str, index: int | None) -> SourceError:
        """An element or attribute the profile needs is not there."""
        f = next(f for f in self.fields if f.target == target)
        name = "join key" if target == _KEY else f.key
        return self.ctx.cannot_read(
            elem, f"<{self.owner}>: it has no {name} ({f.expression}), which it needs", index
        )

    @property
    def owner(self) -> str:
        return local_name(self.emap.tag) if self.emap.tag else self.emap.key

    def describe(self, f: FieldMap) -> str:
        name = "join key" if f.target == _KEY else f.key
        if f.child is not None:
            return f"{name} <{local_name(f.child)}> in <{self.owner}>"
        if f.attribute is not None:
            return f"{name} (attribute {f.attribute!r}) of <{self.owner}>"
        return f"{name} ({f.expression}) of <{self.owner}>"

    def failing_keys(self, elem: etree._Element) -> list[str]:
        return [self.key_of(f) for f, _why, _where in self.failures(elem)]

    def key_of(self, f: FieldMap) -> str:
        """The field's coverage key, e.g. `service.from` or `service.join`."""
        return f"{self.kind}.{'join' if f.target == _KEY else f.key}"


class _JoinStore:
    """Joined items between the passes: compact tuples under their recipient's key.

    A service is kept as the tuple of its `Service` fields plus its line, an
    assessment as (variable, score, date), a diagnosis as its code; repeated
    strings (codes, variables) are interned so a million items share them.
    """

    def __init__(self, profile: FormatProfile, ctx: _Context) -> None:
        self.ctx = ctx
        self.readers: dict[str, _ElementReader] = {}
        for kind, emap in profile.items():
            if emap.join is not None:
                assert emap.tag is not None
                self.readers[emap.tag] = _ElementReader(emap, ctx, kind)
        self.target = next(
            (emap.join.target for _k, emap in profile.items() if emap.join is not None), ""
        )
        #: key → [line of its first item, services, assessments, diagnoses] (None: none)
        self.pending: dict[str, list[Any]] = {}
        self.seen: set[str] = set()

    def add(self, tag: str, elem: etree._Element) -> None:
        """Pass 1: read one joined item and file it under its key (a hot path)."""
        reader = self.readers[tag]
        try:
            values = reader.read(elem)
            key = values.pop(_KEY, None)
            if key is None:
                raise reader.missing(elem, _KEY, None)
            item = self._compact(reader, elem, values)
        except SourceError:
            if self.ctx.check is None:
                raise
            for key_name in reader.failing_keys(elem) or [f"{reader.kind}.join"]:
                self.ctx.fail(key_name, None, elem.sourceline or 0)
            return
        bucket = self.pending.get(key)
        if bucket is None:
            bucket = self.pending[key] = [elem.sourceline or 0, None, None, None]
        slot = _SLOTS[reader.kind]
        kept = bucket[slot]
        if kept is None:
            bucket[slot] = [item]  # lists only for the kinds a recipient has: less memory
        else:
            kept.append(item)

    @staticmethod
    def _compact(reader: _ElementReader, elem: etree._Element, values: dict[str, Any]) -> Any:
        intern = sys.intern
        kind = reader.kind
        try:
            if kind == _ASSESSMENT:
                return (intern(values["variable"]), values["score"], values.get("date"))
            if kind == _SERVICE:
                org = values.get("org_number")
                return (
                    intern(values["code"]),
                    values.get("start"),
                    values.get("end"),
                    values.get("hours_per_week"),
                    values.get("decision_date"),
                    intern(org) if org is not None else None,
                    elem.sourceline,
                )
            return intern(str(values["code"]))
        except KeyError as exc:
            raise reader.missing(elem, str(exc.args[0]), None) from None

    def take(self, key: str | None, elem: etree._Element, index: int) -> list[Any] | None:
        """Pass 2: the items of the recipient with `key`; refuses a key seen twice."""
        if key is None:
            return None
        if key in self.seen:
            raise SourceError(
                [
                    Problem(
                        Location(self.ctx.filename, elem.sourceline or 0),
                        f"record {record_number(index)}: two recipients have the same "
                        f"{self._recipient_key()}, "
                        "so the items that name it cannot be given to either: make the key "
                        "unique in the export, or join on another field",
                    )
                ]
            )
        self.seen.add(key)
        return self.pending.pop(key, None)

    def finish(self) -> None:
        """After pass 2: any item still here names a recipient the export does not have."""
        if not self.pending:
            return
        line = min(bucket[0] for bucket in self.pending.values())
        items = sum(len(kept or ()) for b in self.pending.values() for kept in b[1:])
        message = (
            f"{items} joined item(s) name a recipient by {self._references()} that is not "
            f"in the export (the first at this line): the export lacks those recipients, "
            f"or the join of format profile {self.ctx.profile_name} reads the wrong key"
        )
        if self.ctx.check is not None:
            for bucket in self.pending.values():
                self.ctx.fail("join", None, bucket[0])
            return
        raise SourceError([Problem(Location(self.ctx.filename, line), message)])

    def _recipient_key(self) -> str:
        """The recipient field the items join on, as the profile maps it: `localId (b:Id)`."""
        for f in self.ctx.profile.recipient.fields:
            if f.target == self.target:
                return f"{f.key} ({f.expression})"
        return "key"

    def _references(self) -> str:
        for _kind, emap in self.ctx.profile.items():
            if emap.join is not None:
                return f"{emap.join.references} ({emap.join.key.expression})"
        return "key"


class _RecipientReader:
    """Builds one Recipient: its own fields, then services, assessments, diagnoses.

    The recipient's children are walked once: a child is either one of its own
    fields or an item (service, assessment, diagnosis) mapped to one child step.
    Items mapped by a longer XPath are found with it; joined items come from
    the `_JoinStore`.
    """

    def __init__(self, profile: FormatProfile, ctx: _Context, joins: _JoinStore) -> None:
        self.ctx = ctx
        self.filename = ctx.filename
        self.profile = profile
        self.joins = joins
        self.join_target = joins.target if joins.readers else None
        self.own = _ElementReader(profile.recipient, ctx, "recipient")
        self.items: dict[int, _ElementReader] = {}
        self.dispatch: dict[object, tuple[int, Any]] = {
            tag: (_OWN_FIELD, fields) for tag, fields in self.own.children.items()
        }
        self.item_xpaths: list[tuple[etree.XPath, int]] = []
        numbers = {_SERVICE: _SERVICE_ITEM, _ASSESSMENT: _ASSESSMENT_ITEM}
        for kind, emap in profile.items():
            if emap.join is not None:
                continue
            number = numbers.get(kind, _DIAGNOSIS_ITEM)
            self.items[number] = _ElementReader(emap, ctx, kind)
            if emap.tag is not None:
                self.dispatch[emap.tag] = (number, None)
            elif emap.xpath is not None:
                self.item_xpaths.append((emap.xpath, number))

    def read(self, elem: etree._Element, index: int) -> Recipient:
        values: dict[str, Any] = {}
        services: list[Service] = []
        assessments: list[Assessment] = []
        diagnoses: list[str] = []
        dispatch = self.dispatch
        try:
            for child in elem:
                entry = dispatch.get(child.tag)
                if entry is None:
                    self.ctx.unread.add(child.tag)
                    continue
                kind, fields = entry
                if kind == _SERVICE_ITEM:
                    services.append(self._service(child, index))
                elif kind == _ASSESSMENT_ITEM:
                    assessments.append(self._assessment(child, index))
                elif kind == _OWN_FIELD:
                    text = child.text
                    if text is not None:
                        for target, convert in fields:
                            if target not in values:
                                values[target] = text if convert is None else convert(text)
                else:
                    diagnoses.append(self._diagnosis(child, index))
            own = self.own
            for attribute, target, convert in own.attributes:
                raw = elem.get(attribute)
                if raw is not None:
                    values[target] = raw if convert is None else convert(raw)
            if own.xpaths:
                own.read_xpaths(elem, values)
        except ValueError:
            raise self.own.bad_value(elem, index) from None
        self.own.tally(values)
        for xpath, kind in self.item_xpaths:
            for child in xpath(elem):
                if not isinstance(child, etree._Element):
                    continue
                if kind == _SERVICE_ITEM:
                    services.append(self._service(child, index))
                elif kind == _ASSESSMENT_ITEM:
                    assessments.append(self._assessment(child, index))
                else:
                    diagnoses.append(self._diagnosis(child, index))
        if values.get("local_id") is None:
            raise self.own.missing(elem, "local_id", index)
        if "person_id" not in values:
            # Allowed by the format (the KPR_IPL part has none); the person-id rule decides.
            values["person_id"] = ""
        if self.join_target is not None:
            bucket = self.joins.take(values.get(self.join_target), elem, index)
            if bucket is not None:
                _, joined_services, joined_assessments, joined_diagnoses = bucket
                if joined_services:
                    services.extend(Service(*s) for s in joined_services)
                if joined_assessments:
                    assessments.extend(Assessment(*a) for a in joined_assessments)
                if joined_diagnoses:
                    diagnoses.extend(joined_diagnoses)
        return Recipient(
            index=index,
            line=elem.sourceline,
            services=tuple(services),
            assessments=tuple(assessments),
            diagnoses=tuple(diagnoses),
            **values,
        )

    def failing_fields(self, elem: etree._Element) -> list[str]:
        """format check: every field of this recipient and its nested items that fails."""
        keys = self.own.failing_keys(elem)
        for f in self.own.fields:
            if f.target == "local_id" and not any(r for r, _ in self.own.raw_values(elem, f)):
                keys.append("recipient.localId")
        for number, reader in self.items.items():
            emap = reader.emap
            children = (
                [c for c in elem if c.tag == emap.tag]
                if emap.tag is not None
                else [c for c in emap.xpath(elem) if isinstance(c, etree._Element)]  # type: ignore[misc]
            )
            for child in children:
                keys.extend(reader.failing_keys(child))
                needed = {_ASSESSMENT_ITEM: ("variable", "score")}.get(number, ("code",))
                for f in reader.fields:
                    if f.target in needed and not any(r for r, _ in reader.raw_values(child, f)):
                        keys.append(f"{reader.kind}.{f.key}")
        return list(dict.fromkeys(keys))

    def _service(self, child: etree._Element, index: int) -> Service:
        reader = self.items[_SERVICE_ITEM]
        values = reader.read(child, index)
        code = values.get("code")
        if code is None:
            raise reader.missing(child, "code", index)
        # Positional, not **values: a million keyword calls of a frozen dataclass add up.
        get = values.get
        return Service(
            code,
            get("start"),
            get("end"),
            get("hours_per_week"),
            get("decision_date"),
            get("org_number"),
            child.sourceline,
        )

    def _assessment(self, child: etree._Element, index: int) -> Assessment:
        reader = self.items[_ASSESSMENT_ITEM]
        values = reader.read(child, index)
        variable, score = values.get("variable"), values.get("score")
        if variable is None:
            raise reader.missing(child, "variable", index)
        if score is None:
            raise reader.missing(child, "score", index)
        return Assessment(variable, score, values.get("date"))

    def _diagnosis(self, child: etree._Element, index: int) -> str:
        reader = self.items[_DIAGNOSIS_ITEM]
        code = reader.read(child, index).get("code")
        if code is None:
            raise reader.missing(child, "code", index)
        return str(code)


def _evaluate(xpath: etree.XPath, elem: etree._Element) -> tuple[str | None, etree._Element]:
    """A general XPath's first result as text, and the element to blame for a bad value."""
    result = xpath(elem)
    if isinstance(result, list):
        if not result:
            return None, elem
        first = result[0]
        if isinstance(first, etree._Element):
            return "".join(first.itertext()), first
        return str(first), elem
    if isinstance(result, bool):
        return ("true" if result else "false"), elem
    if isinstance(result, float):
        if result != result:  # NaN: XPath's "nothing there" for number()
            return None, elem
        return (str(int(result)) if result.is_integer() else repr(result)), elem
    text = str(result)
    return (text or None), elem
