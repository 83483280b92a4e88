"""The saved plan's reader: a file apply trusts is checked key by key, not only its kind."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from iplosctl.errors import InputError
from iplosctl.plan import Action
from iplosctl.savedplan import read_saved_plan


@pytest.fixture
def saved(cli, demo_copy: Path) -> Path:  # type: ignore[no-untyped-def]
    path = demo_copy.parent.parent / "saved.json"
    result = cli("plan", demo_copy, "--out", path)
    assert result.code == 0, result.all
    return path


def _rewrite(path: Path, change: Any) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data["submissions"][0])
    path.write_text(json.dumps(data), encoding="utf-8")


def _refusal(path: Path) -> str:
    with pytest.raises(InputError) as info:
        read_saved_plan(path)
    (line,) = info.value.lines()
    return line


def test_what_plan_out_wrote_reads_back_with_its_action_as_an_action(saved: Path) -> None:
    plan = read_saved_plan(saved)
    assert plan == json.loads(saved.read_text(encoding="utf-8"))
    (submission,) = plan["submissions"]
    assert submission["action"] is Action.SUBMIT
    assert plan["planDigest"].startswith("sha256:")


def test_a_submission_missing_a_digest_is_refused_naming_the_key(saved: Path) -> None:
    _rewrite(saved, lambda s: s.pop("sourceDigest"))
    line = _refusal(saved)
    assert "not a saved plan" in line and "submission 1: sourceDigest missing" in line


def test_an_unknown_action_is_refused(saved: Path) -> None:
    _rewrite(saved, lambda s: s.update(action="launch"))
    assert "submission 1: unknown action" in _refusal(saved)


def test_a_serial_that_is_not_a_number_is_refused(saved: Path) -> None:
    _rewrite(saved, lambda s: s.update(serial="0"))
    assert "submission 1: serial missing or not a number" in _refusal(saved)


def test_a_part_without_its_message_id_is_refused(saved: Path) -> None:
    _rewrite(saved, lambda s: s["parts"][1].pop("msgId"))
    assert "submission 1 part 2: msgId missing" in _refusal(saved)
