"""No person id or name leaves the payload (DESIGN.md §5): plant them, scan every output."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest

from tests.conftest import planted_person_id

PLANTED_IDS = [planted_person_id("178955"), planted_person_id("239147")]  # valid Test-Norge numbers
PLANTED_BAD_ID = PLANTED_IDS[1][:10] + str((int(PLANTED_IDS[1][10]) + 1) % 10)  # wrong k2
PLANTED_NAMES = ["Kari Plantesen", "Donald Duck"]


def _recipient(local: str, pid: str, name: str, code: str = "15") -> str:
    return (
        f"  <Recipient>\n    <LocalId>{local}</LocalId>\n    <PersonId>{pid}</PersonId>\n"
        f'    <Name>{name}</Name>\n    <Service code="{code}"><From>2023-02-01</From>'
        f"<OrgNumber>310000027</OrgNumber></Service>\n  </Recipient>\n"
    )


@pytest.fixture
def planted(demo_copy: Path) -> Path:
    export = demo_copy.parent.parent / "examples" / "exports" / "demo-2023.xml"
    text = export.read_text()
    extra = (
        _recipient("p-1", PLANTED_IDS[0], PLANTED_NAMES[0])
        + _recipient("p-2", PLANTED_BAD_ID, "Ola Planted", code="21")
        + _recipient("p-3", PLANTED_IDS[1], PLANTED_NAMES[1])
    )
    export.write_text(text.replace("</IplosExport>", extra + "</IplosExport>"))
    return demo_copy


def _id_forms(pid: str) -> list[str]:
    """A person id as free text may write it: `01018012345`, `010180 12345`, `010180.12345`…"""
    return [pid[:6] + sep + pid[6:] for sep in ("", " ", ".", "-", "/")]


def _assert_clean(text: str, where: str) -> None:
    ids = [form for pid in (*PLANTED_IDS, PLANTED_BAD_ID) for form in _id_forms(pid)]
    for value in [*ids, *PLANTED_NAMES, "Ola Planted", "Plantesen"]:
        assert value not in text, f"{value!r} leaked into {where}"


def test_plan_outputs_hold_no_personal_data(
    cli, planted: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    saved = tmp_path / "plan.json"
    seen = []
    for fmt in ("text", "markdown", "json"):
        result = cli("plan", "--format", fmt, "--out", saved, planted)
        assert result.code == 1  # the bad id blocks
        _assert_clean(result.all, f"plan --format {fmt}")
        seen.append(result.all)
        _assert_clean(saved.read_text(), "the saved plan")
    assert "fødselsnummer/D-number with wrong check digits" in seen[0]
    assert "test person excluded" in seen[0]
    for path in cache.rglob("*"):
        if path.is_file():
            _assert_clean(path.read_text(), f"the plan cache {path.name}")


def test_validate_and_status_like_outputs_hold_no_personal_data(cli, planted: Path) -> None:
    _assert_clean(cli("validate", planted).all, "validate")


def test_apply_receipts_status_and_lockfile_hold_no_personal_data(
    cli, planted: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the embedded sandbox register: the lockfile, receipts and status stay clean."""
    monkeypatch.setenv("IPLOSCTL_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    # let the bad id through the pre-flight so the register's E31 comes back
    planted.write_text(planted.read_text() + '  rules: {person-id: "off"}\n')
    outputs = [
        cli("apply", "--auto-approve", planted),
        cli("receipts", "--wait", "20s", planted),
        cli("status", planted),
        cli("status", "--format", "json", planted),
        cli("plan", "--format", "json", planted),
    ]
    assert outputs[0].code == 0, outputs[0].all
    for i, result in enumerate(outputs):
        _assert_clean(result.all, f"command {i}")
    lock_text = planted.with_name("demo-2023.lock.yaml").read_text()
    _assert_clean(lock_text, "the lockfile")
    assert "E31" in lock_text  # the register did see the bad id, and said so without it


def test_the_one_scrubber_hides_person_ids_in_every_separator_form() -> None:
    from iplosctl.privacy import scrub

    pid = planted_person_id("150591")
    for sep in ("", " ", ".", "-", "/"):
        written = pid[:6] + sep + pid[6:]
        assert scrub(f"E31: id {written} unknown") == "E31: id [id] unknown"
    # Longer numbers (an account, a msg id fragment) and short codes stay.
    assert scrub("ref 123456789012 code 9151") == "ref 123456789012 code 9151"
    assert scrub("a\x00b\x1bc") == "a b c"


def _bundle_text(path: Path) -> str:
    with zipfile.ZipFile(path) as zf:
        return "\n".join(zf.read(name).decode("utf-8") for name in zf.namelist())


@pytest.mark.parametrize("behaviour", ["quote-ids", "error-queue,quote-ids"])
def test_register_texts_quoting_an_id_are_scrubbed_everywhere(
    cli, planted: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, behaviour: str
) -> None:
    """The sandbox register quotes the bad id as `DDMMYY.NNNNN` in AppRec DN and OT, or in an
    error-queue description and data: lockfile, plan (text, markdown, json), receipts, status
    and the support bundle show it only scrubbed (issue 12)."""
    monkeypatch.setenv("IPLOSCTL_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("IPLOSCTL_SANDBOX_BEHAVIOUR", behaviour)
    planted.write_text(planted.read_text() + '  rules: {person-id: "off"}\n')
    applied = cli("apply", "--auto-approve", planted)
    assert applied.code == 0, applied.all
    bundle = tmp_path / "bundle.zip"
    outputs = {
        "receipts": cli("receipts", "--wait", "20s", planted),
        "status": cli("status", planted),
        "status json": cli("status", "--format", "json", planted),
        "plan text": cli("plan", planted),
        "plan markdown": cli("plan", "--format", "markdown", planted),
        "plan json": cli("plan", "--format", "json", planted),
        "support-bundle": cli("support-bundle", "--out", bundle, planted),
    }
    for where, result in outputs.items():
        _assert_clean(result.all, where)
    lock_text = planted.with_name("demo-2023.lock.yaml").read_text()
    _assert_clean(lock_text, "the lockfile")
    _assert_clean(_bundle_text(bundle), "the support bundle")
    # the register did quote the id, and what it said arrived scrubbed, not dropped
    assert "[id]" in lock_text
    if behaviour == "quote-ids":
        assert "E31" in lock_text
        assert "[id]" in outputs["plan text"].out and "E31" in outputs["plan markdown"].out
        assert "[id]" in outputs["receipts"].out
    else:
        assert "transport:internal-error" in lock_text
        assert "[id]" in outputs["plan json"].out


@pytest.mark.broker
def test_broker_error_strings_are_scrubbed(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RabbitMQ's own words (`no queue '…'`) quote whatever they were given: an id-shaped
    queue name comes back scrubbed from apply, and none of it reaches plan, status or the
    lockfile."""
    from iplosctl.sandbox.pki import generate_pki
    from tests import broker
    from tests.conftest import DEMO_EXPORT
    from tests.test_apply import TODAY, manifest_text

    monkeypatch.setenv("IPLOSCTL_SECRET_AMQP_TEST", broker.PASSWORD)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("IPLOSCTL_STATE_DIR", str(tmp_path / "state"))
    queue = f"kpr-{PLANTED_IDS[0][:6]}.{PLANTED_IDS[0][6:]}"  # never declared on the broker
    (tmp_path / "manifests").mkdir()
    (tmp_path / "exports").mkdir()
    shutil.copy(DEMO_EXPORT, tmp_path / "exports" / "kommune-2023.xml")
    generate_pki(tmp_path / "pki")
    manifest = tmp_path / "manifests" / "kommune-2023.yaml"
    manifest.write_text(manifest_text(queue, 7_100_001))
    applied = cli("apply", "--auto-approve", "--today", TODAY, manifest)
    assert applied.code == 1
    assert "no queue 'kpr-[id]'" in applied.err, applied.err  # the broker's words, scrubbed
    _assert_clean(applied.all, "apply's broker error")
    # (plan and status show the configured queue by design: that is the manifest, not
    # the broker's text; what the broker said reaches neither, nor the lockfile)
    for args in (("plan", "--today", TODAY), ("status", "--today", TODAY)):
        assert "no queue" not in cli(*args, manifest).all
    # The unknown queue is found by prepare(), before anything is journaled (issue 13):
    # there is no lockfile for the broker's words to reach.
    assert not manifest.with_name("kommune-2023.lock.yaml").exists()
