"""`iplosctl init`: answers → commented manifest that `iplosctl validate` accepts."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from iplosctl import profiles, yamlio
from iplosctl.errors import IplosctlError, UsageError
from iplosctl.init import (
    CertificatePaths,
    InitAnswers,
    ServiceUnitAnswer,
    answers_from_values,
    default_out,
    prompt_answers,
    render_manifest,
    schema_reference,
    write_manifest,
)
from iplosctl.manifest import load_manifest
from iplosctl.manifest.loader import SCHEMA_PATH
from iplosctl.sandbox.generate import generate_export
from iplosctl.sandbox.pki import generate_pki
from tests.conftest import REPO

UNITS = ("310000078", "310000086")
FLAGS: dict[str, object] = {
    "municipality_name": "Fjordvik kommune",
    "municipality_number": "9998",
    "org_number": "310000051",
    "reporting_year": "2023",
    "her_id": "900200",
    "service_her_id": "900201",
    "epj_system": "FjordEPJ",
    "epj_version": "7.1.3",
    "service_units": [f"{UNITS[0]}=Fjordvik hjemmetjenester", f"{UNITS[1]}=Fjordvik sykehjem"],
    "source_path": "exports/fjordvik-2023.xml",
}


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh repository folder with a synthetic export, as the current folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("IPLOSCTL_STATE_DIR", str(tmp_path / ".iplosctl"))
    (tmp_path / "exports").mkdir()
    generate_export(
        tmp_path / "exports" / "fjordvik-2023.xml",
        recipients=25,
        seed=6,
        municipality="9998",
        service_units=UNITS,
        epj_system="FjordEPJ",
        epj_version="7.1.3",
        test_persons=1,
    )
    return tmp_path


def comments(text: str) -> list[str]:
    """Every comment's text, whether on its own line or after a value."""
    return [m.group(1).strip() for m in re.finditer(r"(?:^|\s)#(.*)$", text, re.MULTILINE)]


def test_flags_give_a_sandbox_manifest_that_validates_and_plans(workdir: Path, cli) -> None:
    answers = answers_from_values(FLAGS)
    assert answers.name == "fjordvik-2023"  # derived from the municipality's name and year
    assert answers.environment == "sandbox"  # nothing leaves the machine by default
    out = write_manifest(answers, default_out(answers))
    assert out == Path("manifests/fjordvik-2023.yaml")

    result = cli("validate", out)
    assert result.code == 0, result.all
    assert "ok  manifests/fjordvik-2023.yaml" in result.out
    manifest = load_manifest(out)
    assert manifest.source.path == Path("exports/fjordvik-2023.xml")
    assert manifest.endpoint is None and manifest.certificates is None
    assert [u.org_number for u in manifest.service_units] == list(UNITS)

    planned = cli("plan", out)
    assert planned.code == 0, planned.all
    assert "fjordvik-2023" in planned.out


def test_test_environment_with_endpoint_and_certificates_validates(workdir: Path, cli) -> None:
    generate_pki(workdir / "certs")
    answers = answers_from_values(
        {
            **FLAGS,
            "environment": "test",
            "username": "fjordvik-kpr",
            "certificates": "certs",
            "owner": "ikt-helse@fjordvik.kommune.invalid",
        }
    )
    out = write_manifest(answers, Path("manifests") / "kpr" / "fjordvik.yaml")
    result = cli("validate", out)
    assert result.code == 0, result.all

    manifest = load_manifest(out)
    assert manifest.endpoint is not None
    assert manifest.endpoint.url == "amqps://sb.test.nhn.no:5671"  # the profile's broker
    assert manifest.endpoint.namespace == "NHNTESTServiceBus"
    assert manifest.endpoint.credential == "fjordvik-2023-amqp"
    assert manifest.certificates is not None
    assert manifest.owner == "ikt-helse@fjordvik.kommune.invalid"
    text = out.read_text(encoding="utf-8")
    assert "certificate: ../../certs/municipality-signing.pem" in text
    assert "path: ../../exports/fjordvik-2023.xml" in text
    assert "IPLOSCTL_SECRET_FJORDVIK_2023_AMQP" in text


def test_validate_reports_the_missing_files_of_a_test_manifest(workdir: Path, cli) -> None:
    answers = answers_from_values(
        {**FLAGS, "environment": "test", "username": "u", "certificates": "nowhere"}
    )
    out = write_manifest(answers, default_out(answers))
    result = cli("validate", out)
    assert result.code == 1
    assert "file ../nowhere/municipality-signing.pem does not exist" in result.err


def test_first_line_points_editors_at_the_installed_schema(workdir: Path) -> None:
    out = Path("manifests/fjordvik-2023.yaml")
    text = render_manifest(answers_from_values(FLAGS), out=out)
    first = text.splitlines()[0]
    assert first.startswith("# yaml-language-server: $schema=")
    reference = first.split("$schema=", 1)[1]
    if reference.startswith("file://"):
        target = Path(unquote(urlparse(reference).path))
    else:
        target = (workdir / out.parent / reference).resolve()
    assert target == SCHEMA_PATH.resolve()


def test_schema_reference_is_relative_inside_a_shared_folder() -> None:
    # The demo manifest's own line, computed rather than written by hand.
    demo = (REPO / "manifests" / "demo-2023.yaml").read_text(encoding="utf-8").splitlines()[0]
    assert demo == f"# yaml-language-server: $schema={schema_reference(REPO / 'manifests' / 'x')}"


def test_an_explicit_schema_reference_wins() -> None:
    answers = InitAnswers(**{**_typed(), "schema": "https://example.invalid/manifest.json"})
    first = render_manifest(answers).splitlines()[0]
    assert first == "# yaml-language-server: $schema=https://example.invalid/manifest.json"


def _typed() -> dict[str, object]:
    return {
        "name": "fjordvik-2023",
        "reporting_year": 2023,
        "environment": "sandbox",
        "municipality_number": "9998",
        "municipality_name": "Fjordvik kommune",
        "org_number": "310000051",
        "her_id": 900200,
        "service_her_id": 900201,
        "epj_system": "FjordEPJ",
        "epj_version": "7.1.3",
        "service_units": (ServiceUnitAnswer(UNITS[0], "Fjordvik hjemmetjenester"),),
        "source_path": "exports/fjordvik-2023.xml",
    }


def test_comments_survive_a_round_trip() -> None:
    answers = InitAnswers(
        **{
            **_typed(),
            "environment": "test",
            "username": "u",
            "credential": "fjordvik-amqp",
            "endpoint_url": "amqps://sb.test.nhn.no:5671",
            "certificates": CertificatePaths.in_folder("certs"),
        }
    )
    text = render_manifest(answers, out=Path("manifests/f.yaml"))
    written = comments(text)
    assert len(written) >= 15
    assert "kommunenummer, 4 digits, quoted" in written
    assert "organisasjonsnummer, checked with mod 11" in written
    assert any("iplosctl secrets set fjordvik-amqp" in c for c in written)
    # Loaded and dumped with the project's one ruamel configuration: every comment is kept.
    again = yamlio.dumps(yamlio.loads(text, name="f.yaml"))
    assert comments(again) == written
    # Quoted numbers stay strings, so the schema's patterns apply.
    data = yamlio.to_plain(yamlio.loads(text, name="f.yaml"))
    assert data["spec"]["municipality"]["number"] == "9998"
    assert data["spec"]["serviceUnits"][0]["orgNumber"] == UNITS[0]


def test_the_sandbox_manifest_says_why_endpoint_and_certificates_are_absent() -> None:
    text = render_manifest(InitAnswers(**_typed()))
    assert "endpoint:" not in text and "certificates:" not in text
    assert "no endpoint or certificates are needed" in text


class FakePrompt:
    """Answers questions by their opening words, in order; records what was asked and told."""

    def __init__(self, script: dict[str, list[str]]) -> None:
        self.script = {k: list(v) for k, v in script.items()}
        self.asked: list[tuple[str, str | None]] = []
        self.told: list[str] = []

    def ask(self, question: str, default: str | None) -> str:
        self.asked.append((question, default))
        for start, answers in self.script.items():
            if question.startswith(start):
                assert answers, f"no answer left for {question!r}"
                return answers.pop(0)
        raise AssertionError(f"unexpected question {question!r}")

    def tell(self, line: str) -> None:
        self.told.append(line)


SCRIPT = {
    "Municipality name": ["Fjordvik kommune"],
    "Kommunenummer": ["999", "9998"],
    "The municipality's organisasjonsnummer": ["310000052", "310 000 051"],
    "Reporting year": ["1999", ""],
    "Environment": ["staging", "sandbox"],
    "Submission name": ["Fjordvik 2023", ""],
    "The municipality's HER-id": ["abc", "900200"],
    'HER-id of its "Saksbehandling"': ["900200", "900201"],
    "EPJ system": ["FjordEPJ"],
    "EPJ version": ["seven", "7.1.3"],
    "Service unit 1": ["", "310000078", "310000078=Fjordvik hjemmetjenester"],
    "Service unit 2": ["310000078=Again", f"{UNITS[1]}=Fjordvik sykehjem"],
    "Service unit 3": [""],
    "Path of the EPJ export": ["exports/fjordvik-2023.xml"],
    "Source plugin": ["nosuch", ""],
}


def test_interactive_answers_are_checked_and_bad_ones_asked_again(workdir: Path, cli) -> None:
    prompt = FakePrompt(SCRIPT)
    answers = prompt_answers(prompt.ask, tell=prompt.tell)

    assert all(not left for left in prompt.script.values()), prompt.script
    assert answers.municipality_number == "9998"
    assert answers.org_number == "310000051"  # spaces as people write it are dropped
    assert answers.reporting_year == profiles.available_years()[-1]  # the default
    assert answers.environment == "sandbox"
    newest = profiles.available_years()[-1]
    assert answers.name == f"fjordvik-{newest}"  # the default after a refused one
    assert answers.service_units == (
        ServiceUnitAnswer(UNITS[0], "Fjordvik hjemmetjenester"),
        ServiceUnitAnswer(UNITS[1], "Fjordvik sykehjem"),
    )
    assert answers.source_plugin == "xml"
    told = "\n".join(prompt.told)
    for expected in (
        "exactly 4 digits",
        "mod-11 check digit",
        "no reporting-year profile for 1999",
        f"not an environment of the {newest} profile",
        "lower-case letters",
        "a HER-id is a number",
        "its own HER-id",
        "dotted numbers",
        "an answer is needed",
        "ORGNUMBER=Name",
        "already listed",
        "no such source plugin",
    ):
        assert expected in told, expected
    # The questions offer what can be chosen and the defaults worth taking.
    asked = dict(prompt.asked)
    assert asked["Reporting year"] == str(profiles.available_years()[-1])
    assert any("sandbox" in q for q, _ in prompt.asked if q.startswith("Environment"))
    assert asked["Submission name"] == f"fjordvik-{profiles.available_years()[-1]}"

    out = write_manifest(answers, default_out(answers))
    assert cli("validate", out).code == 0


def test_interactive_test_environment_asks_for_endpoint_and_certificates(workdir: Path) -> None:
    prompt = FakePrompt(
        {
            "Submission name": [""],
            "Source plugin": [""],
            "Broker URL": [""],
            "NHN namespace": [""],
            "Broker user name": ["", "fjordvik-kpr"],
            "Name of the secret": ["has space", ""],
            "Folder with the certificates": ["certs"],
        }
    )
    given = {**FLAGS, "environment": "test"}
    answers = prompt_answers(prompt.ask, given=given, tell=prompt.tell)
    assert answers.endpoint_url == "amqps://sb.test.nhn.no:5671"
    assert answers.namespace == "NHNTESTServiceBus"
    assert answers.credential == "fjordvik-2023-amqp"
    assert answers.certificates == CertificatePaths.in_folder("certs")
    # Given flags are not asked again; absent certificates are a note, not a refusal.
    assert not any(q.startswith("Municipality") for q, _ in prompt.asked)
    assert any("certificate file(s) not there yet" in line for line in prompt.told)


def test_a_wrong_flag_on_a_terminal_is_reported_and_asked_again(workdir: Path) -> None:
    prompt = FakePrompt(
        {
            "The municipality's organisasjonsnummer": ["310000051"],
            "Environment": [""],
            "Submission name": [""],
            "Source plugin": [""],
        }
    )
    given = {**FLAGS, "org_number": "123456789"}
    answers = prompt_answers(prompt.ask, given=given, tell=prompt.tell)
    assert answers.org_number == "310000051"
    assert prompt.told[0].startswith("--org-number: ")


def test_endless_bad_answers_give_up() -> None:
    prompt = FakePrompt({"Municipality name": ["Fjordvik"], "Kommunenummer": ["x"] * 10})
    with pytest.raises(UsageError, match="after 5 tries"):
        prompt_answers(prompt.ask, tell=prompt.tell)


def test_without_a_terminal_every_missing_flag_is_named_in_one_line() -> None:
    with pytest.raises(UsageError) as caught:
        answers_from_values({"municipality_name": "Fjordvik kommune", "reporting_year": "2023"})
    message = caught.value.message
    assert "\n" not in message
    assert message.startswith("missing --municipality-number, --org-number, --her-id, ")
    for flag in ("--service-her-id", "--epj-system", "--epj-version", "--service-unit"):
        assert flag in message
    # Defaults (year, environment, name, plugin) are not demanded.
    for flag in ("--year", "--environment", "--name", "--source-plugin"):
        assert flag not in message


def test_production_without_a_terminal_needs_username_and_certificates() -> None:
    with pytest.raises(UsageError, match=r"^missing --username, --certs: "):
        answers_from_values({**FLAGS, "environment": "production"})


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("org_number", "310000052", "--org-number '310000052': an organisasjonsnummer is 9"),
        ("municipality_number", "301", "--municipality-number '301': a kommunenummer"),
        ("reporting_year", "2022", "--year '2022': no reporting-year profile for 2022"),
        ("environment", "qa", "--environment 'qa': not an environment of the 2023 profile"),
        ("service_units", ["310000078"], "--service-unit '310000078': give ORGNUMBER=Name"),
    ],
)
def test_a_wrong_flag_without_a_terminal_is_a_usage_error(
    key: str, value: object, expected: str
) -> None:
    values = {**FLAGS, key: value}
    if key == "environment":
        values["reporting_year"] = "2023"
        values["environment"] = "bogus"
        expected = expected.replace("'qa'", "'bogus'")
    with pytest.raises(UsageError) as caught:
        answers_from_values(values)
    assert caught.value.message.startswith(expected)


def test_an_existing_manifest_is_not_overwritten_unless_forced(workdir: Path) -> None:
    answers = answers_from_values(FLAGS)
    out = write_manifest(answers, default_out(answers))
    out.write_text("# reviewed by hand\n", encoding="utf-8")
    with pytest.raises(IplosctlError, match="exists: refusing to overwrite it"):
        write_manifest(answers, out)
    assert out.read_text(encoding="utf-8") == "# reviewed by hand\n"
    write_manifest(answers, out, force=True)
    assert out.read_text(encoding="utf-8").startswith("# yaml-language-server: $schema=")
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]


def test_init_command_without_a_terminal(
    cli,
    tmp_path: Path,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    missing = cli("init", "--municipality-number", "9997")
    assert missing.code == 64 and "missing --" in missing.err
    generate_export(tmp_path / "export.xml", recipients=8, seed=3, municipality="9997")
    flags = [
        "--municipality-number",
        "9997",
        "--municipality-name",
        "Testvik kommune",
        "--org-number",
        "310000019",
        "--her-id",
        "900300",
        "--service-her-id",
        "900301",
        "--epj-system",
        "DemoEPJ",
        "--epj-version",
        "4.2.0",
        "--service-unit",
        "310000027=Hjemmetjeneste",
        "--service-unit",
        "310000035=Sykehjem",
        "--service-unit",
        "310000043=Bofellesskap",
        "--source",
        "export.xml",
    ]
    made = cli("init", *flags)
    assert made.code == 0, made.all
    newest = profiles.available_years()[-1]  # the default year
    assert cli("validate", f"manifests/testvik-{newest}.yaml").code == 0
    assert cli("init", *flags).code == 1  # never overwrites without --force


def test_a_non_sandbox_manifest_says_its_own_format_is_blocked() -> None:
    """payload-format: the comment tells the IT person before the plan does."""
    answers = InitAnswers(
        **{
            **_typed(),
            "environment": "test",
            "username": "u",
            "credential": "c",
            "endpoint_url": "amqps://sb.test.nhn.no:5671",
            "certificates": CertificatePaths.in_folder("certs"),
        }
    )
    text = render_manifest(answers, out=Path("manifests/f.yaml"))
    hint = "Sending the register's own file"
    assert any(hint in c for c in comments(text))
    sandbox = render_manifest(InitAnswers(**_typed()), out=Path("manifests/f.yaml"))
    assert not any(hint in c for c in comments(sandbox))
