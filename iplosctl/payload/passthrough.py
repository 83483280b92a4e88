"""Pass-through: send the register-format file(s) the EPJ wrote, byte for byte.

KPR expects its own IPLOS format (the "IPLOS 3.7 Skjema (XSD)" Helsedirektoratet
gives EPJ vendors; not public, so iplosctl cannot write it). When a format
profile says `payload: {mode: passthrough, parts: …}`, the export already is in
that format: the checks still read the records through the profile, but apply
sends each part's file unchanged inside the MsgHead, and the plan's part
digests are sha256 of exactly those bytes, so a saved plan is tied to them.

What this module promises, per part file, before anything is journaled:
- it can go into `MsgHead/Document/RefDoc/Content` unchanged (`check_part`): UTF-8
  (with or without a declaration or BOM), no DOCTYPE, one root element that
  declares its default namespace; `Content` carries the root element byte for
  byte, while a BOM, the XML declaration (allowed only at the start of a
  document) and comments or white space around the root stay outside;
- it is valid against the register format's XSD (the profile's own, or the
  official one named by `spec.payloadSchema` in the `spec.schemas` folder);
- its bytes are copied to apply's private file in the same read that digests
  them (`PassthroughHasher`), so what is sent is what was digested.

Test persons cannot be left out of bytes sent unchanged: where the rules would
exclude one, the plan gets a blocking `passthrough-test-person` finding instead.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

from lxml import etree

from iplosctl.errors import ManifestError, PayloadError, Problem, ProfileError
from iplosctl.manifest import Manifest
from iplosctl.payload.msghead import payload_root, schema_reason
from iplosctl.plugins import PayloadSpec
from iplosctl.profiles import MessagePart
from iplosctl.records import Recipient
from iplosctl.rules import Finding, RecordRef
from iplosctl.rules.engine import MAX_REFS

#: the rule id of "a test person would be sent" (not overridable in spec.rules)
TEST_PERSON_RULE = "passthrough-test-person"
_CHUNK = 1 << 20
_REASON = re.compile(r"\(([^()]*)\)\s*$")


def part_files(
    manifest: Manifest, payload: PayloadSpec, message_parts: Sequence[MessagePart]
) -> dict[str, Path]:
    """Message part type → the file sent as that part, in the profile's order.

    The profile's parts must be message parts of the reporting year, and the
    manifest's `spec.source.parts` must name a file for exactly the parts the
    profile marks `file`.
    """
    known = [p.type for p in message_parts]
    wanted = {t for t, where in payload.parts if where == "file"}
    given = set(manifest.source.parts)
    for part_type, _where in payload.parts:
        if part_type not in known:
            raise ProfileError(
                f"format profile {payload.origin}: payload.parts names {part_type}, which is "
                f"not a message part of the {manifest.reporting_year} profile "
                f"({', '.join(known)})"
            )
    missing = sorted(wanted - given)
    if missing:
        raise _manifest_error(
            manifest,
            f"the format profile {payload.origin} sends {missing[0]} from a file of its "
            f"own: name it in spec.source.parts.{missing[0]}",
        )
    extra = sorted(given - wanted)
    if extra:
        raise _manifest_error(
            manifest,
            f"spec.source.parts.{extra[0]} is not a 'file' part of the format profile "
            f"{payload.origin}: remove it",
        )
    return {
        t: manifest.source.path if where == "export" else manifest.source.parts[t]
        for t, where in payload.parts
    }


def no_parts_without_passthrough(manifest: Manifest, payload: PayloadSpec) -> None:
    """Pass-through settings with a format that re-writes the records are a mistake: say so."""
    if payload.passthrough:
        return
    which = payload.origin or "this source"
    if manifest.source.parts:
        first = sorted(manifest.source.parts)[0]
        raise _manifest_error(
            manifest,
            f"spec.source.parts.{first}: parts are sent unchanged only with a pass-through "
            f"format profile (payload: {{mode: passthrough}}), and {which} is not one: "
            "remove spec.source.parts",
        )
    if manifest.payload_schema is not None:
        raise ManifestError(
            [
                Problem(
                    manifest.locate("spec", "payloadSchema"),
                    f"payloadSchema validates a pass-through payload, and {which} is not a "
                    "pass-through format profile: remove it, or use one",
                )
            ]
        )


def payload_xsd(manifest: Manifest, payload: PayloadSpec) -> Path | None:
    """The register format's XSD: `spec.payloadSchema` in `spec.schemas`, else the profile's."""
    if manifest.payload_schema is not None and manifest.schemas is not None:
        return manifest.schemas / manifest.payload_schema
    return payload.schema


def check_part(path: Path, xsd: Path | None, *, shown: str | None = None) -> None:
    """Refuse a part file that cannot be carried unchanged or does not match the XSD.

    One `PayloadError` naming the file (and line for schema violations), never
    a value from it.
    """
    name = shown or str(path)
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise PayloadError(f"{name}: is a folder, not a register-format file") from None
    except OSError as exc:
        raise PayloadError(f"{name}: cannot read: {exc.strerror}") from None
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise PayloadError(
            f"{name}: is UTF-16; a MsgHead carries UTF-8 and pass-through sends the file "
            "unchanged: have the EPJ write UTF-8"
        )
    try:
        payload_root(data)
    except PayloadError as exc:
        raise PayloadError(
            f"{name}: {exc.message} (pass-through sends the file unchanged, so the EPJ "
            "must write it so)"
        ) from None
    del data
    if xsd is not None:
        _validate(path, name, xsd)


@functools.cache
def _schema(xsd: Path) -> etree.XMLSchema:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    try:
        return etree.XMLSchema(etree.parse(str(xsd), parser))
    except (OSError, etree.XMLSyntaxError, etree.XMLSchemaParseError) as exc:
        reason = " ".join(str(exc).split())
        raise PayloadError(f"register format schema {xsd} does not compile: {reason}") from None


def _validate(path: Path, name: str, xsd: Path) -> None:
    """Stream `path` through `xsd`; the tree is dropped as it goes (memory stays flat)."""
    schema = _schema(xsd)
    complete = False
    with path.open("rb") as fh:
        events = etree.iterparse(
            fh,
            events=("end",),
            schema=schema,
            load_dtd=False,
            no_network=True,
            resolve_entities=False,
            huge_tree=False,
        )
        try:
            for _event, elem in events:
                if elem.getparent() is None:
                    complete = True
                else:
                    elem.clear(keep_tail=True)
        except etree.XMLSyntaxError as exc:
            line, message = exc.lineno or 0, exc.msg or ""
            if not line:  # streaming validation knows no lines: find it on the error path
                line, message = _first_violation(path, schema) or (0, message)
            raise PayloadError(
                f"{name}:{line}: does not match the register format's XSD "
                f"{xsd.name}: {schema_reason(message)}: fix the export in the EPJ"
            ) from None
    if not complete:  # lxml may stop quietly on a broken document while validating
        raise PayloadError(f"{name}: is not complete XML (truncated?): export it again")


def _first_violation(path: Path, schema: etree.XMLSchema) -> tuple[int, str] | None:
    """Line and message of the first schema violation, from a whole-tree validation."""
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False
    )
    try:
        tree = etree.parse(str(path), parser)
    except etree.XMLSyntaxError:
        return None
    if schema.validate(tree):
        return None
    first = schema.error_log[0]
    return first.line, first.message


def blocking_test_persons(
    findings: Sequence[Finding], excluded: Sequence[RecordRef] = (), count: int = 0
) -> list[Finding]:
    """Test-person exclusions turned into errors: bytes sent unchanged cannot leave anyone out.

    `excluded` and `count` are the records the rules excluded, counted by the
    plan itself: with `test-person: off` in spec.rules the rule reports nothing,
    yet those persons would still be in the file.
    """
    out: list[Finding] = []
    reported = 0
    for f in findings:
        if f.rule != "test-person":
            out.append(f)
            continue
        match = _REASON.search(f.message)
        out.append(_test_person(f" ({match[1]})" if match else "", f.count, f.records))
        reported += f.count
    if count > reported:
        out.append(_test_person("", count - reported, tuple(excluded[:MAX_REFS])))
    return out


def _test_person(why: str, count: int, records: tuple[RecordRef, ...]) -> Finding:
    return Finding(
        TEST_PERSON_RULE,
        "error",
        f"test person in a pass-through export{why}: the file is sent byte for byte, "
        "so iplosctl cannot leave anyone out: remove the test persons in the EPJ and "
        "export again",
        count,
        records,
    )


class PassthroughHasher:
    """The `PayloadHasher` of pass-through: each part's file digested (and copied) whole.

    Records do not change the payload, so `add` does nothing; `finish` reads
    each file once, hashing it and, for apply, writing the same bytes to that
    part's output.
    """

    def __init__(
        self, files: Mapping[str, Path], outputs: Mapping[str, BinaryIO] | None = None
    ) -> None:
        self._files = dict(files)
        self._outputs = outputs

    def add(self, record: Recipient) -> None:
        """Records are checked, not re-written."""

    def finish(self) -> list[tuple[str, str, int]]:
        """(part type, `sha256:…`, size in bytes) in the profile's part order."""
        out = []
        for part_type, path in self._files.items():
            sink = None if self._outputs is None else self._outputs[part_type]
            h = hashlib.sha256()
            size = 0
            with path.open("rb") as fh:
                while chunk := fh.read(_CHUNK):
                    h.update(chunk)
                    size += len(chunk)
                    if sink is not None:
                        sink.write(chunk)
            if sink is not None:
                sink.flush()
            out.append((part_type, "sha256:" + h.hexdigest(), size))
        return out


def file_identity(path: Path) -> list[int] | None:
    """(size, mtime, inode) for the plan cache key; None when it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def _manifest_error(manifest: Manifest, message: str) -> ManifestError:
    return ManifestError([Problem(manifest.locate("spec", "source"), message)])
