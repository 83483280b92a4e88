"""`plan --reviewed PLANFILE`: CI's check at merge time that what would be sent now is what
the pull request's reviewer saw (issue 13: the templates used to plan again and apply that).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import Run


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def _review(cli, manifest: Path) -> tuple[Path, Run]:  # type: ignore[no-untyped-def]
    reviewed = manifest.parent.parent / "reviewed.json"
    result = cli("plan", manifest, "--out", reviewed)
    assert result.code == 0, result.all
    return reviewed, result


def test_the_same_plan_passes_and_keeps_its_exit_codes(cli, demo_copy: Path) -> None:
    reviewed, _ = _review(cli, demo_copy)
    assert cli("plan", demo_copy, "--reviewed", reviewed).code == 0
    again = cli("plan", demo_copy, "--reviewed", reviewed, "--detailed-exitcode")
    assert again.code == 2, again.all  # changes to apply, and they are the reviewed ones


def test_a_manifest_changed_since_the_review_fails(cli, demo_copy: Path) -> None:
    reviewed, _ = _review(cli, demo_copy)
    _edit(demo_copy, "Demo kommune", "Demo kommune (endret)")
    result = cli("plan", demo_copy, "--reviewed", reviewed, "--detailed-exitcode")
    assert result.code == 1
    assert f"{demo_copy}: differs from the reviewed plan {reviewed} (manifestDigest" in result.err
    assert "review that" in result.err


def test_an_export_changed_since_the_review_fails(cli, demo_copy: Path) -> None:
    reviewed, _ = _review(cli, demo_copy)
    export = demo_copy.parent.parent / "examples" / "exports" / "demo-2023.xml"
    text = export.read_text(encoding="utf-8")
    # Drop the last recipient: a different export, still valid.
    start = text.rindex("<Recipient")
    end = text.index("</Recipient>", start) + len("</Recipient>")
    export.write_text(text[:start] + text[end:], encoding="utf-8")
    result = cli("plan", demo_copy, "--reviewed", reviewed)
    assert result.code == 1
    assert "sourceDigest, payloadDigest" in result.err


def test_a_submission_nobody_reviewed_fails_and_only_skips_nothing(cli, demo_copy: Path) -> None:
    reviewed, _ = _review(cli, demo_copy)
    second = demo_copy.parent / "demo-2023-copy.yaml"
    shutil.copy(demo_copy, second)
    _edit(second, "name: demo-2023", "name: demo-2023-copy")
    result = cli("plan", demo_copy.parent, "--reviewed", reviewed)
    assert result.code == 1
    assert f"{second}: not in the reviewed plan" in result.err
    # --only leaves the unreviewed one out: the reviewed one alone passes.
    assert cli("plan", demo_copy.parent, "--only", "demo-2023", "--reviewed", reviewed).code == 0


def test_a_file_that_is_not_a_saved_plan_is_one_line_exit_1(cli, demo_copy: Path) -> None:
    bogus = demo_copy.parent / "plan.json"
    bogus.write_text("{}", encoding="utf-8")
    result = cli("plan", demo_copy, "--reviewed", bogus)
    assert result.code == 1
    assert "not a saved plan" in result.err
    assert "Traceback" not in result.all


def test_one_plan_digest_ties_the_comment_to_the_saved_plan_and_the_send(
    cli, demo_copy: Path
) -> None:
    """Issue 13, item 11: the reviewer sees a digest that apply of the saved plan repeats."""
    import json
    import re

    saved = demo_copy.parent.parent / "plan.json"
    markdown = cli("plan", demo_copy, "--format", "markdown", "--out", saved)
    digest = json.loads(saved.read_text(encoding="utf-8"))["planDigest"]
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest)
    assert f"Plan digest `{digest}`" in markdown.out
    assert f"plan digest: {digest}" in cli("plan", demo_copy).out
    assert json.loads(cli("plan", demo_copy, "--format", "json").out)["planDigest"] == digest
    applied = cli("apply", saved)
    assert applied.code == 0, applied.all
    assert f"plan digest {digest}" in applied.err
    # What was sent changes the digest: the next plan (no-op after the send) differs.
    assert f"plan digest: {digest}" not in cli("plan", demo_copy).out
