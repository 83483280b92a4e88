"""support-bundle: the facts to attach when reporting a problem to the register.

The KPR letter (2021) asks municipalities to report problems with a submission at
once ("Meld fra straks det er problemer med innsending"), especially after the
first deadline. The register's staff then need the same few facts every time:
tool and plugin versions, digests, MsgIds, timestamps, part states, receipt codes
and broker error conditions. This module gathers them into one zip, `bundle.json`
(machine-readable) and `README.txt` (for the person who sends it), so nobody
pastes a lockfile, a manifest or, worse, an export into an e-mail.

What goes in is chosen field by field, never copied wholesale, because the
bundle leaves the municipality (DESIGN.md §5):

- no person ids, names or export contents: the export is represented by its
  sha256 only, the manifest's test persons by their count;
- receipt errors keep code, system and DN (through `privacy.scrub`), never OT,
  which the register fills with free text that may quote the record;
- transport errors keep their condition, never description or data;
- quarantined receipts keep kind, reason and time, never their bodies;
- no secrets: secret names are reported as "set", never resolved (except a
  PKCS#12 passphrase, used in memory to read a certificate); the endpoint's user
  name is reported as "set"/"not set"; certificates are described by subject CN,
  serial and validity dates, keys not at all.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import platform
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography.x509.oid import NameOID

from iplosctl import __version__, endpoint, lockfile, plugins, profiles
from iplosctl.atomic import write_atomic
from iplosctl.errors import IplosctlError
from iplosctl.manifest import Manifest
from iplosctl.manifest.checks import BrokenManifest
from iplosctl.plan import deadline_window, file_digest, plan_submission
from iplosctl.privacy import scrub, suppressed
from iplosctl.receipts import list_quarantine
from iplosctl.secrets import get_secret

BUNDLE_FORMAT_VERSION = "1"
BUNDLE_JSON = "bundle.json"
README_TXT = "README.txt"
#: members in the order they are written, so two bundles of one state compare equal
MEMBERS = (README_TXT, BUNDLE_JSON)
#: environment variables that change behaviour and hold no secret (names or words only)
_REPORTED_ENV = ("IPLOSCTL_LOAD_PLUGINS", "IPLOSCTL_SANDBOX_BEHAVIOUR")
_USERINFO = re.compile(r"^([a-z][a-z0-9+.-]*://)[^/@]*@", re.IGNORECASE)


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _set(value: object) -> str:
    """How a value that must not leave the machine is reported: only whether it is there."""
    return "set" if value else "not set"


def _error_text(exc: IplosctlError) -> str:
    """The first line of an error, scrubbed. Our messages hold no personal data by design
    (errors.py); the scrub is a second line of defence because this text leaves the house."""
    return scrub(exc.lines()[0]) if exc.lines() else type(exc).__name__


# --- the facts --------------------------------------------------------------------


def _tool() -> dict[str, Any]:
    """Versions of everything that could explain a behaviour; no host or user name."""
    try:
        installed: list[dict[str, str]] | dict[str, str] = [
            {"kind": p.kind, "name": p.name, "distribution": p.distribution, "version": p.version}
            for p in plugins.all_installed()
        ]
    except IplosctlError as exc:  # duplicate plugins are exactly what a bundle must show
        installed = {"error": _error_text(exc)}
    return {
        "iplosctl": __version__,
        "plugins": installed,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "environment": {name: os.environ.get(name) for name in _REPORTED_ENV},
    }


def _certificate(path: Path | None, passphrase_secret: str | None = None) -> dict[str, Any] | None:
    """Subject CN, serial and validity of a certificate file; never its key or full subject."""
    if path is None:
        return None
    from iplosctl.payload.cms import load_certificate

    described: dict[str, Any] = {"file": path.name}
    try:
        try:
            cert = load_certificate(path)
        except IplosctlError:
            if not passphrase_secret:
                raise
            # A PKCS#12 bag is encrypted: the passphrase is used here, in memory, only.
            cert = load_certificate(path, get_secret(passphrase_secret))
    except IplosctlError as exc:
        # the file name is enough to act on; a full path may name the user's home folder
        described["error"] = _error_text(exc).replace(str(path), path.name)
        return described
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    described.update(
        {
            "subjectCN": str(cns[0].value) if cns else None,
            "serial": f"{cert.serial_number:x}",
            "notBefore": _iso(cert.not_valid_before_utc),
            "notAfter": _iso(cert.not_valid_after_utc),
        }
    )
    return described


def _certificates(manifest: Manifest, sandbox: bool) -> dict[str, Any] | None:
    c = manifest.certificates
    if c is not None:
        return {
            "signing": _certificate(c.signing.certificate, c.signing.passphrase_secret),
            "signingKey": _set(c.signing.key),
            "signingPassphrase": _set(c.signing.passphrase_secret),
            "encryption": _certificate(c.encryption.certificate, c.encryption.passphrase_secret),
            "encryptionKey": _set(c.encryption.key),
            "encryptionPassphrase": _set(c.encryption.passphrase_secret),
            "registerSigning": _certificate(c.register.signing),
            "registerEncryption": _certificate(c.register.encryption),
            "trustAnchors": _set(c.register.trust_anchors),
        }
    if not sandbox:
        return None
    # The embedded register's test PKI, if a rehearsal has created it (never created here).
    from iplosctl.sandbox.pki import LEAVES, PkiFiles

    pki = PkiFiles(endpoint.state_dir(manifest) / "sandbox" / "pki")
    if not pki.ca.is_file():
        return {"sandboxPki": "not created yet"}
    return {"sandboxPki": {stem: _certificate(pki.certificate(stem)) for stem in LEAVES}}


def _endpoint(manifest: Manifest) -> dict[str, Any] | None:
    e = manifest.endpoint
    if e is None:
        return None
    return {
        "transport": e.transport,
        # the schema forbids credentials in the URL; strip them anyway, this text leaves
        "url": _USERINFO.sub(r"\1", e.url) if e.url else None,
        "namespace": e.namespace,
        "username": _set(e.username),
        "credential": _set(e.credential),
        "cpaId": e.cpa_id,
        "receiverQueue": e.receiver_queue,
        "timeoutSeconds": e.timeout_seconds,
        "tls": {
            "caFile": e.tls.ca_file.name if e.tls.ca_file else None,
            "verifyPeerName": e.tls.verify_peer_name,
            "clientCertificate": _certificate(e.tls.client_certificate),
            "clientKey": _set(e.tls.client_key),
        },
    }


def _source(manifest: Manifest) -> dict[str, Any]:
    """The export by digest and size only: its contents are the personal data."""
    path = manifest.source.path
    described: dict[str, Any] = {
        "plugin": manifest.source.plugin,
        "format": manifest.source.format,
        "file": path.name,
    }
    try:
        described["sizeBytes"] = path.stat().st_size
        described["digest"] = file_digest(path)
    except OSError as exc:
        described["error"] = f"cannot read the export ({exc.strerror or type(exc).__name__})"
    return described


def _plan(manifest: Manifest, today: dt.date) -> dict[str, Any]:
    """What `plan` says now: action, digests, next MsgIds, findings counted by rule."""
    try:
        plan = plan_submission(manifest, today=today)
    except IplosctlError as exc:
        return {"error": _error_text(exc)}
    return {
        "action": plan.action,
        "reason": scrub(plan.reason),
        "attempt": plan.attempt,
        "sourceDigest": plan.source_digest,
        "payloadDigest": plan.payload_digest,
        "profileDigest": plan.profile_digest,
        "parts": [
            {
                "type": p.type,
                "msgId": p.msg_id,
                "payloadDigest": p.payload_digest,
                "sizeBytes": p.size_bytes,
            }
            for p in plan.parts
        ],
        # counts only (small ones suppressed); record positions would point into the export
        "findings": [
            {
                "rule": f.rule,
                "severity": f.severity,
                "message": scrub(f.message),
                "count": suppressed(f.count),
            }
            for f in plan.findings
        ],
    }


def _receipt(receipt: lockfile.Receipt | None) -> dict[str, Any] | None:
    if receipt is None:
        return None
    return {
        "status": receipt.status,
        "meaning": lockfile.RECEIPT_STATES.get(receipt.status, "unknown"),
        "receiptId": receipt.receipt_id,
        "receivedAt": receipt.received_at,
        # OT (original_text) is left out on purpose: it may quote the rejected record.
        "errors": [
            {"code": e.code, "system": e.system, "text": scrub(e.text)} for e in receipt.errors
        ],
    }


def _part(p: lockfile.Part) -> dict[str, Any]:
    return {
        "type": p.type,
        "msgId": p.msg_id,
        "payloadDigest": p.payload_digest,
        "state": p.state,
        "sizeBytes": p.size_bytes,
        "journaledAt": p.journaled_at,
        "compression": p.compression,
        "sentAt": p.sent_at,
        "receiptAt": p.receipt_at,
        "receipt": _receipt(p.receipt),
        # the condition is the bus's code; description and data are free text
        "transportError": (
            {"condition": p.transport_error.get("condition", "")} if p.transport_error else None
        ),
    }


def _decision(d: lockfile.Decision) -> dict[str, Any]:
    """An operator's decision (`attempt abandon`): who, when, why, on what basis.

    Who and why are free text typed by a person, so they are scrubbed again here: a
    lockfile written by hand or by an older iplosctl may hold them verbatim (issue 13).
    """
    return {
        "at": d.at,
        "by": scrub(d.by),
        "action": d.action,
        "basis": d.basis,
        "reason": scrub(d.reason),
        "parts": list(d.parts),
    }


def _lockfile(manifest: Manifest) -> dict[str, Any] | None:
    """Every attempt, not only the last: the register matches MsgIds against its logs."""
    path = manifest.lockfile_path
    try:
        lock = lockfile.load(path)
    except IplosctlError as exc:
        return {"file": path.name, "error": _error_text(exc)}
    if lock is None:
        return None
    return {
        "file": path.name,
        "submission": lock.submission,
        "lineage": lock.lineage,
        "serial": lock.serial,
        "attempts": [
            {
                "number": a.number,
                "createdAt": a.created_at,
                "manifestDigest": a.manifest_digest,
                "sourceDigest": a.source_digest,
                "payloadDigest": a.payload_digest,
                "parts": [_part(p) for p in a.parts],
                "decisions": [_decision(d) for d in a.decisions],
            }
            for a in lock.attempts
        ],
    }


def _quarantine(manifest: Manifest) -> list[dict[str, Any]]:
    """Kind, reason and time of each quarantined message; the bodies stay on this machine."""
    return [
        {
            "at": q.quarantined_at,
            "queue": q.queue,
            "kind": q.kind,
            "reason": scrub(q.reason),
            # read from a message that came from outside: scrubbed like any outside text
            "originalMsgId": scrub(q.original_msg_id) if q.original_msg_id else None,
        }
        for q in list_quarantine(manifest)
    ]


def _register(profile: profiles.Profile) -> dict[str, Any]:
    return {
        "name": profile.register_name,
        "ediAddress": profile.edi_address,
        "contacts": [{"topic": c.topic, "address": c.address} for c in profile.contacts],
    }


def _submission(manifest: Manifest, today: dt.date) -> dict[str, Any]:
    profile = profiles.profile_for(manifest)
    env = profile.environments[manifest.environment]
    address = endpoint.addressing(manifest)
    return {
        "name": manifest.name,
        "manifest": manifest.path.name,
        "manifestDigest": manifest.digest,
        "year": manifest.reporting_year,
        "environment": manifest.environment,
        "environmentDescription": env.description,
        "municipality": {
            "number": manifest.municipality.number,
            "name": manifest.municipality.name,
            "orgNumber": manifest.municipality.org_number,
        },
        "epj": {"system": manifest.epj.system, "version": manifest.epj.version},
        "addressing": {
            "receiverHerId": address.receiver_her_id,
            "senderHerId": address.sender_her_id,
            "serviceHerId": address.service_her_id,
            "toQueue": address.to_queue,
            "replyQueue": address.reply_queue,
            "errorQueue": address.error_queue,
            "cpaId": address.cpa_id,
        },
        "endpoint": _endpoint(manifest),
        "certificates": _certificates(manifest, env.sandbox),
        "source": _source(manifest),
        # how many test persons are declared, never who
        "testPersons": {
            "names": len(manifest.test_persons.names),
            "ids": len(manifest.test_persons.ids),
        },
        "ruleOverrides": dict(sorted(manifest.rule_severities.items())),
        "deadline": deadline_window(profile, today, env.sandbox),
        # which year profile the register's facts came from: an overlay of the
        # municipality's repository (file name only) and what no source confirms
        "profile": {
            "overlay": profile.overlay.name if profile.overlay else None,
            "unverified": [u.path for u in profile.unverified],
        },
        "plan": _plan(manifest, today),
        "lockfile": _lockfile(manifest),
        "quarantined": _quarantine(manifest),
        "register": _register(profile),
    }


def bundle_data(
    manifests: Sequence[Manifest],
    *,
    today: dt.date | None = None,
    created_at: dt.datetime | None = None,
    broken: Sequence[BrokenManifest] = (),
) -> dict[str, Any]:
    """Everything `bundle.json` holds, as plain data (see the module docstring for why each).

    `broken` manifests (unreadable, failing a check, export missing) are listed with their
    problems, scrubbed: a bundle is most needed exactly when something is broken.
    """
    today = today or dt.date.today()
    created = created_at or dt.datetime.now(dt.UTC)
    return {
        "bundleFormatVersion": BUNDLE_FORMAT_VERSION,
        "createdAt": _iso(created),
        "tool": _tool(),
        "submissions": [_submission(m, today) for m in manifests],
        "unusableManifests": [
            {
                "manifest": str(b.path),
                "name": b.label,
                "problems": [scrub(str(p)) for p in b.problems],
            }
            for b in broken
        ],
    }


# --- the human-readable part ------------------------------------------------------


def _contacts_text(data: dict[str, Any]) -> list[str]:
    seen: dict[str, dict[str, Any]] = {}
    for s in data["submissions"]:
        seen.setdefault(json.dumps(s["register"], sort_keys=True), s["register"])
    lines: list[str] = []
    for register in seen.values():
        edi = f" (EDI address {register['ediAddress']})" if register["ediAddress"] else ""
        lines.append(f"  {register['name']}{edi}:")
        lines += [f"    {c['address']}  ({c['topic']})" for c in register["contacts"]]
    return lines or ["  (no submission given: see your reporting year's letter)"]


def _attempt_text(attempt: dict[str, Any]) -> list[str]:
    lines = [f"  attempt {attempt['number']} ({attempt['createdAt']}):"]
    for p in attempt["parts"]:
        when = (
            f"sent {p['sentAt']}"
            if p["sentAt"]
            else f"journaled {p['journaledAt']}, not known to be sent"
            if p["journaledAt"]
            else "not sent"
        )
        lines.append(f"    {p['type']:<8} msgId {p['msgId']}  {p['state']}  {when}")
        receipt = p["receipt"]
        if receipt:
            lines.append(
                f"      receipt {receipt['status']} ({receipt['meaning']}) "
                f"{receipt['receiptId']} at {receipt['receivedAt']}"
            )
            for e in receipt["errors"]:
                text = f": {e['text']}" if e["text"] else ""
                lines.append(f"        {e['code']} ({e['system']}){text}")
        if p["transportError"]:
            lines.append(f"      transport error {p['transportError']['condition']}")
        if p.get("compression"):
            lines.append(f"      sent compressed ({p['compression']} in RefDoc/Compression)")
    for d in attempt.get("decisions", []):
        basis = f" ({d['basis']})" if d["basis"] else ""
        lines.append(
            f"    decision {d['action']}{basis} by {d['by']} at {d['at']} "
            f"({', '.join(d['parts']) or 'no parts'}): {d['reason']}"
        )
    return lines


def _certificates_text(certificates: dict[str, Any] | None) -> list[str]:
    """One line per certificate: expired or wrong certificates are a common cause."""
    if not certificates:
        return []
    found = certificates.get("sandboxPki", certificates)
    if not isinstance(found, dict):
        return [f"  certificates  sandbox test PKI {found}"]
    lines = []
    for role, cert in found.items():
        if not isinstance(cert, dict):
            continue
        if "error" in cert:
            lines.append(f"  certificate {role}: {cert['error']}")
        else:
            lines.append(
                f"  certificate {role}: '{cert['subjectCN']}' serial {cert['serial']}, "
                f"valid {cert['notBefore']} to {cert['notAfter']}"
            )
    return lines


def _submission_text(s: dict[str, Any]) -> list[str]:
    m = s["municipality"]
    source = s["source"]
    lines = [
        f"Submission {s['name']}: {m['number']} {m['name']}, year {s['year']}, {s['environment']}",
        f"  manifest   {s['manifest']}  {s['manifestDigest']}",
        f"  source     {source['file']}  {source.get('digest') or source.get('error', '')}",
        f"  addressing {s['addressing']['senderHerId']} → {s['addressing']['toQueue']}, "
        f"receipts on {s['addressing']['replyQueue']}",
    ]
    d = s["deadline"]
    nxt = f", next deadline {d['next']} ({d['daysLeft']} days left)" if d["next"] else ""
    lines.append(f"  deadline   {d['window']}{nxt}")
    plan = s["plan"]
    if "error" in plan:
        lines.append(f"  plan       cannot plan: {plan['error']}")
    else:
        lines.append(f"  plan       {plan['action']}: {plan['reason']}")
        lines.append(f"  payload    {plan['payloadDigest']}")
    lines += _certificates_text(s["certificates"])
    lock = s["lockfile"]
    if lock is None:
        lines.append("  lockfile   none yet (nothing sent)")
    elif "error" in lock:
        lines.append(f"  lockfile   {lock['file']}: {lock['error']}")
    else:
        lines.append(
            f"  lockfile   {lock['file']}, lineage {lock['lineage']}, serial {lock['serial']}"
        )
        for attempt in lock["attempts"]:
            lines += _attempt_text(attempt)
    if s["quarantined"]:
        lines.append(f"  quarantined receipts: {len(s['quarantined'])}")
        lines += [f"    {q['at']} {q['kind']}: {q['reason']}" for q in s["quarantined"]]
    return [*lines, ""]


def render_readme(data: dict[str, Any]) -> str:
    """`README.txt`: what the bundle is, where to send it, and the facts in short."""
    tool = data["tool"]
    lines = [
        "iplosctl support bundle",
        f"created {data['createdAt']} by iplosctl {tool['iplosctl']} "
        f"({tool['python']}, {tool['os']})",
        "",
        "Attach this file when you report a problem with an IPLOS submission to the register.",
        'The register asks to hear about problems at once ("Meld fra straks det er problemer',
        'med innsending"), especially after the first deadline.',
        "",
        "It holds versions, digests, message ids, timestamps, part states, receipt codes and",
        "broker error conditions. It holds no personal data (no person ids, names or export",
        "contents; the register's free-text OT is left out) and no secrets (no passwords,",
        "passphrases or keys; certificates by common name, serial and validity only).",
        "bundle.json holds the same facts in full, machine-readable.",
        "",
        "Where to send it:",
        *_contacts_text(data),
        "",
    ]
    for s in data["submissions"]:
        lines += _submission_text(s)
    for b in data.get("unusableManifests", []):
        lines += [f"{b['name']}: the manifest {b['manifest']} cannot be used:"]
        lines += [f"  {problem}" for problem in b["problems"]]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


# --- writing ----------------------------------------------------------------------


def _zip_bytes(members: dict[str, str], created: dt.datetime) -> bytes:
    """A zip whose bytes depend only on the members and the creation time."""
    stamp = created.astimezone(dt.UTC).timetuple()[:6]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in MEMBERS:
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # unix, whatever the host: same bytes everywhere
            info.external_attr = 0o644 << 16
            zf.writestr(info, members[name].encode("utf-8"))
    return buffer.getvalue()


def build_support_bundle(
    manifests: Sequence[Manifest],
    out: Path,
    *,
    today: dt.date | None = None,
    now: dt.datetime | None = None,
    broken: Sequence[BrokenManifest] = (),
) -> Path:
    """Write the support bundle zip for `manifests` to `out` and return its path.

    `today` sets the deadline window and plan (like `--today`); `now` the creation
    time, which is the only thing that differs between two bundles of one state.
    """
    created = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    data = bundle_data(manifests, today=today, created_at=created, broken=broken)
    members = {
        BUNDLE_JSON: json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n",
        README_TXT: render_readme(data),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, _zip_bytes(members, created))  # a ^C never leaves half a zip
    return out
