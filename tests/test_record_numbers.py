"""Records are numbered from 1 wherever users see them, like the lines beside them (issue 13,
item 12): findings in text and json, the source's errors, and plan caches written before."""

from __future__ import annotations

import json
from pathlib import Path

from iplosctl.records import record_number
from iplosctl.rules import Finding, RecordRef


def test_a_record_ref_shows_its_1_based_number_and_round_trips() -> None:
    first = RecordRef(0, 10)
    assert record_number(0) == 1
    assert str(first) == "#1 (line 10)" and str(RecordRef(4)) == "#5"
    finding = Finding("housing-code", "error", "unknown housing code", 1, (first,))
    assert finding.as_dict()["records"] == [{"record": 1, "line": 10}]
    assert RecordRef.from_dict({"record": 1, "line": 10}) == first
    # a plan cache written before records were numbered from 1 still reads back
    assert RecordRef.from_dict({"index": 0, "line": 10}) == first


def test_the_first_recipient_is_record_1_in_the_plan(cli, demo_copy: Path) -> None:  # type: ignore[no-untyped-def]
    """The demo's test persons are its 25th and 29th recipients: records #25 and #29."""
    export = demo_copy.parent.parent / "examples" / "exports" / "demo-2023.xml"
    result = cli("plan", "--format", "json", "--today", "2024-01-05", demo_copy)
    (s,) = json.loads(result.out)["submissions"]
    (test_person,) = [f for f in s["findings"] if f["rule"] == "test-person"]
    lines = export.read_text(encoding="utf-8").splitlines()
    starts = [n for n, line in enumerate(lines, start=1) if "<Recipient" in line]
    for ref in test_person["records"]:
        assert starts[ref["record"] - 1] <= ref["line"]  # the record-th recipient's element
        assert ref["record"] == len([n for n in starts if n <= ref["line"]])
    text = cli("plan", "--today", "2024-01-05", demo_copy).out
    shown = ", ".join(f"#{r['record']} (line {r['line']})" for r in test_person["records"])
    assert shown in text
