"""A municipality of Oslo's size (45,000 recipients) plans and sends through the sandbox
(issue 13, item 10): KPR_IPL is about 38 MB, over NHN's 20 MB limit, so the plan says it
goes compressed (RefDoc/Compression) and to what size; apply of the saved plan reads the
export once, sends both parts, and the sandbox register decompresses, checks and accepts
them. Offline: the embedded register on a loopback port, no broker.

Slow (generating and streaming 40 MB several times takes most of a minute on a loaded
machine), so marked `slow`, but `make test` runs it like any other test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from iplosctl import lockfile as lf
from iplosctl import plugins
from iplosctl.sandbox.generate import generate_export

pytestmark = pytest.mark.slow
RECIPIENTS = 45_000
LIMIT = 20_000_000  # the 2023 profile's message size limit


def test_oslo_sized_submission_plans_compressed_and_is_accepted_by_the_sandbox(
    cli, demo_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IPLOSCTL_STATE_DIR", str(tmp_path / "sandbox-state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    export = demo_copy.parent.parent / "examples" / "exports" / "demo-2023.xml"
    generate_export(export, recipients=RECIPIENTS, seed=7)

    saved = tmp_path / "plan.json"
    planned = cli("plan", "--format", "json", "--out", saved, demo_copy)
    assert planned.code == 0, planned.all
    (s,) = json.loads(planned.out)["submissions"]
    assert s["action"] == "submit" and s["summary"]["recipients"] == RECIPIENTS
    parts = {p["type"]: p for p in s["parts"]}
    ipl, ide = parts["KPR_IPL"], parts["KPR_IDE"]
    assert ipl["compression"] == "gzip" and ipl["sentBytes"] < LIMIT < ipl["sizeBytes"]
    assert "compression" not in ide and ide["sizeBytes"] < LIMIT  # fits: sent as before
    assert any(
        f["rule"] == "message-size" and "compressed to" in f["message"] for f in s["findings"]
    )

    reads: list[Path] = []
    source = plugins.load("source", "xml")
    real_read = source.read

    def counting_read(self, spec):  # type: ignore[no-untyped-def]
        reads.append(Path(spec.path))
        return real_read(self, spec)

    monkeypatch.setattr(source, "read", counting_read)
    applied = cli("apply", saved)
    assert applied.code == 0, applied.all
    assert len(reads) == 1, "apply must read the export once"
    assert "sent KPR_IPL" in applied.out and "sent KPR_IDE" in applied.out

    receipts = cli("receipts", "--wait", "3m", demo_copy)
    assert receipts.code == 0, receipts.all
    lock = lf.load(demo_copy.with_name("demo-2023.lock.yaml"))
    assert lock is not None
    (attempt,) = lock.attempts
    assert {p.type: p.state for p in attempt.parts} == {
        "KPR_IPL": "accepted",
        "KPR_IDE": "accepted",
    }
    sizes = {p.type: p.size_bytes for p in attempt.parts}
    assert sizes == {"KPR_IPL": ipl["sizeBytes"], "KPR_IDE": ide["sizeBytes"]}
