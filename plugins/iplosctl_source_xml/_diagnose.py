"""Turning a bad export into one located, privacy-safe line.

Two facts shape this module. First, libxml2's messages quote values
(`The value '0590381305' is not accepted…`, `Bytes: 0xF8 0x72`), and an export
holds person ids and names, so every message is rewritten or scrubbed before a
user sees it. Second, lxml's streaming schema validation (iterparse with
`schema=`) reports schema errors without a line, and with
`resolve_entities=False` it can even drop well-formedness errors (a truncated
file streams "successfully"). The fast pass therefore only detects that
something is wrong; `diagnose` then re-reads the file without a schema, with
every start and end event, to find what and where: depth, root element,
well-formedness, and the XSD applied to one child of the root at a time (the
child copied into a skeleton document keeps its line numbers). That second pass
costs a few seconds on a large file, and only ever runs when the export is
already known to be bad.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

from lxml import etree

from iplosctl import privacy
from iplosctl.errors import Location, Problem, SourceError
from iplosctl.formats.profile import FormatProfile, local_name

#: The parser settings for an export, shared by the streaming read and this diagnosis so
#: both see the same document: no DTD (so no entity bombs or external entities), no
#: network, libxml2's default size limits; comments and PIs are not data.
HARDENED_PARSING: dict[str, bool] = {
    "load_dtd": False,
    "no_network": True,
    "resolve_entities": False,
    "huge_tree": False,
    "remove_comments": True,
    "remove_pis": True,
}

#: how much of the file may come before the root element (XML declaration, comments)
PROLOG_LIMIT = 1 << 20
_CHUNK = 1 << 16

_ENCODING_DECL = re.compile(r"""^<\?xml[^>]*?\bencoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")
_NAME_START = re.compile(r"[A-Za-z_:\u00c0-\uffff]")
_LONG_NUMBER = re.compile(r"\d{11,}")
_CLARK = re.compile(r"\{[^}]*\}([A-Za-z_][\w.-]*)")
_BYTES = re.compile(r"\s*Bytes:(\s*0x[0-9A-Fa-f]{2})+")


def check_prolog(path: Path) -> str | None:
    """Refuse empty files, non-XML and any DOCTYPE before libxml2 sees a byte.

    A DOCTYPE is what billion-laughs bombs and external entities
    (file:///etc/passwd) need, and an export needs none, so it is refused
    outright rather than parsed carefully. Returns the declared encoding.
    """
    name = str(path)
    head = b""
    with path.open("rb") as fh:
        while len(head) < PROLOG_LIMIT:
            chunk = fh.read(_CHUNK)
            if not chunk:
                break
            head += chunk
            text = _decode_head(head)
            end = _prolog_end(text, name, complete=False)
            if end is not None:
                return _declared_encoding(text)
    text = _decode_head(head)
    if not text.strip():
        raise SourceError([Problem(Location(name, 1, 1), "the export is empty: export it again")])
    if _prolog_end(text, name, complete=True) is None:
        raise SourceError(
            [
                Problem(
                    Location(name, 1, 1),
                    f"no root element in the first {PROLOG_LIMIT // 1024} KiB: not an XML export",
                )
            ]
        )
    return _declared_encoding(text)


def _decode_head(head: bytes) -> str:
    """The prolog as text: UTF-16/32 by BOM or zero bytes, else byte-for-byte (ASCII-safe)."""
    for bom, codec in (
        (b"\xff\xfe\x00\x00", "utf-32-le"),
        (b"\x00\x00\xfe\xff", "utf-32-be"),
        (b"\xff\xfe", "utf-16-le"),
        (b"\xfe\xff", "utf-16-be"),
    ):
        if head.startswith(bom):
            body = head[len(bom) :]
            width = 4 if "32" in codec else 2
            return body[: len(body) - len(body) % width].decode(codec, errors="replace")
    if head.startswith(b"<\x00?\x00"):
        return head[: len(head) - len(head) % 2].decode("utf-16-le", errors="replace")
    if head.startswith(b"\x00<\x00?"):
        return head[: len(head) - len(head) % 2].decode("utf-16-be", errors="replace")
    return head.removeprefix(b"\xef\xbb\xbf").decode("latin-1")


def _prolog_end(text: str, name: str, *, complete: bool) -> int | None:
    """Offset of the root element's `<`, None if not seen yet; SourceError for a DOCTYPE."""
    pos = 0
    size = len(text)
    while True:
        while pos < size and text[pos] in " \t\r\n":
            pos += 1
        if pos >= size:
            return None
        if text[pos] != "<":
            raise SourceError(
                [
                    Problem(
                        _location(name, text, pos),
                        "not XML: expected '<' here: is spec.source.plugin right for this file?",
                    )
                ]
            )
        if text.startswith("<!--", pos):
            close = text.find("-->", pos + 4)
            if close < 0:
                return None
            pos = close + 3
        elif text.startswith("<?", pos):
            close = text.find("?>", pos + 2)
            if close < 0:
                return None
            pos = close + 2
        elif text.startswith("<!", pos):
            raise SourceError(
                [
                    Problem(
                        _location(name, text, pos),
                        "DOCTYPE declarations are not allowed in an export (they can expand "
                        "entities or read other files): export without a DOCTYPE",
                    )
                ]
            )
        elif pos + 1 < size and _NAME_START.match(text[pos + 1]):
            return pos
        elif pos + 1 >= size and not complete:
            return None
        else:
            raise SourceError(
                [Problem(_location(name, text, pos), "not XML: no element starts here")]
            )


def _declared_encoding(text: str) -> str | None:
    match = _ENCODING_DECL.match(text.lstrip("\ufeff"))
    return match[1] if match else None


def _location(name: str, text: str, pos: int) -> Location:
    line = text.count("\n", 0, pos) + 1
    return Location(name, line, pos - (text.rfind("\n", 0, pos) + 1) + 1)


# --- the second pass ---------------------------------------------------------------


def diagnose(
    path: Path,
    profile: FormatProfile,
    *,
    encoding: str | None,
    streaming_error: etree.XMLSyntaxError | None,
) -> SourceError:
    """The first thing wrong with `path`, as a SourceError with exactly one problem."""
    name = str(path)
    problem = _first_problem(path, profile, encoding)
    if problem is None:
        if streaming_error is not None:
            message = f"not a valid {profile.name} export: {schema_message(str(streaming_error))}"
        else:
            message = "the export ends before its root element is closed: it looks truncated"
        problem = Problem(Location(name, 1, 1), scrub(message))
    return SourceError([problem])


def _first_problem(path: Path, profile: FormatProfile, encoding: str | None) -> Problem | None:
    name = str(path)
    schema = profile.xml_schema()
    root: etree._Element | None = None
    header: etree._Element | None = None
    depth = 0
    # types-lxml cannot match a **dict of booleans to iterparse's keyword overloads
    events = etree.iterparse(str(path), events=("start", "end"), **HARDENED_PARSING)  # type: ignore[call-overload]
    try:
        for event, elem in events:
            if event == "start":
                depth += 1
                if depth > profile.max_depth:
                    return Problem(
                        Location(name, elem.sourceline or 0),
                        f"elements are nested more than {profile.max_depth} levels deep: "
                        f"this is not an {profile.name} export",
                    )
                if depth == 1:
                    root = elem
                    if elem.tag != profile.root:
                        return Problem(
                            Location(name, elem.sourceline or 0), _wrong_root(elem.tag, profile)
                        )
                continue
            depth -= 1
            if depth != 1 or root is None:
                continue
            # One child of the root is complete: validate it in a skeleton document.
            problem = _validate(name, schema, root, header, elem)
            if problem is not None:
                return problem
            if header is None and elem.tag == profile.header.tag:
                header = copy.deepcopy(elem)
            elem.clear()
            while elem.getprevious() is not None:
                del root[0]
        if root is not None:
            return _validate(name, schema, root, header, None)
    except etree.XMLSyntaxError as exc:
        return _syntax_problem(path, events.error_log, exc, encoding)
    return None


def _validate(
    name: str,
    schema: etree.XMLSchema,
    root: etree._Element,
    header: etree._Element | None,
    child: etree._Element | None,
) -> Problem | None:
    skeleton = etree.Element(root.tag, dict(root.attrib), nsmap=root.nsmap)
    if header is not None:
        skeleton.append(copy.deepcopy(header))
    if child is not None:
        skeleton.append(copy.deepcopy(child))
    try:
        schema.assertValid(skeleton)
    except etree.DocumentInvalid as exc:
        errors = exc.error_log.filter_from_errors() or exc.error_log
        first = errors[0] if len(errors) else None
        line = (first.line if first is not None else 0) or root.sourceline or 0
        text = first.message if first is not None else str(exc)
        return Problem(Location(name, line), scrub(schema_message(text)))
    return None


def _wrong_root(tag: str, profile: FormatProfile) -> str:
    expected_ns = profile.root[1:].split("}", 1)[0] if profile.root.startswith("{") else None
    ns = tag[1:].split("}", 1)[0] if tag.startswith("{") else None
    found = f"<{local_name(tag)}>" + (
        f" in namespace {ns[:80]!r}" if ns else " without a namespace"
    )
    wanted = f"<{local_name(profile.root)}>" + (
        f" in namespace {expected_ns!r}" if expected_ns else " without a namespace"
    )
    return scrub(
        f"the root element is {found}, but an {profile.name} export has {wanted}: "
        "is spec.source.format right for this file?"
    )


def _syntax_problem(
    path: Path,
    log: etree._ListErrorLog,
    exc: etree.XMLSyntaxError,
    encoding: str | None,
) -> Problem:
    errors = log.filter_from_errors()
    if len(errors):
        first = errors[0]
        kind, line, column, message = first.type_name, first.line, first.column, first.message
    else:
        # lxml's one way from an error code to its name; types-lxml leaves the method out
        kind = etree.ErrorTypes._getName(exc.code) if exc.code else ""  # type: ignore[attr-defined]
        (line, column), message = exc.position, exc.msg
    location = Location(str(path), line or 1, column or 1)
    if kind in ("ERR_INVALID_ENCODING", "ERR_UNSUPPORTED_ENCODING") or "UTF-8" in message:
        declared = encoding or "UTF-8"
        text = (
            f"bytes that are not valid {declared}, the encoding the file declares: save the "
            f"export as {declared}, or declare its real encoding "
            '(e.g. <?xml version="1.0" encoding="windows-1252"?>)'
        )
    elif kind == "ERR_DOCUMENT_EMPTY":
        text = "no XML element found: the export is empty or not XML"
    elif kind == "ERR_DOCUMENT_END":
        text = "content after the end of the document: remove it (was the export written twice?)"
    elif kind == "ERR_UNDECLARED_ENTITY":
        text = "reference to an undefined entity: write a literal '&' as '&amp;'"
    elif kind == "ERR_INVALID_CHAR" or "invalid xmlChar" in message:
        text = "a control character XML does not allow: remove it from the EPJ data"
    elif kind == "ERR_TAG_NOT_FINISHED" or _at_end_of_file(path, line, column):
        text = "the file ends in the middle of the document: it looks truncated; copy it again"
    else:
        text = f"not well-formed XML: {syntax_message(message)}"
    return Problem(location, scrub(text))


def _at_end_of_file(path: Path, line: int, column: int) -> bool:
    """Whether line:column is where the file's content stops (where a truncated file fails)."""
    lines = 0
    tail = b""
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            lines += chunk.count(b"\n")
            tail = (tail + chunk)[-(1 << 16) :]
    content = tail.rstrip()
    last_line = lines + 1 - tail[len(content) :].count(b"\n")
    last_length = len(content) - (content.rfind(b"\n") + 1)
    return line > last_line or (line == last_line and column >= last_length - 1)


# --- messages ------------------------------------------------------------------------

_SCHEMA_SHAPES: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"\[facet 'pattern'\] The value .* is not accepted by the pattern .*", re.S),
        "the value does not have the form its type requires",
    ),
    (
        re.compile(r"\[facet '(?:minLength|length)'\] The value .*", re.S),
        "the value is empty or too short",
    ),
    (re.compile(r"\[facet 'maxLength'\] The value .*", re.S), "the value is too long"),
    (
        re.compile(r"\[facet 'fractionDigits'\] The value .*", re.S),
        "the value has too many decimals",
    ),
    (
        re.compile(r"\[facet '(?:min|max)(?:In|Ex)clusive'\] The value .*", re.S),
        "the value is out of range",
    ),
    (
        re.compile(r"\[facet 'enumeration'\] The value .*", re.S),
        "the value is not one of those allowed",
    ),
    (
        re.compile(
            r".* is not a valid value of the (?:local )?(?:atomic|list|union) type '(.*)'\.?"
        ),
        "the value is not a valid {0}",
    ),
    (
        re.compile(r"The value .* does not match the fixed value constraint .*", re.S),
        "the value differs from the fixed value the schema requires",
    ),
)
_KEEP_SHAPES = (
    re.compile(r"This element is not expected\..*", re.S),
    re.compile(r"Missing child element\(s\)\..*", re.S),
    re.compile(r"The attribute '[\w.:-]+' is (?:required but missing|not allowed)\."),
    re.compile(r"Element content is not allowed, because the content type is a simple type\."),
    re.compile(r"Character content other than whitespace is not allowed.*", re.S),
)


def schema_message(message: str) -> str:
    """A libxml2 schema message with element names kept and values dropped."""
    message = message.strip().removesuffix("(<string>, line 0)").strip()
    subject = ""
    match = re.match(r"Element '([^']*)'(?:, attribute '([\w.:-]*)')?: (.*)", message, re.S)
    if match:
        subject = f"<{local_name(match[1])}>" + (f" attribute {match[2]!r}" if match[2] else "")
        message = match[3]
    text = None
    for pattern, replacement in _SCHEMA_SHAPES:
        shape = pattern.fullmatch(message)
        if shape:
            groups = [local_name(g) for g in shape.groups()]
            text = replacement.format(*groups)
            break
    if text is None:
        if any(p.fullmatch(message) for p in _KEEP_SHAPES):
            text = _CLARK.sub(r"<\1>", message).rstrip(".")
        elif "No matching global declaration" in message:
            text = "this root element is not declared by the format's schema"
        else:
            text = _hide_quoted(message)
    return scrub(f"{subject}: {text}" if subject else text)


def syntax_message(message: str) -> str:
    """A libxml2 well-formedness message without quoted text or byte dumps."""
    message = _BYTES.sub("", message.splitlines()[0] if message else "")
    message = re.sub(r",? line \d+, column \d+$", "", message)
    return scrub(_hide_quoted(message))


def _hide_quoted(message: str) -> str:
    return re.sub(r"'[^']*'|\"[^\"]*\"", "(value hidden)", message)


def scrub(message: str) -> str:
    """The last line of defence: no person id (the one scrubber, `privacy.scrub`), no other
    number of 11 digits or more, no control character, one line of at most 300 characters."""
    message = _LONG_NUMBER.sub("(number hidden)", privacy.scrub(message))
    message = re.sub(r"[\x00-\x1f\x7f]+", " ", message).strip()
    return message if len(message) <= 300 else message[:297] + "..."
