"""Pass-through of the register's own file, and no invented format to a real register.

The register-like format here is SYNTHETIC (tests/data/synthetic-register/, not
KPR's unpublished XSD). Its two files are written from the demo export's records;
apply goes through the real parts: MsgHead, CMS sign+encrypt, the directory
transport's outbox, then `openssl cms -decrypt` and `-verify` and the official
MsgHead XSD from the shared reference folder.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path
from xml.sax.saxutils import escape

import pytest

import iplosctl_source_xml
from iplosctl import lockfile as lf
from iplosctl.errors import ManifestError, PayloadError
from iplosctl.formats import profile as format_profile
from iplosctl.manifest import load_manifest
from iplosctl.payload.msghead import MSGHEAD_XSD, load_schemas, parse_msghead, validate_msghead
from iplosctl.payload.passthrough import check_part
from iplosctl.plan import ENVELOPE_OVERHEAD_BYTES, plan_submission
from iplosctl.plugins import SourceSpec
from iplosctl.records import Recipient
from iplosctl.sandbox.pki import generate_pki
from tests.conftest import DEMO_EXPORT, DEMO_MANIFEST
from tests.manifest_text import CERTIFICATES
from tests.reference import reference_xsd_dir

DATA = Path(__file__).resolve().parent / "data" / "synthetic-register"
PROFILE = DATA / "synthetic-register-v1.yaml"
XSD = DATA / "synthetic-register-v1.xsd"
NS = "urn:iplosctl:test:synthetic-register:v1"
TODAY = "2024-01-05"
QUEUE = "kpr-passthrough"


@pytest.fixture(scope="module")
def pki_once(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pki")
    generate_pki(folder)
    return folder


@pytest.fixture(autouse=True)
def municipality_repository(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, pki_once: Path):  # type: ignore[no-untyped-def]
    """Each test's folder is a municipality's repository: the synthetic format profile and
    its XSD under `formats/` (named by a manifest-relative path, never shipped), and the
    test PKI the manifests name under `pki/`."""
    shutil.copytree(pki_once, tmp_path / "pki")
    shutil.copytree(DATA, tmp_path / "formats")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def demo_records() -> list[Recipient]:
    export = iplosctl_source_xml.XmlSource().read(SourceSpec(DEMO_EXPORT))
    return list(export.recipients)


def _header() -> str:
    return (
        "  <Hode><Kommune>9999</Kommune><Aar>2023</Aar><Fagsystem>DemoEPJ</Fagsystem>"
        "<Versjon>4.2.0</Versjon></Hode>\n"
    )


def _date(value: dt.date | None, tag: str) -> str:
    return f"<{tag}>{value.isoformat()}</{tag}>" if value else ""


DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'


def write_register_files(
    root: Path, records: Iterable[Recipient], *, prolog: str = DECLARATION
) -> tuple[Path, Path]:
    """What "the EPJ" writes in the synthetic register format: fagmelding and identmelding."""
    records = list(records)
    ipl = [prolog, f'<Fagmelding xmlns="{NS}">\n', _header()]
    ide = [prolog, f'<Identmelding xmlns="{NS}">\n', _header()]
    for r in records:
        ipl.append(f"  <Mottaker><LokalId>{escape(r.local_id)}</LokalId>")
        if r.person_id:
            ipl.append(f"<Fnr>{r.person_id}</Fnr>")
        if r.name:
            ipl.append(f"<Navn>{escape(r.name)}</Navn>")
        for s in r.services:
            ipl.append(f'<Tjeneste kode="{s.code}">')
            ipl.append(_date(s.start, "Fra") + _date(s.end, "Til"))
            if s.hours_per_week is not None:
                ipl.append(f"<Timer>{s.hours_per_week}</Timer>")
            ipl.append(_date(s.decision_date, "Vedtak"))
            if s.org_number:
                ipl.append(f"<Orgnr>{s.org_number}</Orgnr>")
            ipl.append("</Tjeneste>")
        for a in r.assessments:
            dato = f' dato="{a.date.isoformat()}"' if a.date else ""
            ipl.append(f'<Vurdering variabel="{a.variable}" skaar="{a.score}"{dato}/>')
        ipl.append("</Mottaker>\n")
        ide.append(f"  <Ident><LokalId>{escape(r.local_id)}</LokalId><Fnr>{r.person_id}</Fnr>")
        ide.append("</Ident>\n")
    ipl.append("</Fagmelding>\n")
    ide.append("</Identmelding>\n")
    (root / "exports").mkdir(parents=True, exist_ok=True)
    ipl_path, ide_path = root / "exports" / "ipl.xml", root / "exports" / "ide.xml"
    ipl_path.write_text("".join(ipl), encoding="utf-8")
    ide_path.write_text("".join(ide), encoding="utf-8")
    return ipl_path, ide_path


def schemas_folder(root: Path) -> Path:
    """The official KITH XSDs (linked, never copied into the repository) beside the payload's."""
    folder = root / "schemas"
    folder.mkdir()
    for xsd in reference_xsd_dir().glob("*.xsd"):
        (folder / xsd.name).symlink_to(xsd)
    (folder / XSD.name).symlink_to(XSD)
    return folder


def manifest_text(environment: str, source: str, extra: str = "") -> str:
    """The demo manifest in `environment`, with `source` and a directory endpoint."""
    text = DEMO_MANIFEST.read_text(encoding="utf-8")
    start = text.index("  source:")
    end = text.index("  testPersons:")
    text = text[:start] + source + text[end:]
    text = text.replace("environment: sandbox", f"environment: {environment}")
    return (
        text.rstrip("\n")
        + f"""
  endpoint: {{transport: directory, url: ../outbox, receiverQueue: {QUEUE}}}
"""
        + CERTIFICATES
        + extra
    )


PASSTHROUGH_SOURCE = """  source:
    plugin: xml
    path: ../exports/ipl.xml
    format: ../formats/synthetic-register-v1.yaml
    parts: {KPR_IDE: ../exports/ide.xml}
"""


def passthrough_setup(
    root: Path, *, environment: str = "test", extra: str = "", prolog: str = DECLARATION
) -> tuple[Path, Path, Path]:
    """A municipality folder sending the synthetic register files; (manifest, ipl, ide)."""
    records = [r for r in demo_records() if not r.name]  # the EPJ left its test users out
    ipl, ide = write_register_files(root, records, prolog=prolog)
    (root / "manifests").mkdir()
    (root / "outbox").mkdir()
    manifest = root / "manifests" / "demo-2023.yaml"
    manifest.write_text(manifest_text(environment, PASSTHROUGH_SOURCE, extra), encoding="utf-8")
    return manifest, ipl, ide


def sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def openssl(*args: str, data: bytes) -> bytes:
    proc = subprocess.run(["openssl", "cms", *args], input=data, capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout


def outbox_files(root: Path) -> list[Path]:
    folder = root / "outbox" / "outbox" / QUEUE
    return sorted(folder.glob("*.p7m")) if folder.is_dir() else []


# --- the profile and the plan -----------------------------------------------------------


def test_profile_declares_its_parts_in_order() -> None:
    payload = format_profile.load_format_file(PROFILE).payload
    assert payload.passthrough
    assert payload.parts == (("KPR_IPL", "export"), ("KPR_IDE", "file"))
    assert payload.schema == XSD


def test_a_passthrough_profile_needs_exactly_one_export_part(tmp_path: Path) -> None:
    broken = tmp_path / "two-exports.yaml"
    text = PROFILE.read_text(encoding="utf-8").replace("KPR_IDE: file", "KPR_IDE: export")
    broken.write_text(text.replace("name: synthetic-register-v1", "name: two-exports"))
    (tmp_path / XSD.name).symlink_to(XSD)
    with pytest.raises(Exception, match=r"two-exports.yaml: payload.parts: exactly one part"):
        format_profile.load_format_file(broken)


def test_plan_digests_are_the_files_bytes(tmp_path: Path) -> None:
    manifest, ipl, ide = passthrough_setup(tmp_path)
    plan = plan_submission(load_manifest(manifest), today=dt.date.fromisoformat(TODAY))
    assert plan.action == "submit", [f.as_dict() for f in plan.errors]
    assert [(p.type, p.payload_digest, p.size_bytes) for p in plan.parts] == [
        ("KPR_IPL", sha256(ipl), ipl.stat().st_size),
        ("KPR_IDE", sha256(ide), ide.stat().st_size),
    ]
    # the checks still ran on the records read through the profile
    assert plan.summary["recipients"] == len([r for r in demo_records() if not r.name])
    assert not any(f.rule == "payload-format" for f in plan.findings)


def test_the_plan_says_the_files_go_unchanged(cli, tmp_path: Path) -> None:
    manifest, _ipl, _ide = passthrough_setup(tmp_path)
    text = cli("plan", "--today", TODAY, manifest)
    assert "messages (attempt 1, the export's files unchanged):" in text.out
    markdown = cli("plan", "--today", TODAY, "--format", "markdown", manifest)
    assert "Messages (attempt 1, the export's files unchanged): `KPR_IPL`" in markdown.out
    data = json.loads(cli("plan", "--today", TODAY, "--format", "json", manifest).out)
    assert data["submissions"][0]["payloadFormat"] == "passthrough"


def test_message_size_uses_the_files_real_sizes(tmp_path: Path) -> None:
    manifest, ipl, _ide = passthrough_setup(tmp_path, extra="  messageSizeLimitBytes: 9000\n")
    plan = plan_submission(load_manifest(manifest), today=dt.date.fromisoformat(TODAY))
    sizes = [f.message for f in plan.findings if f.rule == "message-size"]
    expected = f"{ipl.stat().st_size + ENVELOPE_OVERHEAD_BYTES:,}"
    assert any(m.startswith(f"KPR_IPL would be about {expected} bytes") for m in sizes), sizes


@pytest.mark.parametrize("which", ["ipl", "ide"])
def test_one_changed_byte_in_either_file_makes_a_saved_plan_stale(
    cli, tmp_path: Path, which: str
) -> None:
    manifest, ipl, ide = passthrough_setup(tmp_path)
    saved = tmp_path / "plan.json"
    planned = cli("plan", "--today", TODAY, "--out", saved, manifest)
    assert planned.code == 0, planned.all
    target = ipl if which == "ipl" else ide
    data = target.read_bytes()
    at = data.index(b"<LokalId>") + len(b"<LokalId>")  # same size, one byte different
    target.write_bytes(data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :])
    result = cli("apply", "--auto-approve", "--today", TODAY, saved)
    assert result.code == 1
    assert "plan is stale" in result.err and "payloadDigest" in result.err
    assert outbox_files(tmp_path) == []
    assert not (tmp_path / "manifests" / "demo-2023.lock.yaml").exists()


def test_test_persons_in_a_passthrough_export_block_the_plan(tmp_path: Path) -> None:
    manifest, _ipl, _ide = passthrough_setup(tmp_path)
    write_register_files(tmp_path, demo_records())  # with the EPJ's "Donald Duck"
    plan = plan_submission(load_manifest(manifest), today=dt.date.fromisoformat(TODAY))
    assert plan.action == "blocked"
    (finding,) = [f for f in plan.findings if f.rule == "passthrough-test-person"]
    assert finding.severity == "error" and finding.count == 2
    assert "remove the test persons in the EPJ" in finding.message
    assert "name on the test-user list" in finding.message
    assert "Donald" not in json.dumps([f.as_dict() for f in plan.findings])
    assert not any(f.rule == "test-person" for f in plan.findings)  # nothing is "excluded"


def test_switching_the_test_person_rule_off_does_not_let_them_through(tmp_path: Path) -> None:
    manifest, _ipl, _ide = passthrough_setup(tmp_path, extra="  rules: {test-person: off}\n")
    write_register_files(tmp_path, demo_records())
    plan = plan_submission(load_manifest(manifest), today=dt.date.fromisoformat(TODAY))
    assert plan.action == "blocked"
    (finding,) = [f for f in plan.findings if f.rule == "passthrough-test-person"]
    assert finding.count == 2 and len(finding.records) == 2


def test_parts_the_profile_and_manifest_disagree_on_are_named(tmp_path: Path) -> None:
    manifest, _ipl, _ide = passthrough_setup(tmp_path)
    text = manifest.read_text(encoding="utf-8")
    manifest.write_text(text.replace("    parts: {KPR_IDE: ../exports/ide.xml}\n", ""))
    with pytest.raises(ManifestError, match=r"name it in spec.source.parts.KPR_IDE"):
        plan_submission(load_manifest(manifest), today=dt.date.fromisoformat(TODAY))
    v1 = text.replace("path: ../exports/ipl.xml", "path: ../exports/demo.xml").replace(
        "format: ../formats/synthetic-register-v1.yaml", "format: iplos-export-v1"
    )
    (tmp_path / "exports" / "demo.xml").write_bytes(DEMO_EXPORT.read_bytes())
    manifest.write_text(v1)
    with pytest.raises(ManifestError, match=r"spec.source.parts.KPR_IDE: parts are sent unchanged"):
        plan_submission(load_manifest(manifest), today=dt.date.fromisoformat(TODAY))


# --- what a file must be to go into a MsgHead unchanged ---------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            '<?xml version="1.0" encoding="ISO-8859-1"?>\n<Identmelding xmlns="{ns}"/>',
            "payload is not UTF-8",
        ),
        ("<Identmelding/>", "declares no default namespace"),
        ('<!DOCTYPE x []>\n<Identmelding xmlns="{ns}"/>', "DOCTYPE"),
        ('<Identmelding xmlns="{ns}"><Hode>', "not closed at the end"),
    ],
    ids=["latin-1", "no-namespace", "doctype", "truncated"],
)
def test_a_file_that_cannot_be_carried_unchanged_is_one_named_error(
    tmp_path: Path, content: str, expected: str
) -> None:
    path = tmp_path / "ide.xml"
    path.write_text(content.format(ns=NS), encoding="latin-1")
    with pytest.raises(PayloadError) as caught:
        check_part(path, XSD)
    message = caught.value.message
    assert message.startswith(f"{path}: ") and expected in message and "\n" not in message


def test_utf16_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "ide.xml"
    path.write_text(f'<Identmelding xmlns="{NS}"/>', encoding="utf-16")
    with pytest.raises(PayloadError, match=r"is UTF-16; .* have the EPJ write UTF-8"):
        check_part(path, XSD)


def test_a_schema_violation_names_file_and_line_not_the_value(tmp_path: Path) -> None:
    path = tmp_path / "ide.xml"
    path.write_text(
        f'<Identmelding xmlns="{NS}">\n' + _header() + "  <Ident><LokalId>a</LokalId>"
        "<Fnr>1234567890X</Fnr></Ident>\n</Identmelding>\n",
        encoding="utf-8",
    )
    with pytest.raises(PayloadError) as caught:
        check_part(path, XSD)
    message = caught.value.message
    assert message.startswith(f"{path}:3: does not match the register format's XSD")
    assert "1234567890X" not in message


# --- apply through the real parts --------------------------------------------------------


def _decrypt(root: Path, body: bytes) -> bytes:
    pki = root / "pki"
    signed = openssl(
        "-decrypt",
        "-inform",
        "DER",
        "-recip",
        str(pki / "register-encryption.pem"),
        "-inkey",
        str(pki / "register-encryption.key"),
        data=body,
    )
    return openssl(
        "-verify",
        "-inform",
        "DER",
        "-binary",
        "-CAfile",
        str(pki / "ca.pem"),
        "-purpose",
        "any",
        data=signed,
    )


def _content(msghead: bytes) -> bytes:
    """The bytes between <Content> and </Content>, as they travelled."""
    start = msghead.index(b"<Content>") + len(b"<Content>")
    return msghead[start : msghead.rindex(b"</Content>")]


@pytest.mark.parametrize(
    "prolog",
    [DECLARATION, "", "\ufeff" + DECLARATION + "<!-- written by DemoEPJ -->\n"],
    ids=["with-declaration", "bare", "bom-and-comment"],
)
def test_apply_sends_the_files_bytes_unchanged_inside_the_msghead(
    cli, tmp_path: Path, prolog: str
) -> None:
    folder = schemas_folder(tmp_path)
    extra = f"  schemas: {folder}\n  payloadSchema: {XSD.name}\n"
    manifest, ipl, ide = passthrough_setup(tmp_path, extra=extra, prolog=prolog)
    saved = tmp_path / "plan.json"
    assert cli("plan", "--today", TODAY, "--out", saved, manifest).code == 0
    result = cli("apply", "--auto-approve", "--today", TODAY, saved)
    assert result.code == 0, result.all
    lock = lf.load(tmp_path / "manifests" / "demo-2023.lock.yaml")
    assert lock is not None
    (attempt,) = lock.attempts
    assert attempt.states == {"sent"}
    assert attempt.source_digest == sha256(ipl)
    schema = load_schemas(reference_xsd_dir(), [XSD])
    files = {"KPR_IPL": ipl, "KPR_IDE": ide}
    for part in attempt.parts:
        assert part.payload_digest == sha256(files[part.type])
        body = (tmp_path / "outbox" / "outbox" / QUEUE / f"{part.msg_id}.p7m").read_bytes()
        msghead = _decrypt(tmp_path, body)
        validate_msghead(msghead, schema)  # the official MsgHead XSD with the payload's
        info = parse_msghead(msghead)
        assert (info.msg_type, info.msg_id) == (part.type, part.msg_id)
        sent = files[part.type].read_bytes()
        outside = prolog.encode("utf-8")
        assert sent.startswith(outside)
        # byte for byte: Content carries the root element; the BOM, the declaration (allowed
        # only at a document's start), the comment before the root and the last newline stay
        # outside
        assert _content(msghead) == sent[len(outside) :].rstrip(b"\n")
    assert MSGHEAD_XSD in {p.name for p in folder.iterdir()}


def test_a_payload_xsd_violation_sends_nothing_and_leaves_no_lockfile(cli, tmp_path: Path) -> None:
    manifest, _ipl, ide = passthrough_setup(tmp_path)
    data = ide.read_text(encoding="utf-8")
    ide.write_text(data.replace("<Fnr>", "<Fnr>x", 1), encoding="utf-8")
    result = cli("apply", "--auto-approve", "--today", TODAY, manifest)
    assert result.code == 1
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert "ide.xml:" in lines[0] and "does not match the register format's XSD" in lines[0]
    assert outbox_files(tmp_path) == []
    assert not (tmp_path / "manifests" / "demo-2023.lock.yaml").exists()


def test_a_later_xsd_violation_leaves_the_lockfile_byte_for_byte(cli, tmp_path: Path) -> None:
    manifest, _ipl, ide = passthrough_setup(tmp_path)
    assert cli("apply", "--auto-approve", "--today", TODAY, manifest).code == 0
    lock_path = tmp_path / "manifests" / "demo-2023.lock.yaml"
    before, sent = lock_path.read_bytes(), outbox_files(tmp_path)
    assert len(sent) == 2
    ide.write_text(ide.read_text(encoding="utf-8").replace("<Fnr>", "<Fnr>x", 1))
    result = cli("apply", "--auto-approve", "--today", TODAY, manifest)
    assert result.code == 1 and "does not match the register format's XSD" in result.err
    assert lock_path.read_bytes() == before
    assert outbox_files(tmp_path) == sent


def test_payload_schema_without_passthrough_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "schemas"
    folder.mkdir()
    (folder / "x.xsd").write_text("<x/>")
    plan_args = f"  schemas: {folder}\n  payloadSchema: x.xsd\n"
    with pytest.raises(ManifestError, match=r"payloadSchema validates a pass-through payload"):
        _v1_plan(tmp_path, "test", plan_args)


def test_an_official_payload_schema_is_used_instead_of_the_profiles(tmp_path: Path) -> None:
    """spec.payloadSchema in spec.schemas wins: here a stricter copy that refuses every Fnr."""
    folder = tmp_path / "official"
    folder.mkdir()
    strict = XSD.read_text(encoding="utf-8").replace("[0-9]{11}", "[0-9]{12}")
    (folder / "official.xsd").write_text(strict, encoding="utf-8")
    extra = f"  schemas: {folder}\n  payloadSchema: official.xsd\n"
    manifest, _ipl, _ide = passthrough_setup(tmp_path, extra=extra)
    with pytest.raises(PayloadError, match=r"ipl.xml:\d+: does not match .* official.xsd"):
        plan_submission(load_manifest(manifest), today=dt.date.fromisoformat(TODAY))


# --- no invented format to a real register -----------------------------------------------

V1_SOURCE = """  source:
    plugin: xml
    path: ../exports/demo.xml
    format: iplos-export-v1
"""


def _v1_plan(root: Path, environment: str, extra: str = ""):  # type: ignore[no-untyped-def]
    (root / "manifests").mkdir(exist_ok=True)
    (root / "exports").mkdir(exist_ok=True)
    (root / "exports" / "demo.xml").write_bytes(DEMO_EXPORT.read_bytes())
    manifest = root / "manifests" / "demo-2023.yaml"
    manifest.write_text(manifest_text(environment, V1_SOURCE, extra), encoding="utf-8")
    return plan_submission(load_manifest(manifest), today=dt.date.fromisoformat(TODAY))


@pytest.mark.parametrize("environment", ["test", "qa", "production"])
def test_own_format_outside_the_sandbox_is_blocked_without_an_agreement(
    tmp_path: Path, environment: str
) -> None:
    plan = _v1_plan(tmp_path, environment)
    assert plan.action == "blocked"
    (finding,) = [f for f in plan.findings if f.rule == "payload-format"]
    assert finding.severity == "error"
    assert "payload: {mode: passthrough}" in finding.message
    assert "spec.payloadFormatAgreement: iplosctl-export-v1" in finding.message


@pytest.mark.parametrize("environment", ["test", "qa", "production"])
def test_an_agreement_lifts_the_block(tmp_path: Path, environment: str) -> None:
    plan = _v1_plan(tmp_path, environment, "  payloadFormatAgreement: iplosctl-export-v1\n")
    assert not any(f.rule == "payload-format" for f in plan.findings)


def test_the_sandbox_needs_no_agreement(tmp_path: Path) -> None:
    plan = _v1_plan(tmp_path, "sandbox")
    assert not any(f.rule == "payload-format" for f in plan.findings)
    assert plan.action == "submit"


def test_the_block_reaches_the_cli_with_exit_1(cli, tmp_path: Path) -> None:
    _v1_plan(tmp_path, "production")
    result = cli("plan", "--today", TODAY, tmp_path / "manifests" / "demo-2023.yaml")
    assert result.code == 1
    assert "payload-format" in result.all
