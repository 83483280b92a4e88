"""An org number printed in groups ("123 456 785") is refused naming the export, record and fix.

Issue 11: the refusal used to say "recipient 0 (line 9): service org number must
be 9 digits" without the export file, which `plan manifests/` over fifty
municipalities leaves the reader to guess.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from iplosctl.errors import SourceError
from iplosctl.plugins import SourceSpec
from iplosctl_source_csv import CsvSource
from tests.conftest import DEMO_EXPORT

FIRST_UNIT = "<OrgNumber>310000035</OrgNumber>"


def test_xml_export_names_the_file_the_record_and_the_fix(  # type: ignore[no-untyped-def]
    cli, demo_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    export = demo_copy.parent.parent / "examples" / "exports" / DEMO_EXPORT.name
    text = export.read_text(encoding="utf-8")
    line = text[: text.index(FIRST_UNIT)].count("\n") + 1
    export.write_text(text.replace(FIRST_UNIT, "<OrgNumber>310 000 035</OrgNumber>", 1))
    result = cli("plan", demo_copy, "--today", "2024-01-05")
    assert result.code == 1, result.all
    # One located line on stderr (the plan on stdout shows the submission as blocked).
    lines = [x for x in result.err.splitlines() if x.strip()]
    assert len(lines) == 1, result.all
    assert "BLOCKED" in result.out and "Traceback" not in result.all
    assert (
        f"{export.name}:{line}:1: record #1: service org number is written with spaces"
        in (lines[0])
    )
    assert "write the 9 digits alone" in lines[0]
    assert "310 000 035" not in lines[0] and not re.search(r"\d{11}", lines[0])


def test_any_unwritable_value_names_the_export_file(  # type: ignore[no-untyped-def]
    cli, demo_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    export = demo_copy.parent.parent / "examples" / "exports" / DEMO_EXPORT.name
    text = export.read_text(encoding="utf-8")
    export.write_text(text.replace(FIRST_UNIT, "<OrgNumber>31000003</OrgNumber>", 1))
    result = cli("plan", demo_copy, "--today", "2024-01-05")
    assert result.code == 1
    assert f"{export.name}:" in result.all and "record #1: service org number must be 9 digits" in (
        result.all
    )


def test_csv_export_names_the_file_line_and_fix(tmp_path: Path) -> None:
    path = tmp_path / "tjenester.csv"
    path.write_text(
        "localId;personId;code;orgNumber\nr-1;05903813050;15;310 000 027\n", encoding="utf-8"
    )
    options = {"municipality": "9999", "reportingYear": 2023, "epjSystem": "E", "epjVersion": "1"}
    with pytest.raises(SourceError) as info:
        list(CsvSource().read(SourceSpec(path, None, options)).recipients)
    (line,) = info.value.lines()
    assert line.startswith(f"{path}:2:1: orgNumber is written with spaces or dots")
    assert "123456785, not 123 456 785" in line and "310 000 027" not in line
