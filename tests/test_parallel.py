"""`plan` and `apply` with `-j`: parallel processes, the output and exit code of `-j 1`.

Real manifests, real exports from `sandbox generate`, the embedded sandbox register: the
workers are real `spawn` processes, so a result that does not pickle or an order that
depends on which worker finishes first fails here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from iplosctl import lockfile as lf
from iplosctl.sandbox.generate import generate_export
from tests.conftest import DEMO_MANIFEST

TODAY = "2024-01-05"
COUNT = 5


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Five municipalities of different sizes: one blocked (obsolete housing code), one whose
    manifest points at an export that is not there, three that plan to submit."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("IPLOSCTL_STATE_DIR", str(tmp_path / "state"))
    manifests = tmp_path / "manifests"
    exports = tmp_path / "exports"
    manifests.mkdir()
    exports.mkdir()
    template = DEMO_MANIFEST.read_text()
    for i in range(COUNT):
        name = f"kommune-{i}-2023"
        export = exports / f"{name}.xml"
        if i != 3:  # kommune-3's export is missing: a broken manifest
            generate_export(export, recipients=[300, 20, 150, 0, 40][i], seed=i)
        if i == 1:
            export.write_text(
                export.read_text().replace('<Service code="15">', '<Service code="13">', 1)
            )
        text = (
            template.replace("name: demo-2023", f"name: {name}")
            .replace("../examples/exports/demo-2023.xml", f"../exports/{name}.xml")
            .replace("herId: 900100", f"herId: 9001{i}0")  # each its own queues
            .replace("serviceHerId: 900101", f"serviceHerId: 9001{i}1")
        )
        (manifests / f"{name}.yaml").write_text(text)
    return tmp_path


@pytest.mark.parametrize("fmt", ["text", "markdown", "json"])
def test_plan_j2_prints_what_j1_prints(cli, repo: Path, fmt: str) -> None:
    runs = [
        cli("plan", "--format", fmt, "--today", TODAY, "-j", jobs, repo / "manifests")
        for jobs in ("1", "2", "1", "2")  # cold cache, then warm
    ]
    outs = [_without_creation_time(r.out) for r in runs]
    assert outs[0] == outs[1] == outs[2] == outs[3]
    assert [r.err for r in runs] == [runs[0].err] * 4
    assert {r.code for r in runs} == {1}  # blocked and broken: 1, as with one process
    assert "kommune-3-2023" in runs[0].all and "kommune-1-2023" in runs[0].out
    assert runs[0].out.index("kommune-0-2023") < runs[0].out.index("kommune-4-2023")


def test_plan_detailed_exitcode_and_saved_plan_do_not_depend_on_jobs(cli, repo: Path) -> None:
    good = ["--only", "kommune-0-2023", "--only", "kommune-2-2023", "--only", "kommune-4-2023"]
    codes = []
    saved = []
    for jobs in ("1", "2"):
        out = repo / f"plan-{jobs}.json"
        run = cli("plan", "--detailed-exitcode", "-j", jobs, "--today", TODAY, *good,
                  "--out", out, repo / "manifests")  # fmt: skip
        codes.append(run.code)
        saved.append(_without_creation_time(out.read_text()))
    assert codes == [2, 2]
    assert saved[0] == saved[1]


def test_apply_j2_sends_each_submission_once(cli, repo: Path) -> None:
    (repo / "manifests" / "kommune-3-2023.yaml").unlink()  # the broken one: tested above
    (repo / "manifests" / "kommune-1-2023.yaml").unlink()  # and the blocked one
    sent = cli("apply", "--auto-approve", "-j", "2", "--today", TODAY, repo / "manifests")
    assert sent.code == 0, sent.all
    msg_ids = re.findall(r"msgId (\S+)", sent.out)
    names = [line.split(":")[0] for line in sent.out.splitlines() if " sent " in line]
    assert names == sorted(names) and len(set(names)) == 3  # in the order of -j 1
    assert len(msg_ids) == len(set(msg_ids)) == len(names)
    for i in (0, 2, 4):
        lock = lf.load(repo / "manifests" / f"kommune-{i}-2023.lock.yaml")
        assert lock is not None and len(lock.attempts) == 1
        assert lock.attempts[0].states == {"sent"}
    receipts = cli("receipts", "--wait", "60s", repo / "manifests")
    assert receipts.code == 0, receipts.all
    again = cli("apply", "--auto-approve", "-j", "2", "--today", TODAY, repo / "manifests")
    assert again.code == 0, again.all
    assert "msgId" not in again.out  # accepted: nothing is sent twice
    for i in (0, 2, 4):
        lock = lf.load(repo / "manifests" / f"kommune-{i}-2023.lock.yaml")
        assert lock is not None and len(lock.attempts) == 1
        assert lock.attempts[0].states == {"accepted"}


def test_apply_j2_with_a_broken_manifest_exits_1_and_sends_the_others(cli, repo: Path) -> None:
    (repo / "manifests" / "kommune-1-2023.yaml").unlink()
    run = cli("apply", "--auto-approve", "-j", "2", "--today", TODAY, repo / "manifests")
    assert run.code == 1
    assert "kommune-3-2023" in run.err
    assert sorted(set(re.findall(r"(kommune-\d)-2023: sent", run.out))) == [
        "kommune-0",
        "kommune-2",
        "kommune-4",
    ]


def _without_creation_time(text: str) -> str:
    """A plan's `createdAt` is the clock's: the one field two runs may differ in."""
    if not text.lstrip().startswith("{"):
        return text
    data = json.loads(text)
    data.pop("createdAt", None)
    return json.dumps(data)
