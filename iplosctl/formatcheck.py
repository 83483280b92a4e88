"""`iplosctl format check PROFILE --sample EXPORT`: the tool for writing a format profile.

A vendor or a municipality's IT person writes a profile against one real (or
test) export and wants to know, per field, whether the profile reads it: how
many records had a value, which records failed to convert (indices and lines,
never values), and which elements of the export nothing reads. The check
reads the whole sample through the source plugin's `check` (the xml source),
which counts a failing record instead of stopping at it; an export that breaks
its XSD still stops with the usual located error, since that is the export's
fault. Exit 1 when any record failed, a required field matched nothing, or the
sample has no recipients.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iplosctl import plugins
from iplosctl.coverage import PLURAL, export_findings
from iplosctl.errors import PluginError, ProfileError
from iplosctl.formats.profile import FormatProfile, load_format, load_format_file
from iplosctl.plugins import SourceSpec
from iplosctl.privacy import count_text
from iplosctl.records import record_number

#: how many failing records a line lists before "…"
SHOWN = 10


@dataclass(frozen=True)
class CheckReport:
    """The lines to print and whether the profile failed on the sample."""

    lines: tuple[str, ...]
    failed: bool


def _count(n: int) -> str:
    return count_text(n) if n < 5 else f"{n:,}"


def resolve_profile(profile: str) -> tuple[FormatProfile, str]:
    """A profile YAML by path, or a shipped one by name; with the `spec.format` to pass on."""
    path = Path(profile)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        resolved = path.resolve()
        if not resolved.is_file():
            raise ProfileError(f"format profile {profile} not found")
        return load_format_file(resolved), str(resolved)
    return load_format(profile), profile


def check_sample(profile: str, sample: Path, *, plugin: str = "xml") -> CheckReport:
    """Read `sample` through `profile` and say, per field, what was read and what failed."""
    loaded, fmt = resolve_profile(profile)  # a broken profile fails here, before the sample
    source_cls: Any = plugins.load("source", plugin)
    source = source_cls() if isinstance(source_cls, type) else source_cls
    if not hasattr(source, "check"):
        raise PluginError(f"the {plugin} source plugin cannot check a sample")
    result = source.check(SourceSpec(sample, fmt))
    cov = result.coverage
    failures: dict[str, list[tuple[int | None, int]]] = result.failures
    lines = [f"format profile {loaded.path.name} on {sample}: {_count(result.records)} recipients"]
    keys = sorted(
        {k for k in cov.present if "." in k} | set(failures),
        key=lambda k: (_ORDER.get(k.split(".")[0], 9), k),
    )
    width = max((len(k) for k in keys), default=10) + 2
    lines.append(f"  {'field':<{width}}{'with a value':>14}  {'of':>8}  failed")
    for key in keys:
        kind = key.split(".")[0]
        failed = failures.get(key, [])
        optional = "  (optional)" if key in cov.optional else ""
        lines.append(
            f"  {key:<{width}}{_count(cov.present.get(key, 0)):>14}  "
            f"{_count(cov.items.get(kind, 0)):>8}  {_failed(failed)}{optional}"
        )
    kinds = ", ".join(
        f"{_count(n)} {PLURAL.get(kind, kind)}" for kind, n in sorted(cov.items.items())
    )
    lines.append(f"items read: {kinds or 'none'}")
    if cov.unread:
        lines.append(f"elements no mapping reads: {', '.join(cov.unread)}")
    failed_recipients = {i for where in failures.values() for i, _ in where if i is not None}
    # Records that failed are not counted, so "matched nothing" would only repeat them.
    zero = (
        []
        if failures
        else export_findings(
            recipients=result.records + len(failed_recipients),
            services=cov.items.get("service", 0),
            coverage=cov,
            profile=f"the format profile {loaded.path.name}",
        )
    )
    errors = [f for f in zero if f.severity == "error"]
    for finding in zero:
        lines.append(f"{finding.severity}: {finding.message} [{finding.rule}]")
    failed_records = sum(len(v) for v in failures.values())
    if failures:
        lines.append(
            f"result: {len(failures)} field(s) failed in {failed_records} place(s): "
            f"fix the profile {loaded.path.name} (the export passed its XSD)"
        )
    elif errors:
        lines.append(f"result: the profile {loaded.path.name} matched nothing where it must")
    else:
        lines.append(f"result: the profile {loaded.path.name} reads every record of the sample")
    return CheckReport(tuple(lines), bool(failures or errors))


_ORDER = {"recipient": 0, "service": 1, "assessment": 2, "diagnosis": 3}


def _failed(where: list[tuple[int | None, int]]) -> str:
    if not where:
        return "0"
    shown = ", ".join(
        f"record {record_number(index)} (line {line})" if index is not None else f"line {line}"
        for index, line in where[:SHOWN]
    )
    more = f", … {len(where) - SHOWN} more" if len(where) > SHOWN else ""
    return f"{len(where)}: {shown}{more}"
