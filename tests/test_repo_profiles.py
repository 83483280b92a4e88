"""Format and year profiles kept in the municipality's repository (issue 11, items 1 and 9).

The profiles live in `tests/repo_profiles/` (never in the package) and are
copied into a scratch repository per test, laid out as a municipality would:
`manifests/`, `profiles/<year>.yaml` beside it, `formats/` for format profiles.
Everything runs through the real CLI, the real xml source and real entry points.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from iplosctl import endpoint, lockfile, plugins, profiles
from iplosctl.errors import ProfileError
from iplosctl.formats.profile import load_format
from iplosctl.manifest import load_manifest
from iplosctl.plan import lineage_for
from iplosctl.sandbox.generate import generate_export
from iplosctl.sandbox.pki import generate_pki
from tests.conftest import DEMO_EXPORT, DEMO_MANIFEST

FIXTURES = Path(__file__).resolve().parent / "repo_profiles"
TODAY = "2026-11-29"


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A municipality repository: manifests/, formats/, exports/; profiles/ added per test."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "repo"
    (root / "manifests").mkdir(parents=True)
    (root / "exports").mkdir()
    shutil.copytree(FIXTURES / "formats", root / "formats")
    shutil.copy(DEMO_EXPORT, root / "exports" / "demo-2023.xml")
    return root


def demo_manifest(root: Path, *, format: str = "iplos-export-v1", extra: str = "") -> Path:
    """The demo (sandbox, 2023) manifest, reading the demo export through `format`."""
    text = DEMO_MANIFEST.read_text(encoding="utf-8")
    text = text.replace("../examples/exports/demo-2023.xml", "../exports/demo-2023.xml")
    text = text.replace("format: iplos-export-v1", f"format: {format}")
    path = root / "manifests" / "demo-2023.yaml"
    path.write_text(text + extra, encoding="utf-8")
    return path


def year_manifest(
    root: Path, year: int, environment: str, *, extra: str = "", keys: bool = False
) -> Path:
    """A manifest for `year` outside the sandbox; placeholder key files unless `keys`."""
    export = root / "exports" / f"kommune-{year}.xml"
    if not export.exists():
        # The generator needs a shipped profile; a later year gets 2026 data relabelled.
        generate_export(export, recipients=30, seed=7, year=min(year, 2026))
        text = export.read_text(encoding="utf-8")
        export.write_text(
            text.replace("<ReportingYear>2026<", f"<ReportingYear>{year}<", 1), encoding="utf-8"
        )
    pki = root / "pki"
    if keys:
        generate_pki(pki)
    else:
        pki.mkdir(exist_ok=True)
        for name in ("own.pem", "own.key", "kpr-signing.pem", "kpr-encryption.pem"):
            (pki / name).write_text("placeholder: plan reads no key\n", encoding="utf-8")
    own, kpr = ("municipality-signing", "register") if keys else ("own", "kpr")
    # plan checks certificates: with keys, a real encryption pair and the CA that issued them
    enc = "municipality-encryption" if keys else own
    anchors = "\n                  trustAnchors: ../pki/ca.pem" if keys else ""
    path = root / "manifests" / f"kommune-{year}-{environment}.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            apiVersion: iplosctl/v1
            kind: Submission
            metadata: {{name: kommune-{year}-{environment}}}
            spec:
              reportingYear: {year}
              environment: {environment}
              municipality: {{number: "9999", name: Demo kommune, orgNumber: "310000019"}}
              sender: {{herId: 900100, serviceHerId: 900101}}
              epj: {{system: DemoEPJ, version: 4.2.0}}
              epjMinimumVersions: {{DemoEPJ: 4.0.0}}
              serviceUnits:
                - {{orgNumber: "310000027", name: Demo hjemmetjeneste}}
                - {{orgNumber: "310000035", name: Demo sykehjem}}
                - {{orgNumber: "310000043", name: Demo bofellesskap}}
              source: {{plugin: xml, path: ../exports/kommune-{year}.xml}}
              endpoint: {{transport: directory, url: ../outbox}}
              certificates:
                signing: {{certificate: ../pki/{own}.pem, key: ../pki/{own}.key}}
                encryption: {{certificate: ../pki/{enc}.pem, key: ../pki/{enc}.key}}
                register:
                  signing: ../pki/{kpr}-signing.pem
                  encryption: ../pki/{kpr}-encryption.pem{anchors}
            """
        )
        + extra,
        encoding="utf-8",
    )
    return path


def plan_json(cli, manifest: Path, *args: str) -> dict:  # type: ignore[no-untyped-def,type-arg]
    result = cli("plan", "--format", "json", "--today", TODAY, *args, manifest)
    assert result.code in (0, 1), result.all
    (submission,) = json.loads(result.out)["submissions"]
    return submission  # type: ignore[no-any-return]


def rules_of(submission: dict) -> set[str]:  # type: ignore[type-arg]
    return {f["rule"] for f in submission["findings"]}


def unverified_message(submission: dict) -> str:  # type: ignore[type-arg]
    found = [f for f in submission["findings"] if f["rule"] == "profile-unverified"]
    assert len(found) == 1, submission["findings"]
    assert found[0]["severity"] == "warning"
    return str(found[0]["message"])


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every export the xml source opens (to tell a fresh plan from a cached one)."""
    source = plugins.load("source", "xml")
    real = source.read
    opened: list[Path] = []

    def counting(self, spec):  # type: ignore[no-untyped-def]
        opened.append(spec.path)
        return real(self, spec)

    monkeypatch.setattr(source, "read", counting)
    return opened


# --- format profiles ---------------------------------------------------------------


def test_a_format_path_relative_to_the_manifest_reads_like_the_shipped_profile(
    cli, repo: Path
) -> None:
    shipped = plan_json(cli, demo_manifest(repo))
    manifest = demo_manifest(repo, format="../formats/acme-epj.yaml")
    loaded = load_manifest(manifest)
    assert loaded.source.format == str(repo / "formats" / "acme-epj.yaml")  # absolute now
    assert load_format(loaded.source.format).name == "acme-epj"
    assert cli("validate", manifest).code == 0
    from_repo = plan_json(cli, manifest)
    assert from_repo["action"] == "submit"
    # The same records, read through another file: same summary, findings and payload...
    assert from_repo["summary"] == shipped["summary"]
    assert from_repo["findings"] == shipped["findings"]
    assert from_repo["digests"]["payload"] == shipped["digests"]["payload"]
    # ...but the plan says which profile files it was made with.
    assert from_repo["digests"]["profile"] != shipped["digests"]["profile"]


def _format_distribution(site: Path) -> None:
    """A tiny installed distribution providing format `acme-epj` through an entry point."""
    package = site / "acme_formats"
    package.mkdir(parents=True)
    shutil.copy(FIXTURES / "formats" / "acme-epj.yaml", package)
    shutil.copy(FIXTURES / "formats" / "acme-epj.xsd", package)
    (package / "__init__.py").write_text(
        "from pathlib import Path\n\n\n"
        "def acme_epj() -> Path:\n"
        '    return Path(__file__).parent / "acme-epj.yaml"\n',
        encoding="utf-8",
    )
    info = site / "acme_formats-1.2.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: acme-formats\nVersion: 1.2.0\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text(
        "[iplosctl.formats]\nacme-epj = acme_formats:acme_epj\n", encoding="utf-8"
    )


def test_a_format_provided_by_a_plugin_is_found_by_name_and_listed(
    cli, repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    _format_distribution(site)
    monkeypatch.syspath_prepend(str(site))
    listed = cli("plugins")
    assert listed.code == 0
    line = next(ln for ln in listed.out.splitlines() if ln.split()[:2] == ["format", "acme-epj"])
    assert "acme-formats 1.2.0" in line and "acme_formats:acme_epj" in line
    manifest = demo_manifest(repo, format="acme-epj")
    assert cli("validate", manifest).code == 0
    planned = plan_json(cli, manifest)
    assert planned["action"] == "submit" and planned["summary"]["recipients"] == 38
    # An unknown name lists the shipped formats and the plugins' ones.
    with pytest.raises(ProfileError, match=r"formats: acme-epj, iplos-export-v1"):
        load_format("acme-epx")


def test_iplosctl_plugins_lists_a_format_plugin_in_a_real_process(tmp_path: Path) -> None:
    site = tmp_path / "site"
    _format_distribution(site)
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("IPLOSCTL_LOAD_PLUGINS", None)
    done = subprocess.run(
        [str(Path(sys.executable).parent / "iplosctl"), "plugins", "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    formats = [p for p in json.loads(done.stdout) if p["kind"] == "format"]
    assert formats == [
        {
            "kind": "format",
            "name": "acme-epj",
            "target": "acme_formats:acme_epj",
            "distribution": "acme-formats",
            "version": "1.2.0",
        }
    ]


def test_a_missing_or_broken_format_profile_is_one_line_naming_it(cli, repo: Path) -> None:
    manifest = demo_manifest(repo, format="../formats/nosuch.yaml")
    result = cli("plan", manifest)
    assert result.code == 1
    (line,) = result.err.strip().splitlines()[:1]
    assert "spec.source.format" in line and "formats/nosuch.yaml (not found)" in line
    assert "Traceback" not in result.all

    acme = repo / "formats" / "acme-epj.yaml"
    acme.write_text(
        acme.read_text().replace("localId: normalize-space(x:LocalId)", "localId: x:LocalId[")
    )
    broken = demo_manifest(repo, format="../formats/acme-epj.yaml")
    result = cli("validate", broken)
    assert result.code == 1
    problems = [ln for ln in result.err.splitlines() if "acme-epj.yaml" in ln]
    assert len(problems) == 1 and "invalid XPath" in problems[0], result.err
    assert "recipient.fields.localId" in problems[0]
    assert not broken.with_name("demo-2023.lock.yaml").exists()


def test_a_format_whose_xsd_does_not_compile_is_the_manifests_problem(cli, repo: Path) -> None:
    (repo / "formats" / "acme-epj.xsd").write_text("<xs:schema", encoding="utf-8")
    result = cli("validate", demo_manifest(repo, format="../formats/acme-epj.yaml"))
    assert result.code == 1
    assert "spec.source.format: broken format schema acme-epj.xsd" in result.err


# --- year profiles -------------------------------------------------------------------


def test_an_overlay_beside_manifests_corrects_a_her_id_and_a_deadline(cli, repo: Path) -> None:
    shipped = plan_json(cli, year_manifest(repo, 2026, "test"))
    assert shipped["deadline"]["next"] == "2027-01-15"
    (repo / "profiles").mkdir()
    shutil.copy(FIXTURES / "profiles" / "2026.yaml", repo / "profiles" / "2026.yaml")
    manifest = load_manifest(year_manifest(repo, 2026, "test"))
    profile = profiles.profile_for(manifest)
    assert profile.overlay is not None and profile.overlay.name == "2026.yaml"
    assert profile.environments["test"].receiver_her_id == 8133999
    assert endpoint.addressing(manifest).receiver_her_id == 8133999  # what apply addresses
    assert profile.environments["production"].receiver_her_id == 122612  # merged, kept
    assert [s.stem for s in profile.files] == ["2026", "2026"]  # shipped, then the overlay
    corrected = plan_json(cli, manifest.path)
    assert corrected["deadline"]["next"] == "2027-01-18"
    assert corrected["route"]["receiverHerId"] == 8133999  # what the reviewer sees
    assert corrected["route"]["toQueue"] == "8133999_async"
    assert corrected["digests"]["profile"] != shipped["digests"]["profile"]
    # The restated facts are the municipality's word now; the others still warn.
    before, after = unverified_message(shipped), unverified_message(corrected)
    assert "deadlines" in before and "environments.test.receiverHerId" in before
    assert "deadlines" not in after and "environments.test.receiverHerId" not in after
    assert "messageParts" in after


def test_apply_sends_to_the_her_id_an_overlay_corrected(cli, repo: Path) -> None:
    """End to end: the corrected HER-id is the queue and the MsgHead receiver of what is sent."""
    (repo / "profiles").mkdir()
    shutil.copy(FIXTURES / "profiles" / "2026.yaml", repo / "profiles" / "2026.yaml")
    # about addressing, not the format: the receiver "agreed" to iplosctl's own (payload-format)
    agreed = "  payloadFormatAgreement: iplosctl-export-v1\n"
    path = year_manifest(repo, 2026, "test", extra=agreed, keys=True)
    (repo / "outbox").mkdir()
    result = cli("apply", "--auto-approve", "--today", TODAY, path)
    assert result.code == 0, result.all
    queue = repo / "outbox" / "outbox" / "8133999_async"
    bodies = sorted(queue.glob("*.p7m"))
    assert len(bodies) == 2  # KPR_IPL and KPR_IDE
    signed = _openssl(
        "-decrypt",
        "-recip",
        str(repo / "pki" / "register-encryption.pem"),
        "-inkey",
        str(repo / "pki" / "register-encryption.key"),
        "-inform",
        "DER",
        data=bodies[0].read_bytes(),
    )
    msghead = _openssl("-verify", "-noverify", "-inform", "DER", data=signed).decode()
    receiver = msghead[msghead.index("<Receiver") : msghead.index("</Receiver>")]
    assert "<Id>8133999</Id>" in receiver, receiver


def _openssl(*args: str, data: bytes) -> bytes:
    done = subprocess.run(["openssl", "cms", *args], input=data, capture_output=True, check=False)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


def test_spec_profile_names_an_overlay_anywhere_and_wins(cli, repo: Path) -> None:
    (repo / "config").mkdir()
    overlay = repo / "config" / "kpr-2026.yaml"
    overlay.write_text("environments:\n  test:\n    receiverHerId: 8133777\n", encoding="utf-8")
    (repo / "profiles").mkdir()
    shutil.copy(FIXTURES / "profiles" / "2026.yaml", repo / "profiles" / "2026.yaml")
    manifest = load_manifest(
        year_manifest(repo, 2026, "test", extra="  profile: ../config/kpr-2026.yaml\n")
    )
    assert manifest.profile == Path(
        os.path.normpath(repo / "manifests" / "../config/kpr-2026.yaml")
    )
    profile = profiles.profile_for(manifest)
    assert profile.environments["test"].receiver_her_id == 8133777
    assert profile.deadlines[0].date.isoformat() == "2027-01-15"  # profiles/2026.yaml not used


def test_extends_layers_a_new_year_over_a_shipped_one(cli, repo: Path) -> None:
    (repo / "profiles").mkdir()
    shutil.copy(FIXTURES / "profiles" / "2027.yaml", repo / "profiles" / "2027.yaml")
    path = year_manifest(repo, 2027, "production")
    # about the profile, not the files: the placeholder certificates are not checked
    assert cli("validate", "--no-files", path).code == 0
    profile = profiles.profile_for(load_manifest(path))
    assert profile.year == 2027
    assert [f.stem for f in profile.files] == ["2026", "2027"]
    assert profile.deadlines[0].date.isoformat() == "2028-01-14"
    assert profile.environments["production"].receiver_her_id == 122612
    planned = plan_json(cli, path)
    assert planned["reportingYear"] == 2027 and planned["deadline"]["next"] == "2028-01-14"
    message = unverified_message(planned)
    assert "environments.production.receiverHerId" in message and "2027.yaml" in message


def test_a_schema_error_elsewhere_does_not_blame_a_year_an_overlay_provides(
    cli, repo: Path
) -> None:
    (repo / "profiles").mkdir()
    shutil.copy(FIXTURES / "profiles" / "2027.yaml", repo / "profiles" / "2027.yaml")
    result = cli("validate", year_manifest(repo, 2027, "test", extra="  colour: blue\n"))
    assert result.code == 1 and "colour" in result.err
    assert "no reporting-year profile" not in result.err, result.err


def test_a_year_without_a_shipped_profile_needs_extends_or_a_complete_overlay(
    cli, repo: Path
) -> None:
    (repo / "profiles").mkdir()
    (repo / "profiles" / "2027.yaml").write_text(
        "deadlines:\n  - {name: ordinary, date: 2028-01-14, description: x}\n", encoding="utf-8"
    )
    result = cli("validate", year_manifest(repo, 2027, "test"))
    assert result.code == 1
    (line,) = [ln for ln in result.err.splitlines() if "profiles/2027.yaml" in ln]
    assert "broken profile overlay" in line and "extends: YEAR" in line


@pytest.mark.parametrize(
    ("overlay", "expected"),
    [
        (
            "deadlines:\n  - {name: ordinary, date: 15.01.2027, description: x}\n",
            r"profiles/2026\.yaml:2:\d+: deadlines\[0\]\.date",
        ),
        (
            "deadline:\n  - {name: ordinary}\n",
            r"profiles/2026\.yaml:1:1: .*did you mean 'deadlines'",
        ),
        ("extends: last year\n", r"profiles/2026\.yaml:1:1: extends: must be a reporting year"),
        (
            "reportingYear: 2025\n",
            r"profiles/2026\.yaml:1:1: reportingYear: the overlay is for 2025",
        ),
        ("environments: [\n", r"profiles/2026\.yaml"),
        (
            "unverified:\n  - {path: environments.prod.receiverHerId, reason: x}\n",
            r"profiles/2026\.yaml:2:\d+: unverified\[0\]\.path: 'environments\.prod",
        ),
    ],
)
def test_a_broken_overlay_is_one_line_naming_it_and_changes_nothing(
    cli, repo: Path, overlay: str, expected: str
) -> None:
    import re

    path = year_manifest(repo, 2026, "test")
    manifest = load_manifest(path)
    lock = lockfile.Lockfile(submission=manifest.name, lineage=lineage_for(manifest))
    lockfile.save(manifest.lockfile_path, lock)
    before = manifest.lockfile_path.read_bytes()
    (repo / "profiles").mkdir()
    (repo / "profiles" / "2026.yaml").write_text(overlay, encoding="utf-8")
    for command in ("validate", "plan", "apply"):
        args = ("--auto-approve",) if command == "apply" else ()
        result = cli(command, *args, path)
        assert result.code == 1, (command, result.all)
        errors = [ln for ln in result.err.splitlines() if "profiles/2026.yaml" in ln]
        assert len(errors) == 1, (command, result.err)
        assert re.search(expected, errors[0]), errors[0]
        assert "Traceback" not in result.all
    assert manifest.lockfile_path.read_bytes() == before
    assert not (repo / "outbox").exists()


def test_a_missing_spec_profile_is_named(cli, repo: Path) -> None:
    result = cli(
        "validate", year_manifest(repo, 2026, "test", extra="  profile: ../profiles/2026.yaml\n")
    )
    assert result.code == 1
    assert "spec.profile: profile overlay" in result.err and "2026.yaml not found" in result.err


# --- unverified facts ------------------------------------------------------------------


def test_unverified_facts_warn_outside_the_sandbox_only(cli, repo: Path) -> None:
    outside = plan_json(cli, year_manifest(repo, 2026, "production"))
    message = unverified_message(outside)
    for fact in ("deadlines", "environments.production.receiverHerId", "messageParts"):
        assert fact in message
    # Facts of environments the manifest does not use are not relied on.
    assert "environments.test.receiverHerId" not in message
    assert "iplosctl/profiles/2026.yaml" in message
    sandbox = plan_json(cli, year_manifest(repo, 2026, "sandbox"))
    assert "profile-unverified" not in rules_of(sandbox)
    switched_off = year_manifest(repo, 2026, "qa", extra="  rules: {profile-unverified: off}\n")
    assert "profile-unverified" not in rules_of(plan_json(cli, switched_off))


# --- what a changed profile does to the cache and to saved plans ------------------------


@pytest.mark.parametrize("changed", ["format YAML", "format XSD", "year overlay"])
def test_a_changed_profile_file_recomputes_the_plan_and_stales_a_saved_plan(
    cli, repo: Path, reads: list[Path], changed: str
) -> None:
    (repo / "profiles").mkdir()
    shutil.copy(FIXTURES / "profiles" / "2023.yaml", repo / "profiles" / "2023.yaml")
    manifest = demo_manifest(repo, format="../formats/acme-epj.yaml")
    assert profiles.profile_for(load_manifest(manifest)).overlay is not None
    saved = repo / "plan.json"
    assert cli("plan", "--out", saved, manifest).code == 0
    assert len(reads) == 1
    assert cli("plan", manifest).code == 0
    assert len(reads) == 1  # unchanged: served from the cache
    target = {
        "format YAML": repo / "formats" / "acme-epj.yaml",
        "format XSD": repo / "formats" / "acme-epj.xsd",
        "year overlay": repo / "profiles" / "2023.yaml",
    }[changed]
    stat = target.stat()
    comment = "<!-- edited -->\n" if target.suffix == ".xsd" else "# edited\n"
    target.write_text(target.read_text(encoding="utf-8") + comment, encoding="utf-8")
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # content, not mtime, counts
    assert cli("plan", manifest).code == 0
    assert len(reads) == 2  # read again through the changed profile
    reviewed = cli("plan", "--reviewed", saved, manifest)
    assert reviewed.code == 1 and "(profileDigest changed since the review)" in reviewed.err
    refused = cli("apply", saved)
    assert refused.code == 1
    assert "plan is stale for demo-2023 (profileDigest changed)" in refused.err
    assert not load_manifest(manifest).lockfile_path.exists()  # nothing journaled or sent


# --- the shipped year profiles ------------------------------------------------------------


@pytest.mark.parametrize("year", [2024, 2025, 2026])
def test_shipped_year_profiles_cite_sources_and_mark_what_they_cannot(year: int) -> None:
    profile = profiles.load_profile(year)
    assert profile.year == year
    assert profile.deadlines[-1].date.year == year + 1  # due in January the year after
    assert any("helsedirektoratet.no" in s for s in profile.sources)
    marked = {u.path for u in profile.unverified}
    assert {"deadlines", "environments.production.receiverHerId", "messageParts"} <= marked
    assert all(u.reason for u in profile.unverified)
    assert "kpr@fhi.no" in {c.address for c in profile.contacts}  # FHI from 2024-01-01


def test_merge_maps_key_by_key_replaces_lists_and_null_removes() -> None:
    base = {"a": {"x": 1, "y": [1, 2]}, "b": 2, "c": {"k": 1}}
    over = {"a": {"y": [3], "z": 4}, "b": None, "c": {"k": {"deep": True}}}
    assert profiles.merge(base, over) == {
        "a": {"x": 1, "y": [3], "z": 4},
        "c": {"k": {"deep": True}},
    }
    assert base == {"a": {"x": 1, "y": [1, 2]}, "b": 2, "c": {"k": 1}}  # not modified
