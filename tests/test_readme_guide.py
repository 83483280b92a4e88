"""The README's guide works literally for a new user on a fresh clone (issue 13, "Done when").

Every fenced block preceded by `<!-- guide: run -->` is run, in README order, line by line
in one bash session (so `. .venv/bin/activate` holds for the lines after it), in a new
`git clone` of this repository, against the sandbox. Each line must exit with the code
its comment states (`# exit N: …`), else 0.

The one shortcut: `make demo`'s install. A real `pip install -e .` takes minutes (it
compiles python-qpid-proton), so the clone gets a *borrowed* `.venv`: a new venv without
pip whose `.pth` puts the clone's own `iplosctl/` and `plugins/` first on the path and
this checkout's site-packages after them (the dependencies, and the installed
distribution's metadata for the plugin entry points; that folder's own `.pth` files,
which would import this checkout's code, are not processed). An `iplosctl` script like
pip's is written, and the Makefile's install stamps are touched, so `make demo` finds
the venv up to date and goes straight to the demo. Everything else, including
`make demo`'s system-package check, runs as a user would run it. The clone is of the
last commit (uncommitted edits are not in it).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow
MARKER = "<!-- guide: run -->"
EXIT_COMMENT = re.compile(r"#\s*exit (\d+):")


def guide_commands(readme: str) -> list[tuple[str, int]]:
    """(command, expected exit code) of every marked block's lines, in order."""
    commands: list[tuple[str, int]] = []
    lines = readme.splitlines()
    for number, line in enumerate(lines):
        if line.strip() != MARKER:
            continue
        fence = lines[number + 1]
        assert fence.startswith("```"), f"README.md:{number + 2}: {MARKER} must precede a fence"
        for body in lines[number + 2 :]:
            if body.startswith("```"):
                break
            if not body.strip() or body.lstrip().startswith("#"):
                continue
            command, _, comment = body.partition("  #")
            found = EXIT_COMMENT.match("#" + comment) if comment else None
            commands.append((command.strip(), int(found.group(1)) if found else 0))
    return commands


def test_the_guide_is_marked_and_parsed() -> None:
    commands = guide_commands((REPO / "README.md").read_text(encoding="utf-8"))
    assert commands[0] == ("make demo", 0)
    assert (". .venv/bin/activate", 0) in commands
    assert ("iplosctl plan manifests/ --detailed-exitcode", 0) in commands
    assert ("iplosctl apply plan.json", 0) in commands


def _borrow_venv(clone: Path) -> None:
    """A `.venv` in the clone that runs the clone's code on this checkout's dependencies."""
    venv = clone / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    ask = "import sysconfig; print(sysconfig.get_path('purelib'))"
    purelib = Path(
        subprocess.run(
            [str(venv / "bin" / "python"), "-c", ask], capture_output=True, text=True, check=True
        ).stdout.strip()
    )
    ours = sysconfig.get_path("purelib")
    (purelib / "_borrowed_from_checkout.pth").write_text(
        f"{clone}\n{clone / 'plugins'}\n{ours}\n", encoding="utf-8"
    )
    script = venv / "bin" / "iplosctl"
    script.write_text(
        f"#!{venv / 'bin' / 'python'}\n"
        "import sys\nfrom iplosctl.cli import main\nsys.exit(main())\n",
        encoding="utf-8",
    )
    script.chmod(0o755)
    for stamp in (".installed-runtime", ".installed-dev"):
        (venv / stamp).touch()  # newer than the clone's pyproject.toml: make installs nothing


def test_the_readme_guide_runs_as_written_in_a_fresh_clone(tmp_path: Path) -> None:
    clone = tmp_path / "iplosctl"
    subprocess.run(
        ["git", "clone", "--quiet", str(REPO), str(clone)], check=True, capture_output=True
    )
    _borrow_venv(clone)
    commands = guide_commands((clone / "README.md").read_text(encoding="utf-8"))
    # one bash session; after each line, its exit code on a line of its own
    script = "".join(
        f'{command}\necho "::exit $? {index}"\n' for index, (command, _) in enumerate(commands)
    )
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("IPLOSCTL_", "VIRTUAL_ENV", "PYTHON"))
    }
    env.update(
        HOME=str(tmp_path / "home"),
        XDG_CACHE_HOME=str(tmp_path / "cache"),
        NO_COLOR="1",
        PYTHON_KEYRING_BACKEND="keyring.backends.null.Keyring",
        PATH=os.environ["PATH"],
    )
    (tmp_path / "home").mkdir()
    done = subprocess.run(
        ["bash", "--noprofile", "--norc"],
        input=script,
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    codes = {
        int(index): int(code)
        for code, index in re.findall(r"^::exit (\d+) (\d+)$", done.stdout, re.MULTILINE)
    }
    for index, (command, expected) in enumerate(commands):
        assert index in codes, f"never ran: {command}\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        assert codes[index] == expected, (
            f"`{command}` exited {codes[index]}, the README says {expected}\n"
            f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    assert (clone / "support.zip").is_file()
    assert (clone / "plan.json").is_file()
    assert shlex.split(commands[0][0]) == ["make", "demo"]
