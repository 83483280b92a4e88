"""`attempt abandon --never-sent` for journaled parts only when the transport shows that
nothing was accepted (issue 13): the real broker's queue and a real outbox folder are
looked at (`TransportPlugin.find_accepted`), never consumed, and a message found there,
or a transport that cannot look, refuses the decision with the lockfile unchanged."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from iplosctl import lockfile as lf
from iplosctl.errors import EXIT_ERROR, EXIT_OK
from tests.conftest import REPO
from tests.test_apply import TODAY, Setup, receive_all, setup, sleeps  # noqa: F401

pytestmark = pytest.mark.broker


def _crash(scene: Setup, at: str) -> list[str]:
    """apply killed at `at`; returns the journaled attempt's message ids."""
    exe = str(Path(sys.executable).with_name("iplosctl"))
    crashed = subprocess.run(
        [exe, "apply", "--auto-approve", "--today", TODAY, str(scene.manifest)],
        env={**os.environ, "IPLOSCTL_TEST_CRASH_AT": at},
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    lock = lf.load(scene.lockfile)
    assert lock is not None and lock.attempts[0].states == {"journaled"}
    return [p.msg_id for p in lock.attempts[0].parts]


def _abandon(cli, scene: Setup):  # type: ignore[no-untyped-def]
    return cli(
        "attempt", "abandon", scene.manifest, "--attempt", "1", "--never-sent", "--reason",
        "apply was killed", "--by", "ola",
    )  # fmt: skip


def _to_directory(scene: Setup) -> Path:
    text = scene.manifest.read_text()
    start, end = text.index("  endpoint:"), text.index("  certificates:")
    scene.manifest.write_text(
        text[:start] + "  endpoint: {transport: directory, url: ../outbox,"
        f" receiverQueue: {scene.queue}}}\n" + text[end:]
    )
    (scene.root / "outbox").mkdir()
    return scene.root / "outbox" / "outbox" / scene.queue


def test_killed_before_sending_the_broker_shows_nothing_was_accepted(
    cli,
    setup: Setup,  # noqa: F811
) -> None:
    ids = _crash(setup, "journaled")
    done = _abandon(cli, setup)
    assert done.code == EXIT_OK, done.all
    lock = lf.load(setup.lockfile)
    assert lock is not None and lock.attempts[0].states == {"abandoned"}
    (decision,) = lock.attempts[0].decisions
    assert decision.basis == "never-sent" and decision.by == "ola"
    # what showed it is recorded with the reason
    assert decision.reason.startswith("apply was killed")
    assert f"none of {len(ids)} message id(s) on queue {setup.queue}" in decision.reason
    assert receive_all(setup.queue, 0) == []


def test_accepted_but_not_recorded_is_found_on_the_queue_and_refused(
    cli,
    setup: Setup,  # noqa: F811
) -> None:
    ids = _crash(setup, "accepted")  # the broker has KPR_IPL; the lockfile does not know
    before = setup.lockfile.read_bytes()
    refused = _abandon(cli, setup)
    assert refused.code == EXIT_ERROR
    assert f"KPR_IPL (msgId {ids[0]}) is on queue {setup.queue}" in refused.err
    assert "--confirmed-by-register" in refused.err
    assert setup.lockfile.read_bytes() == before
    # looking took nothing: the message is still there for KPR, exactly once
    assert [m.message_id for m in receive_all(setup.queue, 1)] == [ids[0]]


def test_a_broker_that_cannot_be_reached_shows_nothing_so_it_is_refused(
    cli,
    setup: Setup,  # noqa: F811
    sleeps: list[float],  # noqa: F811
) -> None:
    _crash(setup, "journaled")
    before = setup.lockfile.read_bytes()
    setup.manifest.write_text(
        setup.manifest.read_text().replace("amqp://127.0.0.1:5672", "amqp://127.0.0.1:1")
    )
    refused = _abandon(cli, setup)
    assert refused.code == EXIT_ERROR
    assert f"cannot look for the attempt's messages on queue {setup.queue}" in refused.err
    assert "nothing shows they were not accepted" in refused.err
    assert setup.lockfile.read_bytes() == before


@pytest.mark.parametrize("at", ["journaled", "accepted"])
def test_the_outbox_folder_shows_what_was_written(
    cli,
    setup: Setup,  # noqa: F811
    at: str,
) -> None:
    outbox = _to_directory(setup)
    ids = _crash(setup, at)
    result = _abandon(cli, setup)
    if at == "journaled":
        assert result.code == EXIT_OK, result.all
        assert not outbox.exists() or not list(outbox.iterdir())
    else:
        assert result.code == EXIT_ERROR
        assert f"KPR_IPL (msgId {ids[0]}) is on queue {setup.queue}" in result.err
        assert (outbox / f"{ids[0]}.json").exists()  # looked at, left where it was
