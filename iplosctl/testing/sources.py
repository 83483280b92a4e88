"""Checks for source plugins: streaming, record shape, one-line errors without persons."""

from __future__ import annotations

import dataclasses
import tracemalloc
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from iplosctl.errors import SourceError
from iplosctl.plugins import Export, FieldCoverage, SourceSpec
from iplosctl.records import ExportHeader, Recipient
from iplosctl.testing._common import check_user_error, fail, person_values


def _read(plugin: str, source: Any, spec: SourceSpec) -> Export:
    export = source.read(spec)
    if not isinstance(export, Export):
        raise fail(plugin, f"read() returned {type(export).__name__}, not iplosctl.plugins.Export")
    if not isinstance(export.header, ExportHeader):
        raise fail(
            plugin,
            f"Export.header is {type(export.header).__name__}, not iplosctl.records.ExportHeader",
        )
    recipients = export.recipients
    if isinstance(recipients, (list, tuple)) or iter(recipients) is not recipients:
        raise fail(
            plugin,
            f"Export.recipients is a {type(recipients).__name__}: it must be a one-shot "
            "iterator (a generator) that reads the export as it is consumed, not a collection",
        )
    return export


def _check_coverage(plugin: str, coverage: FieldCoverage, count: int) -> None:
    if not isinstance(coverage, FieldCoverage):
        raise fail(plugin, f"Export.coverage is {type(coverage).__name__}, not FieldCoverage")
    for key, where in coverage.mapped.items():
        if "." not in key or not isinstance(where, str):
            raise fail(
                plugin,
                f"coverage.mapped[{key!r}] must be '<item>.<field>' → an XPath or column name",
            )
    for key, present in coverage.present.items():
        item = key.split(".", 1)[0]
        if key not in coverage.mapped:
            raise fail(plugin, f"coverage.present counts {key!r}, which coverage.mapped lacks")
        if present > coverage.items.get(item, 0):
            raise fail(
                plugin,
                f"coverage says {present} {item}s had {key!r} but only "
                f"{coverage.items.get(item, 0)} {item}s were read",
            )
    if "recipient" in coverage.items and coverage.items["recipient"] != count:
        raise fail(
            plugin,
            f"coverage.items['recipient'] is {coverage.items['recipient']} after {count} "
            "recipients were read",
        )
    if len(set(coverage.unread)) != len(coverage.unread):
        raise fail(plugin, "coverage.unread names a column or element more than once")


def check_source(
    source: Any,
    spec: SourceSpec,
    *,
    expected_recipients: int | None = None,
    missing_file: Path | None = None,
) -> list[Recipient]:
    """Read `spec` (a valid sample export) the way `plan` does and check every promise.

    - `name` is a non-empty string; `read` returns an `Export` whose header is an
      `ExportHeader` and whose `recipients` is a one-shot iterator of `Recipient`s
      with indices 0, 1, 2… in export order (`line`, when set, a positive int);
    - `coverage`, when set, agrees with what was read;
    - a second read gives equal records (apply re-reads and compares digests);
    - `profile_files(spec)` and `inputs(spec)`, when present, return paths;
    - a missing export (`missing_file`, default a name beside `spec.path`) is a
      `SourceError` of one line per problem that names the file, raised by `read`
      or the first record, with no personal data of the sample in it.

    Returns the records, for checks of the plugin's own.
    """
    name = getattr(source, "name", None)
    plugin = f"source {name!r}"
    if not isinstance(name, str) or not name:
        raise fail(plugin, "the plugin has no `name` (the manifest's spec.source.plugin)")
    export = _read(plugin, source, spec)
    records: list[Recipient] = []
    for position, record in enumerate(export.recipients):
        if not isinstance(record, Recipient):
            raise fail(
                plugin, f"record {position} is {type(record).__name__}, not iplosctl.Recipient"
            )
        if record.index != position:
            raise fail(
                plugin,
                f"record {position} has index {record.index}: indices are 0-based positions "
                "in the export, in order",
            )
        if record.line is not None and (not isinstance(record.line, int) or record.line < 1):
            raise fail(plugin, f"record {position} has line {record.line!r}: 1-based or None")
        records.append(record)
    if expected_recipients is not None and len(records) != expected_recipients:
        raise fail(
            plugin,
            f"read {len(records)} recipients from {spec.path}, expected {expected_recipients}",
        )
    if not records:
        raise fail(plugin, f"the sample {spec.path} gave no recipients: use a non-empty sample")
    if export.coverage is not None:
        _check_coverage(plugin, export.coverage, len(records))
    again = _read(plugin, source, spec)
    if again.header != export.header or list(again.recipients) != records:
        raise fail(plugin, "a second read of the same export gave other records")
    for hook in ("profile_files", "inputs"):
        method = getattr(source, hook, None)
        if callable(method):
            paths = method(spec)
            if paths is None or not all(isinstance(p, Path) for p in paths):
                raise fail(plugin, f"{hook}(spec) must return a sequence of pathlib.Path")
    missing = missing_file or spec.path.with_name(
        f"missing-{uuid.uuid4().hex[:8]}{spec.path.suffix}"
    )
    _expect_source_error(
        plugin,
        source,
        dataclasses.replace(spec, path=missing),
        "a missing export",
        secrets=person_values(records),
        names=(missing.name,),
    )
    return records


def _expect_source_error(
    plugin: str,
    source: Any,
    spec: SourceSpec,
    what: str,
    *,
    secrets: Iterable[str],
    names: Sequence[str],
) -> SourceError:
    try:
        export = source.read(spec)
        for _ in export.recipients:
            pass
    except SourceError as exc:
        check_user_error(plugin, what, exc, secrets=secrets, names=names)
        return exc
    except Exception as exc:
        raise fail(
            plugin,
            f"{what} raised {type(exc).__name__}, not iplosctl.errors.SourceError (the user "
            "would see a crash log instead of a one-line error)",
        ) from exc
    raise fail(plugin, f"{what} was read without a SourceError")


def check_source_rejects(
    source: Any, spec: SourceSpec, *, planted: Iterable[str] = ()
) -> SourceError:
    """A bad export (`spec`) is a SourceError, raised by `read` or while streaming.

    The error names the file, has one line per problem and shows none of
    `planted` (person ids or names the test put into the bad export). Returns
    the error so the plugin's own test can check its wording.
    """
    plugin = f"source {getattr(source, 'name', type(source).__name__)!r}"
    return _expect_source_error(
        plugin,
        source,
        spec,
        f"the bad export {spec.path.name}",
        secrets=planted,
        names=(spec.path.name,),
    )


def check_source_streams(source: Any, spec: SourceSpec, *, factor: float = 4.0) -> None:
    """`read` plus the first record must use `factor` times less memory than reading all.

    `spec` is a sample large enough that holding every record shows (a few
    thousand recipients): a source that builds a list in `read`, or parses the
    whole file before yielding, fails.
    """
    plugin = f"source {getattr(source, 'name', type(source).__name__)!r}"
    already = tracemalloc.is_tracing()
    if not already:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        export = _read(plugin, source, spec)
        first = next(export.recipients, None)
        _, first_peak = tracemalloc.get_traced_memory()
        if first is None:
            raise fail(plugin, f"the streaming sample {spec.path} has no recipients")
        rest = list(export.recipients)
        _, all_peak = tracemalloc.get_traced_memory()
    finally:
        if not already:
            tracemalloc.stop()
    if len(rest) < 999:
        raise fail(plugin, f"the streaming sample has {len(rest) + 1} recipients: use ≥ 1000")
    if first_peak * factor > all_peak:
        raise fail(
            plugin,
            f"read() and the first record peaked at {first_peak} bytes, reading all "
            f"{len(rest) + 1} at {all_peak}: recipients must stream, not be built up front",
        )
