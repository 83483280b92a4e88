"""Unverified receipts are looked at again on every `receipts` run.

A receipt that fails verification because the manifest names the wrong register
certificate (or trust anchor) is quarantined as `unverified`; it has already left
the queue, so the quarantine holds the only copy. Fixing the manifest must recover
it: the next run verifies it again and records it. Real CMS throughout.
"""

from __future__ import annotations

import json
import uuid

from iplosctl import lockfile, receipts
from iplosctl.manifest import load_manifest
from tests.test_receipts import (  # noqa: F401  (offline, pki: fixtures)
    Env,
    FakeBus,
    apprec_body,
    collect,
    offline,
    pki,
)


def _set_register_signing(env: Env, certificate: str) -> None:
    text = env.manifest.path.read_text()
    lines = text.splitlines()
    register = lines.index("    register:")
    assert lines[register + 1].startswith("      signing: ")
    lines[register + 1] = f"      signing: {certificate}"
    env.manifest.path.write_text("\n".join(lines) + "\n")
    env.manifest = load_manifest(env.manifest.path)


def test_fixing_the_register_certificate_recovers_an_unverified_receipt(
    offline: tuple[Env, FakeBus],  # noqa: F811
) -> None:
    env, bus = offline
    right = str(env.pki.certificate("register-signing"))
    _set_register_signing(env, str(env.pki.certificate("municipality-signing")))  # a mistake
    ipl = env.part("KPR_IPL")
    bus.put(env.reply_queue, apprec_body(env, ipl, apprec_id="rec-late"))
    first = collect(env)
    (entry,) = env.quarantine()
    assert entry.kind == receipts.UNVERIFIED
    assert env.part("KPR_IPL").state == "sent" and first.recorded == []
    assert bus.queues[env.reply_queue] == []  # off the queue: quarantine has the only copy

    again = collect(env)  # nothing fixed yet: it stays, untouched
    assert [e.kind for e in env.quarantine()] == [receipts.UNVERIFIED]
    assert again.reexamined == 0

    _set_register_signing(env, right)
    fixed = collect(env)
    part = env.part("KPR_IPL")
    assert part.state == "accepted"
    assert part.receipt is not None and part.receipt.receipt_id == "rec-late"
    assert fixed.reexamined == 1
    assert "1 from quarantine now verified" in receipts.summary_line(fixed)
    assert env.quarantine() == []
    assert not entry.path.exists() and not entry.metadata_path.exists()


def test_a_recovered_receipt_of_another_submission_is_marked_for_it(
    offline: tuple[Env, FakeBus],  # noqa: F811
) -> None:
    """Verified now, but it answers a message this lockfile does not know: it becomes
    `unmatched` with its original message id, which the other submission's run adopts."""
    env, bus = offline
    right = str(env.pki.certificate("register-signing"))
    _set_register_signing(env, str(env.pki.certificate("municipality-signing")))
    stranger = lockfile.Part("KPR_IPL", str(uuid.uuid4()), "sha256:x")
    bus.put(env.reply_queue, apprec_body(env, stranger))
    collect(env)
    _set_register_signing(env, right)
    collect(env)
    (entry,) = env.quarantine()
    assert (entry.kind, entry.original_msg_id) == (receipts.UNMATCHED, stranger.msg_id)
    meta = json.loads(entry.metadata_path.read_text())
    assert meta["kind"] == receipts.UNMATCHED and "not in" in meta["reason"]
    assert oct(entry.metadata_path.stat().st_mode & 0o777) == "0o600"
