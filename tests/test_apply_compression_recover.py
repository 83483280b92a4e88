"""The lockfile records which parts went gzip-compressed, and a recover resends exactly
that (issue 13): the same MsgIds, the same RefDoc encoding, the same compressed bytes,
even when the plan made at recover time would choose differently.

Real broker, real `openssl cms`: the attempt is journaled by an apply killed at
`journaled` (nothing sent), then recovered in process with today's decision forced to
"plain" and no gzip made in the planning pass; what arrives is decrypted and compared
with the compressed payload the killed apply had written.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from lxml import etree

from iplosctl import lockfile as lf
from iplosctl import plan as plan_module
from iplosctl.apply import apply_submission
from iplosctl.manifest import load_manifest
from iplosctl.payload.compression import BASE64_CONTAINER_NS, decompress_content
from iplosctl.payload.msghead import MSGHEAD_NS
from iplosctl.plan import PartEncoding
from tests.conftest import REPO
from tests.test_apply import TODAY, Setup, openssl, receive_all, setup  # noqa: F401

pytestmark = pytest.mark.broker
MH = f"{{{MSGHEAD_NS}}}"


def _unprotect(scene: Setup, body: bytes) -> bytes:
    """The MsgHead inside a message: decrypted with the register's key, signature checked."""
    pki = scene.pki
    signed = openssl(
        "-decrypt",
        "-inform",
        "DER",
        "-recip",
        str(pki / "register-encryption.pem"),
        "-inkey",
        str(pki / "register-encryption.key"),
        data=body,
    )
    return openssl(
        "-verify", "-inform", "DER", "-binary", "-CAfile", str(pki / "ca.pem"), "-purpose",
        "any", data=signed,
    )  # fmt: skip


def _limit_between_the_parts(scene: Setup, env: dict[str, str]) -> int:
    """A message size limit KPR_IPL is over (plain) and KPR_IDE under: only one compressed."""
    exe = str(Path(sys.executable).with_name("iplosctl"))
    planned = subprocess.run(
        [exe, "plan", "--format", "json", "--today", TODAY, str(scene.manifest)],
        env=env, capture_output=True, text=True, cwd=REPO, check=False,
    )  # fmt: skip
    assert planned.returncode == 0, planned.stderr
    (s,) = json.loads(planned.stdout)["submissions"]
    sizes = {p["type"]: p["sizeBytes"] for p in s["parts"]}
    assert sizes["KPR_IPL"] > sizes["KPR_IDE"] + 4_000, sizes
    return sizes["KPR_IDE"] + plan_module.ENVELOPE_OVERHEAD_BYTES + 2_000


def test_recover_resends_the_recorded_compression_byte_for_byte(
    setup: Setup,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state = tmp_path / "state"
    monkeypatch.setenv("IPLOSCTL_STATE_DIR", str(state))
    env = {**os.environ}
    limit = _limit_between_the_parts(setup, env)
    setup.manifest.write_text(
        setup.manifest.read_text() + f"  messageSizeLimitBytes: {limit}\n", encoding="utf-8"
    )
    exe = str(Path(sys.executable).with_name("iplosctl"))
    args = [exe, "apply", "--auto-approve", "--today", TODAY, str(setup.manifest)]
    crashed = subprocess.run(
        args,
        env={**env, "IPLOSCTL_TEST_CRASH_AT": "journaled"},
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    lock = lf.load(setup.lockfile)
    assert lock is not None
    (attempt,) = lock.attempts
    assert [(p.type, p.state, p.compression) for p in attempt.parts] == [
        ("KPR_IPL", "journaled", "gzip"),
        ("KPR_IDE", "journaled", ""),
    ]
    assert "compression: gzip" in setup.lockfile.read_text()
    journaled_ids = {p.type: p.msg_id for p in attempt.parts}
    # what the killed apply was about to send: its compressed payload, still in flight
    (left,) = [p for p in (state / "inflight").iterdir() if p.is_dir()]
    packed = (left / "KPR_IPL.xml.gz").read_bytes()
    assert packed

    # Today's plan would send every part plain, and the planning pass gzips nothing:
    # the recover must still send what was journaled, compressing it again itself.
    monkeypatch.setattr(
        plan_module,
        "part_encodings",
        lambda manifest, profile, analysis: {
            t: PartEncoding("", size) for t, _d, size in analysis.part_digests
        },
    )
    monkeypatch.setattr(plan_module, "ENVELOPE_OVERHEAD_BYTES", -(10**9))
    result = apply_submission(load_manifest(setup.manifest), today=dt.date.fromisoformat(TODAY))
    assert result.action == "recover"
    assert [(p.type, p.msg_id) for p in result.sent] == list(journaled_ids.items())

    lock = lf.load(setup.lockfile)
    assert lock is not None and len(lock.attempts) == 1
    assert [(p.state, p.compression) for p in lock.attempts[0].parts] == [
        ("sent", "gzip"),
        ("sent", ""),
    ]
    # status shows which part went compressed
    from iplosctl.status import render_status, submission_status

    shown = render_status([submission_status(load_manifest(setup.manifest))])
    assert "KPR_IPL  sent" in shown and "sent gzip-compressed" in shown
    assert shown.count("gzip-compressed") == 1
    received = receive_all(setup.queue, 2)
    assert [m.message_id for m in received] == list(journaled_ids.values())
    for message, part in zip(received, lock.attempts[0].parts, strict=True):
        root = etree.fromstring(_unprotect(setup, message.body))
        assert root.findtext(f"{MH}MsgInfo/{MH}MsgId") == part.msg_id
        refdoc = root.find(f"{MH}Document/{MH}RefDoc")
        assert refdoc is not None
        compression = refdoc.find(f"{MH}Compression")
        if part.type == "KPR_IPL":
            assert compression is not None and compression.get("V") == "gzip"
            container = refdoc.find(f"{MH}Content/{{{BASE64_CONTAINER_NS}}}Base64Container")
            assert container is not None and container.text
            # byte for byte what the first apply had made, and it is the planned payload
            assert base64.b64decode(container.text) == packed
            plain = decompress_content(container.text, "gzip")
            assert f"sha256:{hashlib.sha256(plain).hexdigest()}" == part.payload_digest
        else:
            assert compression is None
