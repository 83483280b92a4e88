"""JSON Schema validation that reports every violation at its line and column.

Shared by manifests and reporting-year profiles. Each jsonschema error is
turned into a `Problem` whose message names the fix rather than the schema
keyword; a subschema may carry `x-hint` to explain a pattern or format.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError

from iplosctl.errors import Location, Problem
from iplosctl.identifiers import is_valid_org_number
from iplosctl.privacy import scrub
from iplosctl.yamlio import position

FORMAT_CHECKER = FormatChecker()
#: `scheme://user:password@` (the password may hold '/' or '@': up to the last '@')
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)\S*@")
CREDENTIALS_IN_URL = (
    "holds a user name or password (not shown): never put credentials in the URL; put the "
    "user name in spec.endpoint.username and the password in the secret that "
    "spec.endpoint.credential names (iplosctl secrets set NAME, or IPLOSCTL_SECRET_<NAME> in CI)"
)


@FORMAT_CHECKER.checks("org-number")
def _org_number(value: object) -> bool:
    """Organisasjonsnummer: nine digits, mod-11 check digit (DOMAIN.md §6.2)."""
    return not isinstance(value, str) or is_valid_org_number(value)


_JSON_TYPES = {
    dict: "mapping",
    list: "list",
    str: "string",
    bool: "boolean",
    int: "integer",
    float: "number",
    type(None): "null",
}


def json_path(path: Iterable[str | int]) -> str:
    """`spec.serviceUnits[0].orgNumber` from a jsonschema path."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def schema_problems(schema: dict[str, Any], plain: Any, root: Any, filename: str) -> list[Problem]:
    """Every schema violation of `plain` (positions looked up in `root`), sorted by line."""
    validator = Draft202012Validator(schema, format_checker=FORMAT_CHECKER)
    problems: list[Problem] = []
    for error in validator.iter_errors(plain):
        problems.extend(_problems_for(error, root, filename))
    problems.sort(key=lambda p: (p.location.line, p.location.column, p.path))
    # A value can fail two keywords with one hint (pattern and format): say it once.
    return list(dict.fromkeys(problems))


def _problems_for(error: ValidationError, root: Any, filename: str) -> list[Problem]:
    path: Sequence[str | int] = list(error.absolute_path)

    def at(p: Sequence[str | int], message: str) -> Problem:
        line, col = position(root, p)
        return Problem(Location(filename, line, col), message, json_path(p))

    keyword = error.validator
    schema = error.schema if isinstance(error.schema, dict) else {}
    # Test persons' ids and names are echoed nowhere, even in a schema error.
    # nor a URL with a user or password in it (the schema refuses those: never echo one)
    show = _hidden if "testPersons" in path or _holds_credentials(error.instance) else _short
    if keyword == "additionalProperties" and isinstance(error.instance, dict):
        allowed = sorted(schema.get("properties", {}))
        extra = [k for k in error.instance if k not in allowed]
        out = []
        for key in extra:
            hint = difflib.get_close_matches(key, allowed, n=1)
            suffix = (
                f" (did you mean {hint[0]!r}?)"
                if hint
                else (f" (allowed: {', '.join(allowed)})" if allowed else "")
            )
            out.append(at([*path, key], f"unknown key {key!r}{suffix}"))
        return out
    if keyword == "required":
        missing = str(error.message).split("'")[1] if "'" in error.message else error.message
        return [at(path, f"missing required key {missing!r}")]
    if keyword == "type":
        expected = error.validator_value
        expected_text = " or ".join(expected) if isinstance(expected, list) else str(expected)
        got = _JSON_TYPES.get(type(error.instance), type(error.instance).__name__)
        return [at(path, f"expected {expected_text}, got {got} {show(error.instance)}")]
    if keyword == "enum" and isinstance(error.validator_value, list):
        choices = ", ".join(str(c) for c in error.validator_value)
        return [at(path, f"{show(error.instance)} is not one of: {choices}")]
    if keyword == "const":
        return [at(path, f"must be {error.validator_value!r}, got {show(error.instance)}")]
    if isinstance(error.instance, str) and _USERINFO.search(error.instance):
        # A password in a URL is echoed nowhere: not in CI logs, not in a support bundle.
        return [at(path, f"the URL {CREDENTIALS_IN_URL}")]
    if keyword in ("pattern", "format") and "x-hint" in schema:
        return [at(path, f"{show(error.instance)}: {schema['x-hint']}")]
    return [at(path, error.message if show is _short else f"invalid value ({keyword})")]


def _holds_credentials(value: Any) -> bool:
    """`scheme://user:password@host…`: a URL whose authority has an `@`."""
    if not isinstance(value, str) or "://" not in value:
        return False
    return "@" in value.split("://", 1)[1].split("/", 1)[0]


def _short(value: Any) -> str:
    """The value, short, for the message: without a URL's credentials or a person id."""
    text = scrub(_USERINFO.sub(r"\1***@", repr(value)))
    return text if len(text) <= 40 else text[:37] + "..."


def _hidden(value: Any) -> str:
    return "(value hidden)"
