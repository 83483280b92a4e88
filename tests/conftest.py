"""Shared fixtures: an in-memory keyring for every test, the real broker on request."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import keyring
import keyring.backend
import keyring.errors
import pytest

from iplosctl import output
from iplosctl.cli import main
from iplosctl.identifiers import person_control_digits

REPO = Path(__file__).resolve().parent.parent
DEMO_MANIFEST = REPO / "manifests" / "demo-2023.yaml"
DEMO_EXPORT = REPO / "examples" / "exports" / "demo-2023.xml"


def planted_person_id(prefix: str) -> str:
    """A valid 11-digit number starting with the six digits `prefix` (day, month + 80 for
    Test-Norge, year): built at run time so no source file holds a real-looking number."""
    for individual in range(100, 999):
        base = f"{prefix}{individual:03d}"
        digits = person_control_digits(base)
        if digits:
            return base + "".join(map(str, digits))
    raise AssertionError(prefix)


class MemoryKeyring(keyring.backend.KeyringBackend):
    """A keyring that forgets everything when the test ends."""

    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.store: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.store.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.store[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        if self.store.pop((service, username), None) is None:
            raise keyring.errors.PasswordDeleteError(username)


@pytest.fixture(autouse=True)
def memory_keyring() -> Iterator[MemoryKeyring]:
    """No test touches a real credential store unless it installs another backend itself."""
    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Secrets and plugin pins from the developer's shell must not leak into tests."""
    for name in list(os.environ):
        if name.startswith("IPLOSCTL_SECRET_") or name == "IPLOSCTL_LOAD_PLUGINS":
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "200")


class Run:
    """Result of one in-process CLI run."""

    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    @property
    def all(self) -> str:
        return self.out + self.err


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    """Run `iplosctl ARGS` in-process through the real entry point."""

    def run(*args: str | Path) -> Run:
        capsys.readouterr()
        output.reset()
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


@pytest.fixture
def demo_copy(tmp_path: Path) -> Path:
    """The demo manifest and its export copied into a scratch folder (manifest path returned)."""
    (tmp_path / "manifests").mkdir()
    (tmp_path / "examples" / "exports").mkdir(parents=True)
    shutil.copy(DEMO_EXPORT, tmp_path / "examples" / "exports" / DEMO_EXPORT.name)
    target = tmp_path / "manifests" / DEMO_MANIFEST.name
    shutil.copy(DEMO_MANIFEST, target)
    return target
