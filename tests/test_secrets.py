from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import keyring
import keyring.backends.fail
import pytest

from iplosctl.errors import SecretError
from iplosctl.secrets import delete_secret, env_var_name, get_secret, set_secret


def test_env_var_name() -> None:
    assert env_var_name("amqp-password") == "IPLOSCTL_SECRET_AMQP_PASSWORD"
    assert env_var_name("fjordvik.amqp") == "IPLOSCTL_SECRET_FJORDVIK_AMQP"


def test_environment_wins_over_keyring(monkeypatch: pytest.MonkeyPatch) -> None:
    set_secret("amqp", "from-keyring")
    assert get_secret("amqp") == "from-keyring"
    monkeypatch.setenv("IPLOSCTL_SECRET_AMQP", "from-env")
    assert get_secret("amqp") == "from-env"


def test_missing_secret_says_how_to_set_it() -> None:
    with pytest.raises(SecretError, match=r"iplosctl secrets set nope.*IPLOSCTL_SECRET_NOPE"):
        get_secret("nope")


def test_no_backend_is_one_clear_line() -> None:
    keyring.set_keyring(keyring.backends.fail.Keyring())
    with pytest.raises(SecretError) as info:
        get_secret("amqp")
    assert "IPLOSCTL_SECRET_AMQP" in info.value.message
    assert "\n" not in info.value.message


def test_cli_set_and_delete_never_print_the_value(
    cli,
    memory_keyring,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    # stdin is not a TTY here, so the value is read from it
    monkeypatch.setattr(sys, "stdin", io.StringIO("hunter2-zz\n"))
    result = cli("secrets", "set", "amqp")
    assert result.code == 0
    assert "hunter2-zz" not in result.all
    assert memory_keyring.store[("iplosctl", "amqp")] == "hunter2-zz"
    assert cli("secrets", "delete", "amqp").code == 0
    with pytest.raises(SecretError):
        delete_secret("amqp")
    assert cli("secrets", "delete", "amqp").code == 1


def test_cli_without_backend_exits_1(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "iplosctl.cli", "secrets", "set", "x"],
        input="hunter2-zz\n",
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("error: cannot store secret 'x': no keyring backend")
    assert "Traceback" not in proc.stderr and "hunter2-zz" not in proc.stderr
