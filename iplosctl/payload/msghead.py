"""Hodemelding (MsgHead v1.2) around an IPLOS payload: build, validate, read (DOMAIN.md §3).

KPR receives the payload inside `MsgHead/Document/RefDoc/Content`. The envelope uses
service-based addressing: the municipality as the outer `Organisation` (ENH and HER
idents) with its "Saksbehandling" service nested inside it with its own HER-id, which is
where KPR's AppRec goes (DOMAIN.md §3, §5.2).

`Content` is a strict wildcard, so the payload's own XSD has to be compiled into the same
schema set as MsgHead; `load_schemas` does that offline. The official XSDs are never
copied into this repository: the caller passes the directory that holds them.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from xml.sax.saxutils import quoteattr

from lxml import etree

from iplosctl.errors import PayloadError
from iplosctl.payload.compression import (
    BASE64_CONTAINER_NS,
    COMPRESSED_MIME_TYPE,
    COMPRESSION_DN,
    decompress_content,
    encode_base64,
)

if TYPE_CHECKING:
    from lxml.etree._docloader import _InputDocument

MSGHEAD_NS = "http://www.kith.no/xmlstds/msghead/2006-05-24"
MSGHEAD_XSD = "MsgHead-v1_2.xsd"
MIG_VERSION = "v1.2 2006-05-24"
#: Kodeverk 9051 "ID-typer for organisatoriske enheter" (DOMAIN.md §3).
ID_TYPES_OID = "2.16.578.1.12.4.1.1.9051"
ID_TYPE_DN = {"ENH": "Organisasjonsnummeret i Enhetsregisteret", "HER": "HER-id"}
#: Kodeverk 8114 "Type dokumentreferanse". RefDoc/MsgType is a CS (V and DN only), so the
#: OID cannot appear in the XML; it is kept here to document where "XML" comes from.
REFDOC_TYPES_OID = "2.16.578.1.12.4.1.1.8114"

#: Fixed namespace for `message_id`. Never change it: a retry must recompute the same
#: MsgId as the first try, also after an upgrade of iplosctl.
MESSAGE_ID_NAMESPACE = uuid.UUID("6f1c3a52-8d4e-5b7a-9c21-4e0b9d7f2a13")

_M = f"{{{MSGHEAD_NS}}}"
_XML_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'


def message_id(lineage: str, attempt: int, part_type: str, payload_digest: str) -> str:
    """A MsgId that depends only on what is sent, so resending after a crash reuses it.

    KPR (like every NHN receiver) deduplicates on MsgId (DOMAIN.md §5.8); a new attempt
    number is a deliberate resubmission and gets a new id. The inputs are JSON-encoded
    before hashing so that no two different input tuples give the same name.
    """
    if attempt < 0:
        raise ValueError("attempt must be 0 or more")
    name = json.dumps([lineage, attempt, part_type, payload_digest], separators=(",", ":"))
    return str(uuid.uuid5(MESSAGE_ID_NAMESPACE, name))


# --- parsing --------------------------------------------------------------------------------


def safe_parser() -> etree.XMLParser:
    """A parser for documents from outside: no DTD, no entity expansion, no network."""
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        remove_pis=False,
        huge_tree=False,
    )


def parse_document(xml: bytes, what: str) -> etree._Element:
    """The root element of `xml`, refusing DOCTYPEs (no entity tricks reach our code)."""
    try:
        tree = etree.fromstring(xml, parser=safe_parser()).getroottree()
    except etree.XMLSyntaxError as exc:
        reason = _sanitise(_TRAILING_POSITION.sub("", exc.msg or ""))
        raise PayloadError(
            f"{what} is not well-formed XML: line {exc.lineno or 0}: {reason}"
        ) from None
    except ValueError as exc:  # e.g. a str with an encoding declaration
        raise PayloadError(f"{what} could not be read as XML ({exc}); pass the raw bytes") from None
    if tree.docinfo.doctype:
        raise PayloadError(f"{what} has a DOCTYPE declaration; DTDs and entities are not accepted")
    return tree.getroot()


# Keep quoted names of schema things; hide every other quoted value, which may be data.
_QUOTED = re.compile(r"(?P<pre>\b[\w-]+ )?'(?P<val>[^']*)'")
_SCHEMA_WORDS = frozenset({"Element", "element", "attribute", "type", "facet", "pattern"})
_TRAILING_POSITION = re.compile(r", line \d+, column \d+$")
_BYTES = re.compile(r"Bytes: (0x[0-9A-Fa-f]{2} ?)+")
_WHERE = re.compile(r"^(Element '[^']*'(?:, attribute '[^']*')?): ")
_FACET = re.compile(r"^\[facet '(\w+)'\] ")
# For messages that quote an instance value, the schema-side tail that is safe to show:
# found with rfind, so a value containing quotes cannot shift it.
_SAFE_TAILS = (
    "is not accepted by the pattern ",
    "is not an element of the set ",
    "this differs from the allowed length",
    "this underruns the allowed minimum length",
    "this exceeds the allowed maximum length",
    "is less than the minimum value allowed",
    "is greater than the maximum value allowed",
    "must be greater than ",
    "must be less than ",
    "has more digits than are allowed",
    "has more fractional digits than are allowed",
    "is not a valid value of the ",
    "does not match the fixed value constraint ",
)


def _sanitise(message: str) -> str:
    """A libxml2 parser message with quoted values and raw bytes hidden, on one line."""

    def repl(m: re.Match[str]) -> str:
        pre = m.group("pre") or ""
        return m.group(0) if pre.strip() in _SCHEMA_WORDS else f"{pre}'…'"

    text = _BYTES.sub("Bytes: …", _QUOTED.sub(repl, message))
    return " ".join(text.split())


def schema_reason(message: str) -> str:
    """A libxml2 schema-validation message without the instance value it may quote.

    "The value '01017012345' is not accepted by the pattern ..." would print a
    fødselsnummer; we keep the element name and the schema's side of the message.
    """
    message = " ".join(message.split())
    where = _WHERE.match(message)
    prefix = f"{where.group(1)}: " if where else ""
    rest = message[where.end() :] if where else message
    facet = _FACET.match(rest)
    lead = f"[facet '{facet.group(1)}'] " if facet else ""
    if "key-sequence" in rest:
        return prefix + re.sub(r"\[.*\]", "[…]", rest)
    if "'" in rest and ("The value" in rest or rest.startswith("'")):
        for tail in _SAFE_TAILS:
            at = rest.rfind(tail)
            if at >= 0:
                return f"{prefix}{lead}the value {rest[at:]}"
        return f"{prefix}{lead}the value is not allowed here"
    return prefix + _sanitise(rest)


# --- building -------------------------------------------------------------------------------


def _format_datetime(value: dt.datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("gen_date must be timezone-aware")
    text = value.isoformat(timespec="seconds")
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _sub(parent: etree._Element, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
    el = etree.SubElement(parent, _M + tag, attrs)
    if text is not None:
        el.text = text
    return el


def _ident(parent: etree._Element, value: str, id_type: str) -> None:
    ident = _sub(parent, "Ident")
    _sub(ident, "Id", value)
    _sub(ident, "TypeId", V=id_type, S=ID_TYPES_OID, DN=ID_TYPE_DN[id_type])


def build_msghead(
    *,
    msg_type: str,
    msg_type_dn: str,
    msg_id: str,
    gen_date: dt.datetime,
    sender_org_name: str,
    sender_org_number: str,
    sender_her_id: str,
    sender_service_name: str,
    sender_service_her_id: str,
    receiver_name: str,
    receiver_her_id: str,
    payload: bytes,
    compression: str | None = None,
) -> bytes:
    """A MsgHead v1.2 document (UTF-8, with XML declaration) carrying `payload`'s root.

    With `compression` (`payload/compression.py`), `payload` is the already compressed
    document: it goes base64-encoded into a KITH `Base64Container` in `Content`, and
    `RefDoc` says `MimeType` and `Compression` (the v1.2 schema's place for it).

    Equal inputs give equal bytes, so a plan can show the digest of what will be sent.
    The payload's root element goes into `Content` byte for byte; anything around it in
    `payload` (declaration, comments) is dropped. The envelope is built as a tree, the
    payload is spliced in unparsed: parsing and re-serialising a 20 MB payload cost 0.7 s
    of every send, five times the CMS work (benchmarks/apply_throughput.py).
    """
    if compression is None:
        root_bytes = _payload_root(payload)
    else:
        root_bytes = b"".join(
            (
                b'<Base64Container xmlns="',
                BASE64_CONTAINER_NS.encode(),
                b'">',
                encode_base64(payload),
                b"</Base64Container>",
            )
        )
    root = etree.Element(_M + "MsgHead", nsmap={None: MSGHEAD_NS})
    info = _sub(root, "MsgInfo")
    _sub(info, "Type", V=msg_type, DN=msg_type_dn)
    _sub(info, "MIGversion", MIG_VERSION)
    _sub(info, "GenDate", _format_datetime(gen_date))
    _sub(info, "MsgId", msg_id)
    # Ack=J asks the receiver for an AppRec (DOMAIN.md §5.6).
    _sub(info, "Ack", V="J", DN="Ja")
    sender_org = _sub(_sub(info, "Sender"), "Organisation")
    _sub(sender_org, "OrganisationName", sender_org_name)
    _ident(sender_org, sender_org_number, "ENH")
    _ident(sender_org, sender_her_id, "HER")
    service = _sub(sender_org, "Organisation")
    _sub(service, "OrganisationName", sender_service_name)
    _ident(service, sender_service_her_id, "HER")
    receiver_org = _sub(_sub(info, "Receiver"), "Organisation")
    _sub(receiver_org, "OrganisationName", receiver_name)
    _ident(receiver_org, receiver_her_id, "HER")
    refdoc = _sub(_sub(root, "Document"), "RefDoc")
    _sub(refdoc, "MsgType", V="XML", DN="XML-instans")
    if compression is not None:
        _sub(refdoc, "MimeType", COMPRESSED_MIME_TYPE)
        _sub(refdoc, "Compression", V=compression, DN=COMPRESSION_DN)
    _sub(refdoc, "Content")
    etree.indent(root, space="  ")
    # Text is escaped by lxml, so the one empty Content element is the only match.
    head, tail = etree.tostring(root, encoding="UTF-8").split(_EMPTY_CONTENT)
    return b"".join((_XML_DECLARATION, head, b"<Content>", root_bytes, b"</Content>", tail, b"\n"))


_EMPTY_CONTENT = b"<Content/>"
#: XML declaration, then comments, PIs and white space (DOCTYPE deliberately absent)
_PROLOG = re.compile(rb"(?:<\?xml\s[^>]*\?>)?(?:\s+|<!--(?:[^-]|-[^-])*-->|<\?[^>]*\?>)*")
_ENCODING = re.compile(rb"""\sencoding\s*=\s*["']([^"']*)["']""")
_ROOT_START = re.compile(rb"<([A-Za-z_][\w.-]*(?::[A-Za-z_][\w.-]*)?)[\s/>]")
_DEFAULT_NAMESPACE = re.compile(rb"""\sxmlns\s*=\s*(?:"[^"]+"|'[^']+')""")
_WHITE = b" \t\r\n"


def _payload_root(payload: bytes) -> bytes:
    """The bytes of `payload`'s root element, found without parsing the document.

    The payload is one that iplosctl's export writer produced (every value escaped, every
    element closed), or a pass-through file that the plan has parsed and validated
    against its XSD (`passthrough.check_part`). So the checks here are the cheap ones
    that catch a wrong file rather than a broken writer: UTF-8, no DOCTYPE (no entity
    tricks), a root element in a default namespace of its own (so it keeps its namespace
    inside `Content`), closed at the end. With `spec.schemas` set, apply validates the
    whole MsgHead before sending anyway.
    """
    start = 3 if payload.startswith(b"\xef\xbb\xbf") else 0
    prolog = _PROLOG.match(payload, start)
    assert prolog is not None  # every part of the pattern is optional
    declared = _ENCODING.search(payload, start, prolog.end())
    if declared and declared[1].decode("ascii", "replace").lower() not in ("utf-8", "utf8"):
        raise PayloadError("payload is not UTF-8: only UTF-8 payloads can go into a MsgHead")
    pos = prolog.end()
    if payload.startswith(b"<!DOCTYPE", pos):
        raise PayloadError("payload has a DOCTYPE declaration; DTDs and entities are not accepted")
    root = _ROOT_START.match(payload, pos)
    if root is None:
        raise PayloadError("payload is not well-formed XML: it does not start with an element")
    end = _end_of_root(payload)
    closing = b"</" + root[1]
    closing_at = payload.rfind(closing, pos, end)
    tag_end = payload.find(b">", root.end() - 1)
    if closing_at != -1:
        closed_ok = payload[closing_at + len(closing) : end].strip(_WHITE) == b">"
    else:  # an empty root element, <Root .../>
        closed_ok = tag_end == end - 1 and payload[tag_end - 1 : tag_end] == b"/"
    if not closed_ok:
        raise PayloadError(
            "payload is not well-formed XML: its root element is not closed at the end"
        )
    if not _DEFAULT_NAMESPACE.search(payload, root.end() - 1, tag_end):
        raise PayloadError(
            'the payload\'s root element declares no default namespace (xmlns="..."); '
            "a MsgHead can only carry namespaced XML"
        )
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"payload is not valid UTF-8 at byte {exc.start}") from None
    return payload[pos:end]


def payload_root(payload: bytes) -> bytes:
    """The bytes of `payload` that `build_msghead` puts into Content, or PayloadError.

    For pass-through files from outside, checked at plan time: the same checks
    as the splice itself, so a file the plan accepts is one apply can carry.
    """
    return _payload_root(payload)


def _end_of_root(payload: bytes) -> int:
    """Where the root element ends: trailing white space, comments and PIs stripped."""
    end = len(payload)
    while True:
        while end and payload[end - 1] in _WHITE:
            end -= 1
        if payload.endswith(b"-->", 0, end):
            end = max(payload.rfind(b"<!--", 0, end), 0)
        elif payload.endswith(b"?>", 0, end):
            end = max(payload.rfind(b"<?", 0, end), 0)
        else:
            return end


# --- schemas --------------------------------------------------------------------------------


_URL_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]+:")


class _OfflineResolver(etree.Resolver):
    """Refuses every non-file URL while schemas compile: validation must not use the network."""

    def __init__(self) -> None:
        super().__init__()
        self.refused: list[str] = []

    def resolve(
        self, system_url: str | None, public_id: str | None, context: object
    ) -> _InputDocument | None:
        if (
            system_url
            and _URL_SCHEME.match(system_url)
            and not system_url.lower().startswith("file:")
        ):
            self.refused.append(system_url)
            return self.resolve_string("<refused/>", context)
        return None


def _target_namespace(xsd: Path) -> str:
    try:
        root = etree.parse(str(xsd), parser=safe_parser()).getroot()
    except (OSError, etree.XMLSyntaxError) as exc:
        raise PayloadError(f"cannot read schema {xsd}: {_sanitise(str(exc))}") from None
    namespace = root.get("targetNamespace")
    if not namespace:
        raise PayloadError(f"schema {xsd} has no targetNamespace; Content needs namespaced XML")
    return namespace


def load_schemas(schema_dir: Path, extra_xsds: Sequence[Path]) -> etree.XMLSchema:
    """MsgHead v1.2 and the payload XSDs compiled as one schema set, without network.

    A tiny wrapper schema imports each file by absolute file URI, so MsgHead's strict
    `Content` wildcard finds the payload's root element declaration.
    """
    msghead = Path(schema_dir) / MSGHEAD_XSD
    if not msghead.is_file():
        raise PayloadError(
            f"{MSGHEAD_XSD} not found in {schema_dir}; point the schema directory at the "
            "folder holding the KITH XSDs"
        )
    imports = [(MSGHEAD_NS, msghead.resolve())]
    for xsd in extra_xsds:
        imports.append((_target_namespace(Path(xsd)), Path(xsd).resolve()))
    lines = [
        f"  <xs:import namespace={quoteattr(ns)} schemaLocation={quoteattr(path.as_uri())}/>"
        for ns, path in imports
    ]
    wrapper = (
        '<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">\n' + "\n".join(lines) + "\n"
        "</xs:schema>\n"
    )
    parser = safe_parser()
    resolver = _OfflineResolver()
    parser.resolvers.add(resolver)
    doc = etree.fromstring(
        wrapper.encode(),
        parser=parser,
        base_url=(msghead.resolve().parent / "_iplosctl-schema-set.xsd").as_uri(),
    )
    try:
        schema = etree.XMLSchema(doc)
    except etree.XMLSchemaParseError as exc:
        problem: str | None = " ".join(str(exc).split())
    else:
        problem = None
    # libxml2 treats an import it could not load as a warning, so check the resolver first.
    if resolver.refused:
        raise PayloadError(
            f"a schema tries to load {resolver.refused[0]}; validation runs offline, "
            "so put that file next to the others and import it by relative path"
        )
    if problem is not None:
        raise PayloadError(f"schemas in {schema_dir} do not compile: {problem}")
    return schema


def validate_msghead(xml: bytes, schema: etree.XMLSchema) -> None:
    """Raise PayloadError for the first schema violation, by line, without echoing data."""
    root = parse_document(xml, "MsgHead")
    if schema.validate(root.getroottree()):
        return
    errors = list(schema.error_log)
    first = errors[0]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    reason = schema_reason(first.message)
    raise PayloadError(f"MsgHead line {first.line}: does not match the schema: {reason}{more}")


# --- reading --------------------------------------------------------------------------------


@dataclass(frozen=True)
class MsgHeadInfo:
    """What a receiver needs from a MsgHead: routing, correlation and the payload."""

    msg_type: str
    msg_id: str
    #: naive when the sender wrote no zone
    gen_date: dt.datetime
    ack_requested: bool
    #: HER-ids from the outer Organisation inwards (virksomhet, then service)
    sender_her_ids: tuple[str, ...]
    receiver_her_ids: tuple[str, ...]
    #: the Content's root element as a standalone UTF-8 XML document
    payload: bytes

    @property
    def sender_her_id(self) -> str:
        """The most specific sender HER-id: the service AppRecs go back to."""
        return self.sender_her_ids[-1]

    @property
    def receiver_her_id(self) -> str:
        """The most specific receiver HER-id."""
        return self.receiver_her_ids[-1]


def _her_ids(org: etree._Element | None) -> tuple[str, ...]:
    out: list[str] = []
    while org is not None:
        for ident in org.findall(_M + "Ident"):
            type_id = ident.find(_M + "TypeId")
            value = ident.findtext(_M + "Id")
            if type_id is not None and type_id.get("V") == "HER" and value:
                out.append(value.strip())
        org = org.find(_M + "Organisation")
    return tuple(out)


def parse_msghead(xml: bytes) -> MsgHeadInfo:
    """Routing facts and the payload of a MsgHead (validate it first for full checks)."""
    root = parse_document(xml, "MsgHead")
    if root.tag != _M + "MsgHead":
        raise PayloadError(
            f"document root is {etree.QName(root).localname} in "
            f"{etree.QName(root).namespace or 'no namespace'}; expected MsgHead in {MSGHEAD_NS}"
        )
    info = root.find(_M + "MsgInfo")
    if info is None:
        raise PayloadError("MsgHead has no MsgInfo; the sender's message is incomplete")

    def required(path: str, attr: str | None = None) -> str:
        el = info.find(path)
        value = None if el is None else (el.get(attr) if attr else el.text)
        if not value or not value.strip():
            what = path.replace(_M, "") + (f"/@{attr}" if attr else "")
            raise PayloadError(f"MsgHead lacks MsgInfo/{what}; the sender's message is incomplete")
        return value.strip()

    msg_type = required(_M + "Type", "V")
    msg_id = required(_M + "MsgId")
    try:
        gen_date = dt.datetime.fromisoformat(required(_M + "GenDate"))
    except ValueError:
        raise PayloadError(
            "MsgHead GenDate is not an xs:dateTime; the message is malformed"
        ) from None
    ack = info.find(_M + "Ack")
    sender = _her_ids(info.find(f"{_M}Sender/{_M}Organisation"))
    receiver = _her_ids(info.find(f"{_M}Receiver/{_M}Organisation"))
    if not sender or not receiver:
        side = "Sender" if not sender else "Receiver"
        raise PayloadError(f"MsgHead {side} has no HER-id; service-based addressing needs one")
    contents = root.findall(f"{_M}Document/{_M}RefDoc/{_M}Content")
    if len(contents) != 1:
        raise PayloadError(
            f"MsgHead has {len(contents)} Document/RefDoc/Content elements; expected exactly one"
        )
    children = [c for c in contents[0] if isinstance(c.tag, str)]
    if len(children) != 1:
        raise PayloadError(
            f"MsgHead Content holds {len(children)} elements; expected one payload document"
        )
    ref_doc = contents[0].getparent()
    assert ref_doc is not None  # found as RefDoc/Content just above
    compression = ref_doc.find(_M + "Compression")
    if compression is not None:
        payload = _decompressed(children[0], compression.get("V") or "")
    else:
        payload = _standalone(children[0])
    return MsgHeadInfo(
        msg_type=msg_type,
        msg_id=msg_id,
        gen_date=gen_date,
        ack_requested=ack is not None and ack.get("V") == "J",
        sender_her_ids=sender,
        receiver_her_ids=receiver,
        payload=payload,
    )


def _decompressed(element: etree._Element, code: str) -> bytes:
    """The document a compressed `RefDoc` carries: base64 in a Base64Container, inflated."""
    if element.tag != f"{{{BASE64_CONTAINER_NS}}}Base64Container":
        raise PayloadError(
            "MsgHead RefDoc says Compression but its Content is not a Base64Container"
        )
    return decompress_content(element.text or "", code)


def _standalone(element: etree._Element) -> bytes:
    """`element` as its own document, keeping only the namespaces it uses."""
    copy = etree.fromstring(etree.tostring(element), parser=safe_parser())
    etree.cleanup_namespaces(copy)
    return _XML_DECLARATION + etree.tostring(copy, encoding="UTF-8") + b"\n"
