"""The bad-manifest corpus: each is answered with exit 1 and one line per problem
naming the file and line, never a traceback (issue 2, "Bad input")."""

from __future__ import annotations

import resource
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import DEMO_MANIFEST

GOOD = DEMO_MANIFEST.read_bytes()


def sub(old: str, new: str) -> Callable[[bytes], bytes]:
    def edit(data: bytes) -> bytes:
        assert old.encode() in data, old
        return data.replace(old.encode(), new.encode(), 1)

    return edit


# (id, edit of the demo manifest's bytes, expected text in the message, expected line or None)
CASES: list[tuple[str, Callable[[bytes], bytes], str, int | None]] = [
    ("yaml-syntax", sub("kind: Submission", "kind: [Submission"), "invalid YAML", 6),
    ("tab-indent", sub("  reportingYear: 2023", "\treportingYear: 2023"), "tab character", 10),
    (
        "duplicate-key",
        sub("  environment: sandbox", "  environment: sandbox\n  environment: test"),
        "duplicate key",
        12,
    ),
    ("empty", lambda _: b"", "empty", None),
    ("whitespace-only", lambda _: b"  \n\n", "empty", None),
    ("binary", lambda _: b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary data", 3),
    (
        "not-utf8",
        lambda d: d.replace(b"Demo kommune\n", b"Demo kommune \xe6\n", 1),
        "not valid UTF-8",
        14,
    ),
    (
        "wrong-type-year",
        sub("reportingYear: 2023", 'reportingYear: "twenty"'),
        "expected integer, got string",
        10,
    ),
    (
        "wrong-type-serviceunits",
        sub("  serviceUnits:\n", "  serviceUnits: many\n  x:\n"),
        "expected",
        None,
    ),
    (
        "missing-required",
        sub(
            "  sender:\n    herId: 900100               # the municipality\n"
            "    serviceHerId: 900101",
            "  other:\n    a: 1\n    b: 2",
        ),
        "missing required key 'sender'",
        9,
    ),
    (
        "unknown-key",
        sub("  reportingYear: 2023", "  reportingYear: 2023\n  reportingYaer: 2023"),
        "unknown key 'reportingYaer'",
        11,
    ),
    (
        "unknown-nested-key",
        sub("    name: Demo kommune", "    name: Demo kommune\n    nmae: x"),
        "unknown key 'nmae'",
        15,
    ),
    (
        "org-check-digit",
        sub('orgNumber: "310000019"', 'orgNumber: "310000018"'),
        "valid mod-11 check digit",
        15,
    ),
    (
        "org-with-spaces",
        sub('orgNumber: "310000019"', 'orgNumber: "310 000 019"'),
        "without spaces",
        15,
    ),
    (
        "org-unquoted-int",
        sub('orgNumber: "310000019"', "orgNumber: 310000019"),
        "expected string, got integer",
        15,
    ),
    ("kommunenummer-3-digits", sub('number: "9999"', 'number: "999"'), "exactly 4 digits", 13),
    (
        "year-without-profile",
        sub("reportingYear: 2023", "reportingYear: 2019"),
        "no reporting-year profile for 2019",
        10,
    ),
    (
        "unknown-environment",
        sub("environment: sandbox", "environment: staging"),
        "environment 'staging' does not exist",
        11,
    ),
    ("unknown-plugin", sub("plugin: xml", "plugin: excel"), "no source plugin named 'excel'", 29),
    ("missing-source-file", sub("demo-2023.xml", "nope.xml"), "does not exist", 30),
    (
        "wrong-api-version",
        sub("apiVersion: iplosctl/v1", "apiVersion: iplosctl/v2"),
        "must be 'iplosctl/v1'",
        4,
    ),
    ("bad-rule-severity", lambda d: d + b"  rules:\n    hours: fatal\n", "is not one of", 35),
    ("top-level-list", lambda _: b"- a\n- b\n", "expected a mapping", 1),
    (
        "production-without-endpoint",
        sub("environment: sandbox", "environment: test"),
        "'endpoint' is required",
        9,
    ),
    ("bad-name", sub("name: demo-2023", "name: Demo 2023"), "lower-case letters", 7),
]


@pytest.mark.parametrize(("case", "edit", "expected", "line"), CASES, ids=[c[0] for c in CASES])
def test_bad_manifest(
    cli, demo_copy: Path, case: str, edit, expected: str, line: int | None
) -> None:
    demo_copy.write_bytes(edit(GOOD))
    result = cli("validate", demo_copy)
    assert result.code == 1, result.all
    assert "Traceback" not in result.all
    problem_lines = [ln for ln in result.err.splitlines() if ln.startswith(str(demo_copy))]
    assert problem_lines, result.err
    assert any(expected in ln for ln in problem_lines), result.err
    if line is not None:
        assert any(ln.startswith(f"{demo_copy}:{line}:") for ln in problem_lines), result.err
    assert result.err.rstrip().splitlines()[-1].startswith("error: ")


def test_utf8_bom_is_accepted(cli, demo_copy: Path) -> None:
    demo_copy.write_bytes(b"\xef\xbb\xbf" + GOOD)
    result = cli("validate", demo_copy)
    assert result.code == 0, result.all


def test_every_schema_problem_is_reported_at_once(cli, demo_copy: Path) -> None:
    text = GOOD
    for edit in (
        sub("reportingYear: 2023", 'reportingYear: "x"'),
        sub('number: "9999"', 'number: "99"'),
        sub("    name: Demo kommune", "    name: Demo kommune\n    extra: 1"),
    ):
        text = edit(text)
    demo_copy.write_bytes(text)
    result = cli("validate", demo_copy)
    assert result.code == 1
    lines = [ln for ln in result.err.splitlines() if ln.startswith(str(demo_copy))]
    assert len(lines) == 3, result.err
    # sorted by position, each with its json path
    assert [ln.split(":")[1] for ln in lines] == ["10", "13", "15"]
    assert "spec.reportingYear" in lines[0] and "spec.municipality.number" in lines[1]


def test_huge_file_is_refused_without_loading(cli, demo_copy: Path) -> None:
    with demo_copy.open("ab") as fh:
        fh.truncate(50 * 1024 * 1024)
    started = time.perf_counter()
    result = cli("validate", demo_copy)
    elapsed = time.perf_counter() - started
    assert result.code == 1
    assert "over the 1,000,000 byte limit" in result.err
    # Not a speed assertion: a 50 MB YAML parse takes minutes, so this only
    # proves the file was not parsed. The budget is generous on purpose.
    assert elapsed < 30


def test_same_name_in_two_manifests(cli, demo_copy: Path) -> None:
    second = demo_copy.with_name("demo-copy.yaml")
    second.write_bytes(GOOD)
    result = cli("validate", demo_copy.parent)
    assert result.code == 1
    assert f"{second}:7:" in result.err or f"{demo_copy}:7:" in result.err
    assert "submission name 'demo-2023' is also used by" in result.err


def test_test_person_ids_are_not_echoed(cli, demo_copy: Path) -> None:
    demo_copy.write_bytes(GOOD + b'    ids: ["0590381305"]\n')  # 10 digits: invalid
    result = cli("validate", demo_copy)
    assert result.code == 1
    assert "0590381305" not in result.all
    assert "spec.testPersons.ids[0]" in result.err


def test_no_files_skips_existence_checks_only(cli, demo_copy: Path) -> None:
    demo_copy.write_bytes(GOOD.replace(b"demo-2023.xml", b"not-committed.xml"))
    assert cli("validate", demo_copy).code == 1
    assert cli("validate", "--no-files", demo_copy).code == 0
    demo_copy.write_bytes(GOOD.replace(b'"310000019"', b'"310000018"'))
    assert cli("validate", "--no-files", demo_copy).code == 1  # everything else still checked


@pytest.mark.parametrize(
    "url",
    [
        "amqps://kommune:{secret}@sb.test.nhn.no:5671",
        "amqps://{secret}@sb.test.nhn.no",
        "amqp://kommune:a/b@{secret}@127.0.0.1:5672",  # '/' and '@' inside the password
    ],
)
@pytest.mark.parametrize("command", ["validate", "plan", "support-bundle"])
def test_a_password_in_the_broker_url_is_refused_and_never_echoed(
    cli, demo_copy: Path, tmp_path: Path, url: str, command: str
) -> None:
    """Issue 12: validate, plan and support-bundle echoed the first 37 characters of the URL."""
    secret = "PlantedPw9"
    demo_copy.write_bytes(
        GOOD
        + (
            "  endpoint:\n    transport: amqp\n"
            f'    url: "{url.format(secret=secret)}"\n    credential: demo-amqp\n'
        ).encode()
    )
    bundle = tmp_path / "bundle.zip"
    extra = ["--out", str(bundle)] if command == "support-bundle" else []
    result = cli(command, *extra, demo_copy)
    assert secret not in result.all and "kommune:" not in result.all
    problems = [ln for ln in result.err.splitlines() if "spec.endpoint.url" in ln]
    assert len(problems) == 1, result.err
    assert problems[0].endswith("IPLOSCTL_SECRET_<NAME> in CI)")
    assert "never put credentials in the URL" in problems[0]
    if command == "support-bundle":  # a broken manifest is what a bundle must show
        with zipfile.ZipFile(bundle) as zf:
            inside = "".join(zf.read(n).decode() for n in zf.namelist())
        assert secret not in inside and "kommune:" not in inside
        assert "never put credentials in the URL" in inside
    else:
        assert result.code == 1


def _alias_bomb(levels: int = 10) -> str:
    """Nested aliases: ten levels of nine expand to 9^10 (3.5 billion) strings."""
    lines = ['x0: &x0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for n in range(1, levels):
        lines.append(f"x{n}: &x{n} [" + ",".join([f"*x{n - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_the_alias_bomb_is_refused_before_it_expands(demo_copy: Path) -> None:
    """Issue 12: a 600-byte manifest of nested aliases took 84 s and 1.2 GB to validate.
    Here validate runs under a 400 MB address-space limit that the expansion would exceed."""
    bomb = _alias_bomb()
    assert len(bomb) < 700
    demo_copy.write_text(GOOD.decode() + bomb)

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (400 * 2**20, 400 * 2**20))

    proc = subprocess.run(
        [str(Path(sys.executable).with_name("iplosctl")), "validate", str(demo_copy)],
        capture_output=True,
        text=True,
        preexec_fn=limit_memory,
        timeout=300,  # a safety net for a regression, not a speed assertion
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith(str(demo_copy))]
    first_anchor = GOOD.decode().count("\n") + 1
    assert lines == [
        f"{demo_copy}:{first_anchor}:5: YAML anchors and aliases are not allowed in a manifest "
        "(anchor &x0): write the value out where it is used"
    ], proc.stderr


@pytest.mark.parametrize(
    ("text", "where", "kind"),
    [
        ("a: &shared {x: 1}\nb: 2\n", "p.yaml:1:4", "anchor &shared"),
        ("a: 1\nb:\n  - *missing\n", "p.yaml:3:5", "alias *missing"),
    ],
)
def test_anchors_and_aliases_are_refused_in_every_yaml_file(
    text: str, where: str, kind: str
) -> None:
    """One loader for manifests, profiles, format profiles and lockfiles: all refuse them."""
    from iplosctl import yamlio
    from iplosctl.errors import InputError

    with pytest.raises(InputError) as caught:
        yamlio.loads(text, name="p.yaml", what="profile")
    assert caught.value.lines() == [
        f"{where}: YAML anchors and aliases are not allowed in a profile ({kind}): "
        "write the value out where it is used"
    ]
