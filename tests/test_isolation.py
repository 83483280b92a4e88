"""One municipality's broken manifest or missing export is that submission's error only
(issue 13, items 5 and 6): the others are planned, applied, reported and bundled, the
combined exit code says something failed, and the PR comment shows the blocked one whole.
"""

from __future__ import annotations

import dataclasses
import json
import zipfile
from pathlib import Path

import pytest

from iplosctl.plan import Plan
from iplosctl.render.markdown import LIMIT, render_markdown
from iplosctl.rules import Finding, RecordRef
from iplosctl.sandbox.generate import generate_export
from tests.conftest import DEMO_MANIFEST

GOOD = ("kommune-a-2023", "kommune-b-2023", "kommune-c-2023")
MISSING = "kommune-x-2023"  # its export is not there
BROKEN = "kommune-y-2023"  # its manifest does not parse


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("IPLOSCTL_STATE_DIR", str(tmp_path / "state"))
    manifests, exports = tmp_path / "manifests", tmp_path / "exports"
    manifests.mkdir()
    exports.mkdir()
    template = DEMO_MANIFEST.read_text()
    for i, name in enumerate((*GOOD, MISSING)):
        if name != MISSING:
            generate_export(exports / f"{name}.xml", recipients=20 + i, seed=i)
        text = template.replace("name: demo-2023", f"name: {name}").replace(
            "../examples/exports/demo-2023.xml", f"../exports/{name}.xml"
        )
        (manifests / f"{name}.yaml").write_text(text)
    (manifests / f"{BROKEN}.yaml").write_text("apiVersion: iplosctl/v1\nkind: [unclosed\n")
    return tmp_path / "manifests"


def test_plan_plans_the_others_and_blocks_the_broken_ones(cli, repo: Path) -> None:
    result = cli("plan", "--format", "json", repo)
    assert result.code == 1
    data = json.loads(result.out)
    assert sorted(s["name"] for s in data["submissions"]) == list(GOOD)
    assert all(s["action"] == "submit" for s in data["submissions"])
    unplanned = {u["name"]: u for u in data["unplanned"]}
    assert set(unplanned) == {MISSING, BROKEN}
    assert unplanned[MISSING]["blocked"] is True
    assert any("does not exist" in r for r in unplanned[MISSING]["reasons"])
    assert data["summary"] == "Plan: 3 to submit, 0 to correct, 2 blocked."
    # Each problem once on stderr, located, one line, no traceback.
    assert f"{repo / MISSING}.yaml:" in result.err and "Traceback" not in result.all


def test_the_comment_shows_the_blocked_submission_and_why(cli, repo: Path) -> None:
    markdown = cli("plan", "--format", "markdown", repo)
    assert markdown.code == 1
    text = markdown.out
    assert f"| {MISSING} | ? | ? | ⛔ blocked |" in text
    section = text[text.index(f"<b>{MISSING}</b>") :]
    assert "does not exist" in section.split("</details>")[0]
    for name in GOOD:
        assert f"<b>{name}</b>" in text
    plain = cli("plan", repo)
    assert f"{MISSING}  ({repo / MISSING}.yaml): BLOCKED" in plain.out


def test_only_loads_what_it_selects(cli, repo: Path) -> None:
    result = cli("plan", "--detailed-exitcode", "--only", "kommune-a-*", repo)
    assert result.code == 2, result.all
    assert MISSING not in result.all and BROKEN not in result.all
    broken_only = cli("plan", "--only", BROKEN, repo)  # selected by its file name
    assert broken_only.code == 1 and BROKEN in broken_only.out


def test_apply_sends_the_others_and_exits_1(cli, repo: Path) -> None:
    result = cli("apply", "--auto-approve", repo)
    assert result.code == 1, result.all
    for name in GOOD:
        assert f"{name}: sent KPR_IPL" in result.out
        assert (repo / f"{name}.lock.yaml").is_file()
    assert not (repo / f"{MISSING}.lock.yaml").exists()
    assert "does not exist" in result.err


def test_status_reports_every_submission(cli, repo: Path) -> None:
    result = cli("status", "--format", "json", repo)
    assert result.code == 1
    states = {s["name"]: s["action"] for s in json.loads(result.out)["submissions"]}
    assert states == {**dict.fromkeys(GOOD, "submit"), MISSING: "error", BROKEN: "error"}
    assert cli("status", "--only", "kommune-a-*", repo).code == 0


def test_support_bundle_is_written_when_a_manifest_is_broken(cli, repo: Path) -> None:
    out = repo.parent / "bundle.zip"
    result = cli("support-bundle", "--out", out, repo)
    assert result.code == 0, result.all
    with zipfile.ZipFile(out) as zf:
        data = json.loads(zf.read("bundle.json"))
        readme = zf.read("README.txt").decode()
    assert sorted(s["name"] for s in data["submissions"]) == list(GOOD)
    unusable = {u["name"]: u for u in data["unusableManifests"]}
    assert set(unusable) == {MISSING, BROKEN}
    assert any("does not exist" in p for p in unusable[MISSING]["problems"])
    assert f"{MISSING}: the manifest" in readme


# --- the PR comment cuts the clean submissions first (issue 13, item 6) --------------


def _many(plan_one: Plan, blocked_findings: int, clean: int) -> Plan:
    base = plan_one.submissions[0]
    noisy = tuple(
        Finding(
            f"rule-{i}",
            "error",
            "a long explanation of what is wrong and how to fix it " * 3,
            900,
            tuple(RecordRef(j, j + 10) for j in range(20)),
        )
        for i in range(blocked_findings)
    )
    blocked = dataclasses.replace(base, name="blocked-one", action="blocked", findings=noisy)
    clean_ones = [
        dataclasses.replace(base, name=f"clean-{i:03d}", action="no-op", findings=())
        for i in range(clean)
    ]
    return Plan((*clean_ones, blocked))


def test_a_long_comment_keeps_the_blocked_submission_whole(cli, repo: Path) -> None:
    from iplosctl.manifest import load_manifest
    from iplosctl.plan import plan_submission

    one = Plan((plan_submission(load_manifest(repo / f"{GOOD[0]}.yaml")),))
    plan = _many(one, blocked_findings=40, clean=60)
    text = render_markdown(plan)
    assert len(text) < LIMIT
    blocked = text[text.index("<b>blocked-one</b>") :].split("</details>")[0]
    assert blocked.count("| error | `rule-") == 40  # every finding row kept
    assert "records #1 (line 10), #2 (line 11)" in blocked  # even the record lists (1-based)
    # The clean ones gave way, as many as needed: summarised to one line each.
    cut, whole = text.count("**clean-"), text.count("<b>clean-")
    assert cut > 0 and cut + whole == 60


def test_validate_reports_schema_and_environment_problems_in_one_run(cli, tmp_path: Path) -> None:
    """Issue 13, item 12: a bad org number used to hide an unknown environment until the
    next run."""
    text = DEMO_MANIFEST.read_text(encoding="utf-8")
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        text.replace('orgNumber: "310000019"', 'orgNumber: "310000018"').replace(
            "environment: sandbox", "environment: prod"
        ),
        encoding="utf-8",
    )
    result = cli("validate", "--no-files", bad)
    assert result.code == 1
    assert "spec.municipality.orgNumber" in result.err
    assert "environment 'prod' does not exist in the 2023 profile" in result.err


# --- smaller things of issue 13, item 12 --------------------------------------------


def _plan_text(env: dict[str, str]) -> str:
    import os
    import subprocess
    import sys

    iplosctl = Path(sys.executable).with_name("iplosctl")
    return subprocess.run(
        [str(iplosctl), "plan", str(DEMO_MANIFEST)],
        env={
            **{k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")},
            **env,
        },
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_plan_text_is_coloured_on_request_and_never_with_no_color(tmp_path: Path) -> None:
    base = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "IPLOSCTL_STATE_DIR": str(tmp_path)}
    coloured = _plan_text({**base, "FORCE_COLOR": "1"})
    assert "\x1b[32mSUBMIT\x1b[0m" in coloured  # green: a change to send
    assert "\x1b[32m" not in _plan_text({**base, "FORCE_COLOR": "1", "NO_COLOR": "1"})
    assert "\x1b[" not in _plan_text(base)  # not a terminal: plain text


def test_support_bundle_does_not_call_a_journaled_part_sent() -> None:
    from iplosctl.support_bundle import _attempt_text

    part = {"type": "KPR_IPL", "msgId": "m", "state": "journaled", "receipt": None}
    part["transportError"] = None
    lines = _attempt_text(
        {
            "number": 1,
            "createdAt": "2024-01-03T08:00:00Z",
            "parts": [{**part, "sentAt": None, "journaledAt": "2024-01-03T08:00:01Z"}],
        }
    )
    assert "journaled 2024-01-03T08:00:01Z, not known to be sent" in lines[1]
    assert " sent 2024" not in lines[1]


def test_secrets_set_on_a_server_without_a_usable_keyring_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import keyring
    import keyring.errors

    from iplosctl import secrets
    from iplosctl.errors import SecretError

    def locked(*_args: object) -> None:
        raise keyring.errors.KeyringLocked("no unlocked collection")

    monkeypatch.setattr(keyring, "set_password", locked)
    with pytest.raises(SecretError) as caught:
        secrets.set_secret("fjordvik-amqp", "value")
    assert "set the environment variable IPLOSCTL_SECRET_FJORDVIK_AMQP" in caught.value.message


def test_sandbox_state_follows_the_manifest_not_the_current_folder(
    cli, demo_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 13, item 9: apply from one folder and receipts from another used to wait forever
    (two sandbox registers, one per current folder)."""
    monkeypatch.delenv("IPLOSCTL_STATE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "somewhere" / "else").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "somewhere")
    assert cli("apply", "--auto-approve", demo_copy).code == 0
    monkeypatch.chdir(tmp_path / "somewhere" / "else")
    result = cli("receipts", demo_copy, "--wait", "30s")
    assert result.code == 0, result.all
    assert "KPR_IPL accepted" in result.out
    # Outside a git repository the state sits beside the manifest, never in the cwd.
    assert (demo_copy.parent / ".iplosctl" / "sandbox").is_dir()
    assert not (tmp_path / "somewhere" / ".iplosctl").exists()


def test_the_sandbox_uses_the_manifests_certificates_and_says_so(
    cli, demo_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 13, item 9: the sandbox used to ignore the manifest's certificates silently.

    The manifest's certificates come from a PKI of their own (another CA than the
    sandbox's): the register must trust the signing certificate and answer to the
    encryption certificate, and receipts must decrypt with the manifest's key."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("IPLOSCTL_STATE_DIR", str(tmp_path / "state"))
    plain = json.loads(cli("plan", "--format", "json", demo_copy).out)["submissions"][0]
    (said,) = [f for f in plain["findings"] if f["rule"] == "sandbox-certificates"]
    assert "sandbox's own test certificates (the manifest names none)" in said["message"]

    certs = tmp_path / "own-certs"
    assert cli("sandbox", "pki", "--out", certs).code == 0
    text = demo_copy.read_text(encoding="utf-8")
    demo_copy.write_text(
        text
        + "  certificates:\n"
        + f"    signing: {{certificate: {certs}/municipality-signing.pem, "
        + f"key: {certs}/municipality-signing.key}}\n"
        + f"    encryption: {{certificate: {certs}/municipality-encryption.pem, "
        + f"key: {certs}/municipality-encryption.key}}\n"
        + f"    register: {{signing: {certs}/register-signing.pem, "
        + f"encryption: {certs}/register-encryption.pem}}\n",
        encoding="utf-8",
    )
    planned = json.loads(cli("plan", "--format", "json", demo_copy).out)["submissions"][0]
    (said,) = [f for f in planned["findings"] if f["rule"] == "sandbox-certificates"]
    assert "trusts your signing certificate" in said["message"]
    assert cli("apply", "--auto-approve", demo_copy).code == 0
    receipts = cli("receipts", demo_copy, "--wait", "30s")
    assert receipts.code == 0, receipts.all
    assert "KPR_IPL accepted" in receipts.out and "KPR_IDE accepted" in receipts.out


def test_a_share_of_fewer_than_five_is_not_shown_as_if_it_were_a_count() -> None:
    """Issue 13, item 12: the assessed percentage of 3 recipients printed as `<5`."""
    from iplosctl.profiles import load_profile
    from iplosctl.records import Recipient
    from iplosctl.summary import SummaryBuilder, summary_rows

    profile = load_profile(2023)
    builder = SummaryBuilder(profile, 2023)
    for i in range(3):
        builder.add(Recipient(index=i, local_id=str(i), person_id=""))
    summary = builder.build()
    assert summary["recipients"] == "<5"
    assert summary["assessedPercent"] is None
    rows = {label: (value, delta) for label, value, delta in summary_rows(summary, None, profile)}
    assert rows["with a complete assessment (%)"] == ("not shown (<5 recipients)", "")
