"""What every check shares: the violation, and how a user-facing error must look."""

from __future__ import annotations

import re
import typing
from collections.abc import Iterable, Sequence

from iplosctl.errors import IplosctlError
from iplosctl.records import Recipient
from iplosctl.rules.engine import Severity

SEVERITIES: frozenset[str] = frozenset(typing.get_args(Severity))
#: a rule id as manifests write it in `spec.rules`: lower case words joined by hyphens
RULE_ID = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")


class ContractViolation(AssertionError):
    """A plugin broke a promise of its kind's contract; the message says which."""


def fail(plugin: str, message: str) -> ContractViolation:
    return ContractViolation(f"{plugin}: {message}")


def one_line(text: str) -> bool:
    return "\n" not in text.strip() and "Traceback" not in text


def leaks(text: str, secrets: Iterable[str]) -> list[str]:
    return sorted({s for s in secrets if s and s in text})


def error_lines(exc: BaseException) -> list[str]:
    """What the CLI prints for `exc` (IplosctlError.lines), else str(exc)."""
    if isinstance(exc, IplosctlError):
        return exc.lines()
    return [str(exc)]


def check_user_error(
    plugin: str, what: str, exc: BaseException, *, secrets: Iterable[str], names: Sequence[str]
) -> None:
    """One line per problem, naming the input, carrying no personal data or secret."""
    lines = error_lines(exc)
    text = "\n".join(lines)
    if not lines or not all(line.strip() for line in lines):
        raise fail(plugin, f"{what}: the error has an empty message")
    for line in lines:
        if not one_line(line):
            raise fail(plugin, f"{what}: an error line spans several lines: {line!r}")
    leaked = leaks(text, secrets)
    if leaked:
        raise fail(
            plugin,
            f"{what}: the error message shows {len(leaked)} value(s) it must never show "
            "(a person id, a name or a password); refer to records by index",
        )
    if names and not any(name in text for name in names):
        raise fail(plugin, f"{what}: the error does not name {' or '.join(names)}: {text!r}")


def person_values(records: Iterable[Recipient]) -> set[str]:
    """Everything of a record that must never leave the payload."""
    out: set[str] = set()
    for r in records:
        out.update(v for v in (r.person_id, r.name, r.local_id) if v)
    return out
