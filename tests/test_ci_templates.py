"""The CI templates in examples/ci and .pre-commit-hooks.yaml: they parse, have the jobs and
triggers issue 6 asks for, and every `iplosctl` command they contain really runs.

The commands run against a copy of the repository's demo (its sandbox register is
embedded), so plan, apply and receipts work offline and leave no trace in the repository.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from iplosctl import yamlio
from tests.conftest import REPO

CI = REPO / "examples" / "ci"
GITHUB_PLAN_APPLY = CI / "github" / "plan-apply.yml"
GITHUB_MATRIX = CI / "github" / "matrix.yml"
GITLAB = CI / "gitlab" / ".gitlab-ci.yml"
PRE_COMMIT_HOOKS = REPO / ".pre-commit-hooks.yaml"
TEMPLATES = (GITHUB_PLAN_APPLY, GITHUB_MATRIX, GITLAB)
MARKER = "<!-- iplosctl-plan -->"
DEMO = "demo-2023"
#: CI expressions that may appear in an iplosctl line, and what they are in the demo
PLACEHOLDERS = {"${{ matrix.municipality }}": DEMO}


def load(path: Path) -> Any:
    """Parse with the project's ruamel configuration (duplicate keys are errors)."""
    return yamlio.loads(path.read_text(encoding="utf-8"), name=str(path))


def strings(node: Any) -> Iterator[str]:
    """Every string value in document order (scripts, `run:` blocks, rules)."""
    if isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)
    elif isinstance(node, str):
        yield node


#: keys whose values are shell: GitHub's `run`, GitLab's script lists
SCRIPT_KEYS = frozenset({"run", "script", "before_script", "after_script"})


def scripts(node: Any) -> Iterator[str]:
    """The shell scripts of a template in document order (not names, conditions, rules)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from strings(value) if key in SCRIPT_KEYS else scripts(value)
    elif isinstance(node, list):
        for value in node:
            yield from scripts(value)


def shell_lines(script: str) -> Iterator[str]:
    """Logical shell lines: a trailing backslash continues the line."""
    pending = ""
    for line in script.splitlines():
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        yield pending + line
        pending = ""
    if pending:
        yield pending


def iplosctl_commands(data: Any) -> list[str]:
    """Each `iplosctl …` command line, placeholders filled in for the demo."""
    commands = []
    for script in scripts(data):
        for line in shell_lines(script):
            stripped = " ".join(line.split())
            if not stripped.startswith("iplosctl "):
                continue
            for placeholder, value in PLACEHOLDERS.items():
                stripped = stripped.replace(placeholder, value)
            assert "${{" not in stripped, f"unknown placeholder in {stripped!r}"
            commands.append(stripped)
    return commands


@pytest.fixture
def demo_repo(tmp_path: Path) -> Path:
    """A municipality repository as the templates expect: manifests/ (the demo) and examples/."""
    repo = tmp_path / "repo"
    ignore = shutil.ignore_patterns("*.lock.yaml", "*.lock.yaml.*", ".*.tmp")
    shutil.copytree(REPO / "manifests", repo / "manifests", ignore=ignore)
    shutil.copytree(REPO / "examples", repo / "examples", ignore=ignore)
    return repo


def environment(repo: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IPLOSCTL_SECRET_")}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        IPLOSCTL_STATE_DIR=str(repo.parent / "state"),
        XDG_CACHE_HOME=str(repo.parent / "cache"),
        XDG_STATE_HOME=str(repo.parent / "xdg-state"),
        NO_COLOR="1",
        PYTHON_KEYRING_BACKEND="keyring.backends.null.Keyring",
        MUNICIPALITY=DEMO,  # the matrix jobs' shell variable
    )
    return env


def run_line(line: str, repo: Path) -> subprocess.CompletedProcess[str]:
    """Run one template line as CI would: bash, in the repository, pipefail on."""
    return subprocess.run(
        ["bash", "-o", "pipefail", "-c", line],
        cwd=repo,
        env=environment(repo),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def run_commands(commands: list[str], repo: Path) -> None:
    for line in commands:
        proc = run_line(line, repo)
        allowed = (0, 2) if "--detailed-exitcode" in line else (0,)
        assert proc.returncode in allowed, f"{line}\nexit {proc.returncode}\n{proc.stderr}"


# ---------------------------------------------------------------- every template


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: str(p.relative_to(CI)))
def test_template_parses_and_names_only_real_commands(template: Path) -> None:
    data = load(template)
    assert isinstance(data, dict)
    commands = iplosctl_commands(data)
    assert commands, "a template without iplosctl commands"
    known = {"validate", "plan", "apply", "receipts", "status"}
    for command in commands:
        assert shlex.split(command)[1] in known, command


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: str(p.relative_to(CI)))
def test_every_iplosctl_command_runs_against_the_demo(template: Path, demo_repo: Path) -> None:
    commands = iplosctl_commands(load(template))
    run_commands(commands, demo_repo)
    comment = demo_repo / "plan.md"
    if any("> plan.md" in c for c in commands):
        # What the sticky comment or note shows: the markdown plan, within the size limits.
        text = comment.read_text(encoding="utf-8")
        assert text.startswith("### iplosctl plan") and DEMO in text
        assert len(text) < 60_000
    # Whatever the template applied was accepted by the sandbox register: nothing left to do.
    lockfile = demo_repo / "manifests" / f"{DEMO}.lock.yaml"
    assert lockfile.is_file()
    again = run_line("iplosctl plan manifests/ --detailed-exitcode", demo_repo)
    assert again.returncode == 0, again.stdout + again.stderr
    status = run_line("iplosctl status manifests/", demo_repo)
    assert "accepted" in status.stdout, status.stdout


# ---------------------------------------------------------------- GitHub Actions


def test_github_plan_apply_has_the_three_workflows_in_one() -> None:
    data = load(GITHUB_PLAN_APPLY)
    triggers = data["on"]
    assert "pull_request" in triggers
    assert triggers["push"]["branches"] == ["main"]
    assert triggers["schedule"][0]["cron"]
    jobs = data["jobs"]
    assert set(jobs) >= {"plan", "plan-main", "apply", "receipts"}
    assert "pull_request" in jobs["plan"]["if"]
    assert jobs["plan"]["permissions"]["pull-requests"] == "write"
    assert "push" in jobs["plan-main"]["if"]
    assert "schedule" in jobs["receipts"]["if"]

    apply = jobs["apply"]
    assert apply["environment"] == "kpr"
    assert apply["needs"] == "plan-main"
    assert apply["permissions"]["contents"] == "write"
    assert apply["concurrency"]["cancel-in-progress"] is False
    assert any(k.startswith("IPLOSCTL_SECRET_") for k in _env_keys(GITHUB_PLAN_APPLY))


def _env_keys(path: Path) -> list[str]:
    """Env names set or shown (commented) in a template: secrets are IPLOSCTL_SECRET_*."""
    return re.findall(r"^\s*#?\s*(IPLOSCTL_SECRET_[A-Z0-9_]+):", path.read_text(), re.M)


def test_github_plan_is_one_sticky_comment_and_artifacts() -> None:
    jobs = load(GITHUB_PLAN_APPLY)["jobs"]
    steps = jobs["plan"]["steps"]
    commands = iplosctl_commands(jobs["plan"])
    assert "iplosctl validate manifests/" in commands
    assert any("--format markdown" in c and "--out plan.json" in c for c in commands)
    assert any("--format json" in c for c in commands)

    script_steps = [s for s in steps if str(s.get("uses", "")).startswith("actions/github-script")]
    assert len(script_steps) == 1
    script = script_steps[0]["with"]["script"]
    assert MARKER in script
    assert "updateComment" in script and "createComment" in script
    assert "paginate" in script  # a long discussion must not hide the old comment
    assert script_steps[0]["if"].startswith("always()")  # a blocked plan is posted too

    uploads = [s for s in steps if str(s.get("uses", "")).startswith("actions/upload-artifact")]
    paths = uploads[0]["with"]["path"]
    assert "plan.json" in paths and "plan-report.json" in paths


def test_github_apply_applies_the_saved_plan_and_commits_lockfiles() -> None:
    jobs = load(GITHUB_PLAN_APPLY)["jobs"]
    assert any("--out plan.json" in c for c in iplosctl_commands(jobs["plan-main"]))
    assert "iplosctl apply plan.json" in iplosctl_commands(jobs["apply"])
    assert "iplosctl receipts manifests/" in iplosctl_commands(jobs["receipts"])
    for job in ("apply", "receipts"):
        scripts = "\n".join(strings(jobs[job]))
        assert "'manifests/*.lock.yaml'" in scripts
        assert "git push origin HEAD:main" in scripts
        assert "[skip ci]" in scripts


def test_github_matrix_applies_each_municipality_alone() -> None:
    data = load(GITHUB_MATRIX)
    assert data["on"]["push"]["branches"] == ["main"]
    apply = data["jobs"]["apply"]
    strategy = apply["strategy"]
    assert strategy["fail-fast"] is False
    assert "fromJSON(needs.submissions.outputs.names)" in strategy["matrix"]["municipality"]
    assert apply["env"]["MUNICIPALITY"] == "${{ matrix.municipality }}"
    assert apply["environment"] == "kpr"
    commands = iplosctl_commands(apply)
    assert all('--only "$MUNICIPALITY"' in c for c in commands if " plan " in f" {c} ")
    scripts = "\n".join(strings(apply))
    # Only its own lockfile, then rebase and retry until the push wins.
    assert 'git add -- "$lock"' in scripts and "git add -A" not in scripts
    assert re.search(r"for attempt in .*\n(.*\n)*?.*git rebase origin/main", scripts)


def test_github_matrix_lists_submissions_from_status_json(demo_repo: Path) -> None:
    listing = iplosctl_commands(load(GITHUB_MATRIX)["jobs"]["submissions"])
    run_commands(listing, demo_repo)
    status = json.loads((demo_repo / "status.json").read_text(encoding="utf-8"))
    assert [s["name"] for s in status["submissions"]] == [DEMO]


# ---------------------------------------------------------------- GitLab CI


def test_gitlab_has_merge_request_default_branch_and_schedule_jobs() -> None:
    data = load(GITLAB)
    assert data["stages"] == ["validate", "plan", "apply", "receipts"]
    jobs = {k: v for k, v in data.items() if isinstance(v, dict) and "script" in v}
    assert {"validate", "plan:merge-request", "plan:default-branch", "apply", "receipts"} <= set(
        jobs
    )
    rules = "\n".join(strings(data["workflow"]))
    for source in ('"merge_request_event"', '"schedule"', "$CI_DEFAULT_BRANCH"):
        assert source in rules
    assert data["plan:merge-request"]["extends"] == ".on-merge-request"
    assert data["apply"]["extends"] == ".on-default-branch"
    assert data["receipts"]["extends"] == ".on-schedule"
    assert data["apply"]["environment"]["name"] == "kpr"
    assert data["apply"]["needs"] == ["plan:default-branch"]
    assert data["apply"]["resource_group"] == data["receipts"]["resource_group"]
    assert "iplosctl apply plan.json" in iplosctl_commands(data["apply"])


def test_gitlab_plan_is_one_merge_request_note_found_by_the_marker() -> None:
    job = load(GITLAB)["plan:merge-request"]
    scripts = "\n".join(strings(job))
    assert MARKER in scripts
    assert "/merge_requests/" in scripts and "/notes" in scripts
    assert '"PUT"' in scripts and '"POST"' in scripts
    assert "X-Next-Page" in scripts  # every page of notes is searched
    assert job["artifacts"]["when"] == "always"
    assert {"plan.json", "plan-report.json"} <= set(job["artifacts"]["paths"])
    commands = iplosctl_commands(job)
    assert any("--format markdown" in c and "--out plan.json" in c for c in commands)


def test_gitlab_note_script_is_valid_python() -> None:
    job = load(GITLAB)["plan:merge-request"]
    script = next(s for s in strings(job) if "<<'EOF'" in s)
    body = script.split("<<'EOF'\n", 1)[1].rsplit("\nEOF", 1)[0]
    compile(body, "gitlab-note.py", "exec")


def test_gitlab_commits_lockfiles_with_rebase_and_retry() -> None:
    data = load(GITLAB)
    commit = "\n".join(strings(data[".commit-lockfiles"]))
    assert "'manifests/*.lock.yaml'" in commit
    assert "git rebase FETCH_HEAD" in commit and "[skip ci]" in commit
    for job in ("apply", "receipts"):
        assert [".commit-lockfiles", "script"] in data[job]["script"]


# ---------------------------------------------------------------- pre-commit


def _hook() -> dict[str, Any]:
    hooks = load(PRE_COMMIT_HOOKS)
    assert isinstance(hooks, list) and len(hooks) == 1
    hook: dict[str, Any] = hooks[0]
    return hook


def test_pre_commit_hook_declares_iplosctl_validate() -> None:
    hook = _hook()
    assert hook["id"] == "iplosctl-validate"
    assert hook["language"] == "python"
    assert hook["pass_filenames"] is True
    assert shlex.split(hook["entry"]) == ["iplosctl", "validate", "--no-files"]


@pytest.mark.parametrize(
    ("path", "selected"),
    [
        ("manifests/demo-2023.yaml", True),
        ("manifests/kommuner/oslo-2023.yml", True),
        ("examples/fjordvik/manifests/fjordvik-2023.yaml", True),
        ("manifests/demo-2023.lock.yaml", False),
        (".github/workflows/iplosctl.yml", False),
        ("examples/ci/gitlab/.gitlab-ci.yml", False),
    ],
)
def test_pre_commit_hook_selects_manifests_not_lockfiles(path: str, selected: bool) -> None:
    hook = _hook()
    chosen = bool(re.search(hook["files"], path)) and not re.search(hook["exclude"], path)
    assert chosen is selected


def test_pre_commit_entry_validates_the_files_it_is_given(demo_repo: Path) -> None:
    entry = _hook()["entry"]
    good = run_line(f"{entry} manifests/{DEMO}.yaml", demo_repo)
    assert good.returncode == 0, good.stderr
    broken = demo_repo / "manifests" / "broken.yaml"
    text = (demo_repo / "manifests" / f"{DEMO}.yaml").read_text(encoding="utf-8")
    broken.write_text(text.replace('orgNumber: "310000019"', 'orgNumber: "310000018"'))
    bad = run_line(f"{entry} manifests/{DEMO}.yaml manifests/broken.yaml", demo_repo)
    assert bad.returncode == 1
    assert "manifests/broken.yaml:" in bad.stderr
