"""manifest + export + lockfile → Plan: what `apply` would do, and why.

The export is streamed once: each record goes through the rules (test
persons are excluded first), into the summary and into the payload digests
of every message part. Nothing here sends or writes, except a cache of the
analysis keyed by the source file's identity so that a second plan of an
unchanged export is near-instant.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import json
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from iplosctl import (
    __version__,
    endpoint,
    inflight,
    lockfile,
    plugins,
    profiles,
    transport_policy,
)
from iplosctl.atomic import write_atomic
from iplosctl.certificates import CertificateCheck, check_certificates
from iplosctl.coverage import export_findings
from iplosctl.errors import IplosctlError, Location, Problem, SourceError
from iplosctl.lockfile import PartState
from iplosctl.manifest import Manifest
from iplosctl.manifest.checks import BrokenManifest
from iplosctl.parallel import picklable_dataclasses, run_ordered
from iplosctl.payload import passthrough
from iplosctl.payload.compression import COMPRESSION_CODE, base64_size
from iplosctl.payload.compression import LEVEL as GZIP_LEVEL
from iplosctl.payload.export_writer import RecordPayloadError
from iplosctl.payload.msghead import message_id
from iplosctl.payload.parts import PayloadHasher
from iplosctl.plausibility import (
    last_year_candidates,
    plausibility_findings,
    previous_year_summary,
)
from iplosctl.plugins import EXPORT_V1_PAYLOAD, PayloadSpec, SourceSpec
from iplosctl.privacy import scrub
from iplosctl.profiles import Deadline, Profile
from iplosctl.records import ExportHeader, record_number
from iplosctl.rules import Finding, RecordRef, RuleContext, RuleRun, load_rules
from iplosctl.rules.engine import MAX_REFS, SEVERITIES
from iplosctl.summary import SummaryBuilder

if TYPE_CHECKING:
    from iplosctl.savedplan import SavedPart, SavedPlan, SavedSubmission

# A plan's findings come back from `-j` workers; compiled by mypyc, they need this to.
picklable_dataclasses(Finding, RecordRef)

PLAN_FORMAT_VERSION = "1"


class Action(StrEnum):
    """What apply would do for one submission (DESIGN.md §4).

    A StrEnum: plans, saved plans and the rendered output carry the value, and a member
    equals its string, so code that still compares plain strings keeps working.
    """

    SUBMIT = "submit"
    RECOVER = "recover"
    CORRECT = "correct"
    RESUBMIT = "resubmit"
    WAIT = "wait"
    NO_OP = "no-op"
    BLOCKED = "blocked"


ACTIONS: tuple[Action, ...] = tuple(Action)
#: the actions that send something
CHANGING = frozenset({Action.SUBMIT, Action.RECOVER, Action.CORRECT, Action.RESUBMIT})


class Window(StrEnum):
    """Where a day falls among the reporting year's deadlines."""

    REHEARSAL = "rehearsal"  # a sandbox: deadlines do not apply
    OPEN = "open"  # on or before the first deadline
    CORRECTIONS = "corrections"  # after the first, on or before the last
    CLOSED = "closed"  # after the last


@dataclass(frozen=True)
class DeadlineWindow:
    """Where `today` falls among the profile's deadlines, and the next one."""

    today: dt.date
    window: Window
    deadlines: tuple[Deadline, ...]
    #: the first deadline on or after today; None once the last has passed
    next: dt.date | None

    @property
    def days_left(self) -> int | None:
        return (self.next - self.today).days if self.next else None

    @property
    def last(self) -> dt.date:
        return self.deadlines[-1].date

    def as_dict(self) -> dict[str, Any]:
        """The form the JSON plan, status and support bundle print (their key names)."""
        return {
            "today": self.today.isoformat(),
            "window": self.window.value,
            "deadlines": [
                {"name": d.name, "date": d.date.isoformat(), "description": d.description}
                for d in self.deadlines
            ],
            "next": self.next.isoformat() if self.next else None,
            "daysLeft": self.days_left,
        }


_LINEAGE_NAMESPACE = uuid.UUID("5d0f3f4e-7c4b-4b8e-9a57-2f6c1b8f0d11")


def lineage_for(manifest: Manifest) -> str:
    """The series id: derived, so plan and apply agree before a lockfile exists.

    Same municipality, year and name → same lineage → same MsgIds for the
    same payload, so a resend after losing the lockfile is still a duplicate
    the register can drop rather than a second submission.
    """
    key = f"{manifest.municipality.number}/{manifest.reporting_year}/{manifest.name}"
    return str(uuid.uuid5(_LINEAGE_NAMESPACE, key))


@dataclass(frozen=True)
class PartPlan:
    type: str
    payload_digest: str
    size_bytes: int
    msg_id: str
    #: `RefDoc/Compression` code when the part goes compressed (`gzip`), else ""
    compression: str = ""
    #: about how many bytes go on the wire (MsgHead and CMS included); 0 if unknown
    sent_bytes: int = 0

    def as_dict(self) -> SavedPart:
        """The form saved plans and the JSON plan share.

        `compression` and `sentBytes` appear only for a compressed part, so plans (and
        their digests) of submissions that fit the limit are unchanged.
        """
        out: SavedPart = {
            "type": self.type,
            "payloadDigest": self.payload_digest,
            "sizeBytes": self.size_bytes,
            "msgId": self.msg_id,
        }
        if self.compression:
            out["compression"] = self.compression
            out["sentBytes"] = self.sent_bytes
        return out

    def size_text(self, width: int = 0) -> str:
        """ "25,100,000 bytes" or "25,100,000 bytes, compressed (gzip) to 3,400,000"."""
        text = f"{self.size_bytes:>{width},} bytes"
        if self.compression:
            text += f", compressed ({self.compression}) to {self.sent_bytes:,}"
        return text


@dataclass(frozen=True)
class Analysis:
    """What streaming the export found; cacheable (no personal data)."""

    header: ExportHeader
    source_digest: str
    findings: tuple[Finding, ...]
    summary: dict[str, Any]
    part_digests: tuple[tuple[str, str, int], ...]  # (type, digest, size)
    #: (type, gzip size): what each part would be compressed (`payload/compression.py`)
    compressed_sizes: tuple[tuple[str, int], ...] = ()
    #: what the payload is: iplosctl-export-v1 (re-written) or passthrough (the files)
    payload_mode: str = EXPORT_V1_PAYLOAD
    #: the XSD apply loads beside MsgHead's for a pass-through payload
    payload_schema: str | None = None

    @property
    def payload_digest(self) -> str:
        joined = "\n".join(f"{t}={d}" for t, d, _ in self.part_digests)
        return "sha256:" + hashlib.sha256(joined.encode()).hexdigest()


@dataclass(frozen=True)
class SubmissionPlan:
    """The plan for one manifest."""

    name: str
    manifest_path: Path
    lockfile_path: Path
    year: int
    environment: str
    municipality: str
    action: Action
    reason: str
    findings: tuple[Finding, ...]
    summary: dict[str, Any]
    previous_summary: dict[str, Any] | None
    deadline: DeadlineWindow
    manifest_digest: str
    source_digest: str
    payload_digest: str
    lineage: str
    serial: int
    attempt: int
    parts: tuple[PartPlan, ...]
    receipt_errors: tuple[dict[str, str], ...] = ()
    #: the command that leads out when the findings are not the reason (a journaled
    #: attempt the changed export cannot recover); empty otherwise
    way_out: str = ""
    #: iplosctl-export-v1 (records re-written) or passthrough (the export's files unchanged)
    payload_format: str = EXPORT_V1_PAYLOAD
    #: the XSD apply loads beside MsgHead's for a pass-through payload (None: export v1)
    payload_schema: str | None = None
    #: digest of the year profile (and overlay), the format profile and its XSD
    profile_digest: str = ""
    #: the profile the plan was made with (renderers name service codes from it)
    profile: Profile | None = field(default=None, compare=False, repr=False)
    #: where it goes: receiver HER-id, queues, broker (no credentials), namespace
    #: (`endpoint.Route.as_dict`); None only for plans built by hand in tests
    route: dict[str, Any] | None = None
    #: validity, chain and revocation per certificate (iplosctl.certificates)
    certificates: tuple[CertificateCheck, ...] = ()
    #: set when revocation was not (fully) checked: --offline-revocation, the sandbox
    revocation_note: str = ""
    #: `--offline-revocation` was given: the plan says so loudly
    offline_revocation: bool = False

    @property
    def blocked(self) -> bool:
        return self.action in (Action.BLOCKED, Action.WAIT)

    @property
    def changes(self) -> bool:
        return self.action in CHANGING

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]


@dataclass(frozen=True)
class UnplannedSubmission:
    """A submission that could not be planned: its manifest is broken or its export cannot be
    read. It is blocked with its reasons (one line each, no personal data), and the others
    are planned as usual, so one municipality's problem never hides the other forty-nine."""

    name: str
    manifest_path: Path
    reasons: tuple[str, ...]
    action: Action = Action.BLOCKED


@dataclass(frozen=True)
class Plan:
    submissions: tuple[SubmissionPlan, ...]
    tool_version: str = __version__
    created_at: str = field(default_factory=lockfile.utc_now)
    unplanned: tuple[UnplannedSubmission, ...] = ()
    #: why planning failed for the unplanned submissions that validation found no fault in
    errors: tuple[str, ...] = ()

    def count(self, action: Action) -> int:
        planned = sum(1 for s in self.submissions if s.action == action)
        return planned + (len(self.unplanned) if action == Action.BLOCKED else 0)

    def exit_code(self, *, detailed: bool) -> int:
        """1 when anything is blocked, else 2 for changes with --detailed-exitcode, else 0."""
        if self.unplanned or any(s.blocked for s in self.submissions):
            return 1
        if detailed and any(s.changes for s in self.submissions):
            return 2
        return 0


# --- analysing one export --------------------------------------------------------


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def readable_digest(path: Path, extra: Sequence[Path] = ()) -> str:
    """`sources_digest`, with an unreadable file or a folder as a user error naming it."""
    try:
        return sources_digest(path, extra)
    except IsADirectoryError as exc:
        path = Path(exc.filename or path)
        message = "is a folder, not an export file: point spec.source.path at the export"
    except FileNotFoundError as exc:
        path = Path(exc.filename or path)
        message = "export file not found"
    except PermissionError as exc:
        path = Path(exc.filename or path)
        message = "cannot read the export: permission denied (let this user read the file)"
    except OSError as exc:
        message = f"cannot read the export: {exc.strerror or type(exc).__name__}"
    raise SourceError([Problem(Location(str(path)), message)])


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "iplosctl" / "plan"


def _source(manifest: Manifest) -> Any:
    source_cls = plugins.load("source", manifest.source.plugin)
    return source_cls() if isinstance(source_cls, type) else source_cls


def _source_spec(manifest: Manifest) -> SourceSpec:
    return SourceSpec(manifest.source.path, manifest.source.format, manifest.source.options)


def profile_files(manifest: Manifest, profile: Profile, source: Any = None) -> list[Path]:
    """Every file whose bytes decide the plan besides export, manifest and lockfile.

    The year profile as shipped (and the shipped base it extends), the
    overlay from the repository, and what the source plugin reads the export
    through (a format profile and its XSD, when the plugin says so).
    """
    files = list(profile.files)
    source = source if source is not None else _source(manifest)
    format_files = getattr(source, "profile_files", None)
    if format_files is not None:
        files.extend(format_files(_source_spec(manifest)))
    return files


def profile_inputs_digest(manifest: Manifest, profile: Profile, source: Any = None) -> str:
    """`profileDigest`: the content of every profile file, in order (paths do not count)."""
    h = hashlib.sha256()
    for path in profile_files(manifest, profile, source):
        try:
            digest = file_digest(path)
        except OSError as exc:
            raise IplosctlError(f"profile file {path}: cannot read ({exc.strerror})") from None
        h.update(f"{digest}\n".encode())
    return "sha256:" + h.hexdigest()


def _cache_key(
    manifest: Manifest,
    previous: dict[str, Any] | None,
    today: dt.date,
    late: bool,
    rule_ids: Sequence[str],
    *,
    profile_digest: str = "",
) -> str | None:
    try:
        st = manifest.source.path.stat()
    except OSError:
        return None
    key = json.dumps(
        {
            "version": __version__,
            "source": str(manifest.source.path.resolve()),
            "size": st.st_size,
            "mtime": st.st_mtime_ns,
            "inode": st.st_ino,
            "manifest": manifest.digest,
            # content, not mtimes: a profile restored from git keeps its old mtime
            "profile": profile_digest,
            "previous": previous,
            "today": today.isoformat(),
            "late": late,
            "rules": list(rule_ids),
            "gzipLevel": GZIP_LEVEL,  # the cached compressed sizes depend on it
            "parts": {t: passthrough.file_identity(p) for t, p in manifest.source.parts.items()},
            "payloadSchema": passthrough.file_identity(manifest.schemas / manifest.payload_schema)
            if manifest.schemas is not None and manifest.payload_schema is not None
            else None,
        },
        sort_keys=True,
    )
    return hashlib.sha256(key.encode()).hexdigest()


def _identities(paths: Sequence[Path]) -> list[list[Any]] | None:
    """Path, size, mtime and inode of each file (None when one cannot be read)."""
    try:
        return [
            [str(p.resolve()), st.st_size, st.st_mtime_ns, st.st_ino]
            for p in paths
            for st in (p.stat(),)
        ]
    except OSError:
        return None


def sources_digest(main: Path, extra: Sequence[Path]) -> str:
    """`file_digest` of the export, or of the export and its other files together."""
    if not extra:
        return file_digest(main)
    joined = "\n".join(file_digest(p) for p in (main, *extra))
    return "sha256:" + hashlib.sha256(joined.encode()).hexdigest()


def _load_cached(key: str) -> Analysis | None:
    try:
        data = json.loads((_cache_dir() / f"{key}.json").read_text(encoding="utf-8"))
        # The source's other files (source_inputs) are checked here rather than in the
        # key, so that a cache hit still needs no source plugin.
        inputs = data.get("inputs", [])
        if inputs and _identities([Path(p) for p, *_ in inputs]) != inputs:
            return None
        h = data["header"]
        return Analysis(
            header=ExportHeader(
                h["municipality"],
                h["reportingYear"],
                h["epjSystem"],
                h["epjVersion"],
                dt.datetime.fromisoformat(h["extractedAt"]) if h.get("extractedAt") else None,
            ),
            source_digest=data["sourceDigest"],
            findings=tuple(
                Finding(
                    f["rule"],
                    f["severity"],
                    f["message"],
                    f["count"],
                    tuple(RecordRef.from_dict(r) for r in f["records"]),
                )
                for f in data["findings"]
            ),
            summary=data["summary"],
            part_digests=tuple((t, d, s) for t, d, s in data["parts"]),
            compressed_sizes=tuple((t, s) for t, s in data["compressed"]),
            payload_mode=data.get("payloadMode", EXPORT_V1_PAYLOAD),
            payload_schema=data.get("payloadSchema"),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _store_cached(
    key: str, analysis: Analysis, identities: Sequence[Sequence[Any]] | None = ()
) -> None:
    """Keep `analysis`; `identities` are the source's other files as they were before reading
    (None when one was unreadable: then nothing is kept)."""
    if identities is None:
        return
    h = analysis.header
    data = {
        "header": {
            "municipality": h.municipality,
            "reportingYear": h.reporting_year,
            "epjSystem": h.epj_system,
            "epjVersion": h.epj_version,
            "extractedAt": h.extracted_at.isoformat() if h.extracted_at else None,
        },
        "sourceDigest": analysis.source_digest,
        "findings": [f.as_dict() for f in analysis.findings],
        "summary": analysis.summary,
        "parts": [list(p) for p in analysis.part_digests],
        "compressed": [list(p) for p in analysis.compressed_sizes],
        "payloadMode": analysis.payload_mode,
        "payloadSchema": analysis.payload_schema,
        "inputs": [list(i) for i in identities],
    }
    with contextlib.suppress(OSError):  # a cache that cannot be written only costs time
        write_atomic(_cache_dir() / f"{key}.json", json.dumps(data).encode("utf-8"), durable=False)


def analyse(
    manifest: Manifest,
    profile: Profile,
    *,
    previous: dict[str, Any] | None,
    today: dt.date,
    late: bool = False,
    payload_outputs: Mapping[str, BinaryIO] | None = None,
    compressed_outputs: Mapping[str, BinaryIO] | None = None,
    profile_digest: str | None = None,
) -> Analysis:
    """Stream the export once through rules, summary and payload digests.

    With `payload_outputs` (part type → binary file), apply gets each part's
    payload written in the same pass, from exactly the records the plan saw;
    with `compressed_outputs`, each part's gzip form too.
    """
    rules = load_rules()
    source = _source(manifest)
    if profile_digest is None:
        profile_digest = profile_inputs_digest(manifest, profile, source)
    key = _cache_key(
        manifest, previous, today, late, [r.id for r in rules], profile_digest=profile_digest
    )
    if payload_outputs is None and key is not None and (cached := _load_cached(key)) is not None:
        return cached
    spec = _source_spec(manifest)
    extra = plugins.source_inputs(source, spec)
    identities = _identities(extra)  # before reading: a file changed meanwhile is read again
    export = source.read(spec)  # opens every file, so a missing one is the source's error
    source_digest = readable_digest(manifest.source.path, extra)
    payload = export.payload or PayloadSpec()
    hasher: PayloadHasher | passthrough.PassthroughHasher
    xsd = None
    if payload.passthrough:
        files = passthrough.part_files(manifest, payload, profile.message_parts)
        xsd = passthrough.payload_xsd(manifest, payload)
        for path in files.values():
            # The export part was validated against the profile's XSD while it streams.
            same = path == manifest.source.path and xsd == payload.schema
            passthrough.check_part(path, None if same else xsd)
        hasher = passthrough.PassthroughHasher(files, payload_outputs)
    else:
        passthrough.no_parts_without_passthrough(manifest, payload)
        hasher = PayloadHasher(
            export.header,
            profile.message_parts,
            payload_outputs,
            compressed_outputs,
            # gzip only a part that cannot go plain (part_encodings): the rest costs no zlib
            compress_over=(manifest.message_size_limit_bytes or profile.message_limit_bytes)
            - ENVELOPE_OVERHEAD_BYTES,
        )
    environment = profile.environments[manifest.environment]
    ctx = RuleContext(
        manifest=manifest,
        profile=profile,
        environment=environment,
        header=export.header,
        previous_summary=previous,
        today=today,
        late=late,
    )
    run = RuleRun(rules, ctx)
    summary = SummaryBuilder(profile, manifest.reporting_year)
    recipients = services = 0
    # Pass-through cannot leave anyone out: excluded records block the plan instead.
    excluded: list[RecordRef] = []
    excluded_count = 0
    for record in export.recipients:
        recipients += 1
        services += len(record.services)
        if run.record(record):
            summary.add(record)
            try:
                hasher.add(record)
            except RecordPayloadError as exc:
                raise _unwritable(manifest.source.path, exc) from None
        else:
            summary.exclude()
            excluded_count += 1
            if len(excluded) < MAX_REFS:
                excluded.append(RecordRef(record.index, record.line))
    findings = run.finish()
    if payload.passthrough:
        findings = passthrough.blocking_test_persons(findings, excluded, excluded_count)
    zero = export_findings(
        recipients=recipients,
        services=services,
        coverage=export.coverage,
        profile=_profile_label(manifest),
    )
    analysis = Analysis(
        header=export.header,
        source_digest=source_digest,
        findings=tuple(sorted((*findings, *zero), key=_finding_order)),
        summary=summary.build(),
        part_digests=tuple(hasher.finish()),
        # pass-through parts are sent as they are: no compressed form (README)
        compressed_sizes=(
            tuple(hasher.compressed_sizes()) if isinstance(hasher, PayloadHasher) else ()
        ),
        payload_mode=payload.mode,
        payload_schema=str(xsd) if xsd is not None else None,
    )
    if key is not None:
        _store_cached(key, analysis, identities)
    return analysis


def _finding_order(f: Finding) -> tuple[int, str, str]:
    """The rule engine's order (errors first, then by rule), kept with the zero findings."""
    return (SEVERITIES.index(f.severity), f.rule, f.message)


def _profile_label(manifest: Manifest) -> str:
    """How findings name the mapping the source read with."""
    fmt = manifest.source.format
    if fmt:
        return f"the format profile {fmt}"
    return f"the {manifest.source.plugin} source's default profile"


def _unwritable(export: Path, exc: RecordPayloadError) -> SourceError:
    """A record the payload cannot carry, blamed on the export file and record it came from.

    The writer knows the record but not the file; with `plan manifests/` over
    many municipalities the file is what the reader needs first.
    """
    where = Location(str(export), exc.line or 0)
    return SourceError([Problem(where, f"record #{record_number(exc.index)}: {exc.reason}")])


# --- deciding ---------------------------------------------------------------------


def window_at(profile: Profile, today: dt.date, sandbox: bool) -> DeadlineWindow:
    """Where today falls among the year's deadlines."""
    first, last = profile.deadlines[0].date, profile.deadlines[-1].date
    if sandbox:
        window = Window.REHEARSAL
    elif today <= first:
        window = Window.OPEN
    elif today <= last:
        window = Window.CORRECTIONS
    else:
        window = Window.CLOSED
    upcoming = next((d.date for d in profile.deadlines if today <= d.date), None)
    return DeadlineWindow(today, window, profile.deadlines, upcoming)


def deadline_window(profile: Profile, today: dt.date, sandbox: bool) -> dict[str, Any]:
    """`window_at(…).as_dict()`, for callers not yet moved to DeadlineWindow."""
    return window_at(profile, today, sandbox).as_dict()


def decide(
    lock: lockfile.Lockfile | None, analysis: Analysis, errors: Sequence[Finding]
) -> tuple[Action, str, int]:
    """(action, reason, attempt number) per DESIGN.md §4."""
    last = lock.last_attempt if lock else None
    next_attempt = (last.number + 1) if last else 1
    if last is not None:
        states = last.states
        if PartState.JOURNALED in states:
            if last.payload_digest != analysis.payload_digest:
                # not the findings' "fix the export": only the old export or a decision helps
                never_left = states <= {PartState.JOURNALED, PartState.ABANDONED}
                basis = "--never-sent" if never_left else "--confirmed-by-register"
                return (
                    Action.BLOCKED,
                    f"attempt {last.number} was journaled but may not have been "
                    "sent, and the export has changed since: restore the export it was "
                    f"built from ({last.source_digest}) and run iplosctl apply to recover it "
                    "with the same message ids; or, if it "
                    + ("never left this machine" if never_left else "never reached KPR")
                    + f", record that: iplosctl attempt abandon {{manifest}} --attempt "
                    f'{last.number} {basis} --reason "…", then plan again',
                    last.number,
                )
            return (
                Action.RECOVER,
                f"attempt {last.number} was journaled but not confirmed sent: "
                "resend it with the same message ids",
                last.number,
            )
        if PartState.SENT in states:
            return (
                Action.WAIT,
                f"attempt {last.number} is sent and awaits its receipt: never "
                "resend before it is checked (run iplosctl receipts); if no receipt ever "
                "comes and KPR confirms it never arrived: iplosctl attempt abandon {manifest} "
                f'--attempt {last.number} --confirmed-by-register --reason "…"',
                last.number,
            )
    if errors:
        rules = sorted({f.rule for f in errors})
        return (
            Action.BLOCKED,
            f"{len(errors)} error finding(s) ({', '.join(rules)}): fix the export or the manifest",
            next_attempt,
        )
    if last is None:
        return (Action.SUBMIT, "nothing has been sent for this submission yet", next_attempt)
    if PartState.TRANSPORT_ERROR in last.states and PartState.REJECTED not in last.states:
        conditions = sorted(
            {p.transport_error.get("condition", "") for p in last.parts if p.transport_error}
        )
        return (
            Action.RESUBMIT,
            f"attempt {last.number} got a transport error ({', '.join(conditions)}): an "
            "unauthenticated error from the bus (NHN does not sign error-queue messages; "
            "its HER-ids, subject and message id matched this part): send a new attempt",
            next_attempt,
        )
    if last.states & {PartState.REJECTED, PartState.TRANSPORT_ERROR}:
        return (
            Action.RESUBMIT,
            f"attempt {last.number} was rejected: send a new attempt",
            next_attempt,
        )
    accepted = lock.last_accepted if lock else None
    if last.abandoned and (accepted is None or accepted.payload_digest != analysis.payload_digest):
        decision = last.decisions[-1] if last.decisions else None
        why = f" ({decision.basis}, by {decision.by} at {decision.at})" if decision else ""
        return (
            Action.RESUBMIT if accepted is None else Action.CORRECT,
            f"attempt {last.number} was abandoned{why}: send a new attempt with new message ids",
            next_attempt,
        )
    if accepted is not None and accepted.payload_digest == analysis.payload_digest:
        return (
            Action.NO_OP,
            f"attempt {accepted.number} was accepted and the payload is unchanged",
            last.number,
        )
    return (
        Action.CORRECT,
        f"attempt {last.number} was accepted; the payload has changed since: send a correction",
        next_attempt,
    )


#: what MsgHead and CMS add to a payload, with room to spare (measured: about 3 KB)
ENVELOPE_OVERHEAD_BYTES = 8_192


@dataclass(frozen=True)
class PartEncoding:
    """How one part goes on the wire: plain, or gzip-compressed because plain cannot."""

    compression: str  # "" or the RefDoc/Compression code
    sent_bytes: int  # about: MsgHead and CMS included


def part_encodings(
    manifest: Manifest, profile: Profile, analysis: Analysis
) -> dict[str, PartEncoding]:
    """Per part: compressed only when the plain message would be over the size limit.

    Parts that fit go exactly as before; KPR's acceptance of a compressed RefDoc is
    unverified (`payload/compression.py` says why and what the schema allows).
    """
    limit = manifest.message_size_limit_bytes or profile.message_limit_bytes
    compressed = dict(analysis.compressed_sizes)
    out = {}
    for part_type, _digest, size in analysis.part_digests:
        plain = size + ENVELOPE_OVERHEAD_BYTES
        if plain > limit and part_type in compressed:
            sent = base64_size(compressed[part_type]) + ENVELOPE_OVERHEAD_BYTES
            out[part_type] = PartEncoding(COMPRESSION_CODE, sent)
        else:
            out[part_type] = PartEncoding("", plain)
    return out


def _mb(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB"


def size_findings(manifest: Manifest, profile: Profile, analysis: Analysis) -> list[Finding]:
    """`message-size`: NHN wants messages under about 1 MB unless agreed; the bus has a limit.

    The manifest's `messageSizeLimitBytes` raises the limit (an agreement with NHN). The
    size judged is the one that will be sent: a part over the limit goes compressed
    (`part_encodings`), which the plan says in a warning, since KPR's acceptance of
    compressed content is unverified.
    """
    limit = manifest.message_size_limit_bytes or profile.message_limit_bytes
    warn = min(profile.message_warn_bytes, limit)
    encodings = part_encodings(manifest, profile, analysis)
    out = []
    for part_type, _digest, size in analysis.part_digests:
        encoding = encodings[part_type]
        sent = encoding.sent_bytes
        if encoding.compression:
            out.append(
                Finding(
                    "message-size",
                    "warning",
                    f"{part_type} {_mb(size)}, compressed to {_mb(sent)} ({sent:,} bytes with "
                    f"MsgHead, {encoding.compression} in RefDoc/Compression): plain it is over "
                    f"the {limit:,} byte limit; check with KPR that it accepts compressed "
                    "content",
                    1,
                )
            )
        if sent > limit:
            out.append(
                Finding(
                    "message-size",
                    "error",
                    f"{part_type} would be about {sent:,} "
                    f"bytes, over the {limit:,} byte limit: agree a larger limit with "
                    "NHN and set spec.messageSizeLimitBytes",
                    1,
                )
            )
        elif sent > warn and manifest.message_size_limit_bytes is None:
            out.append(
                Finding(
                    "message-size",
                    "warning",
                    f"{part_type} would be about {sent:,} "
                    f"bytes: NHN wants messages over {warn:,} bytes agreed first",
                    1,
                )
            )
    return out


#: rule id of "iplosctl's own format would go to a real receiver"
PAYLOAD_FORMAT_RULE = "payload-format"


def payload_format_findings(
    manifest: Manifest, profile: Profile, analysis: Analysis
) -> list[Finding]:
    """`payload-format`: outside the sandbox, iplosctl's own format only by agreement.

    KPR expects its own IPLOS format (DOMAIN.md §1.2, §2.6); iplosctl's
    export v1 is our invention. Sending it to test, qa or production without
    the receiver's word would look like a submission and be none.
    """
    if profile.environments[manifest.environment].sandbox:
        return []
    if analysis.payload_mode != EXPORT_V1_PAYLOAD:
        return []
    if manifest.payload_format_agreement == EXPORT_V1_PAYLOAD:
        return []
    return [
        Finding(
            PAYLOAD_FORMAT_RULE,
            "error",
            f"the payload would be iplosctl's own export format (urn:iplosctl:export:v1), "
            f"which the register in {manifest.environment} does not expect: use a format "
            "profile with payload: {mode: passthrough} for the register-format file your EPJ "
            "writes (README: 'Sending the register's own file'), or, if the receiver agreed "
            "in writing to this format, set spec.payloadFormatAgreement: iplosctl-export-v1",
            1,
        )
    ]


UNVERIFIED_RULE = "profile-unverified"


def unverified_findings(
    manifest: Manifest, profile: Profile, environment: profiles.Environment
) -> list[Finding]:
    """`profile-unverified`: facts this plan relies on that no source confirms, named.

    Outside the sandbox only (a rehearsal sends nothing to the register). Facts
    of other environments than the manifest's are not relied on. One finding
    per plan, counting the facts, so fifty manifests stay readable; the reasons
    are in the profile file. The severity can be changed in `spec.rules`.
    """
    severity = manifest.rule_severities.get(UNVERIFIED_RULE, "warning")
    if environment.sandbox or severity == "off":
        return []
    facts = []
    for fact in profile.unverified:
        parts = fact.path.split(".")
        if parts[0] == "environments" and len(parts) > 1 and parts[1] != manifest.environment:
            continue
        facts.append(fact.path)
    if not facts:
        return []
    where = " and ".join(
        f"iplosctl/profiles/{f.name}" if f.parent == profiles.PROFILE_DIR else str(f)
        for f in profile.files
    )
    return [
        Finding(
            UNVERIFIED_RULE,
            severity,  # type: ignore[arg-type]
            f"the {profile.year} profile has UNVERIFIED facts this plan relies on: "
            f"{', '.join(facts)} (reasons in {where}): confirm them with the register and "
            "restate them in a profile overlay (spec.profile or profiles/"
            f"{profile.year}.yaml beside manifests/)",
            len(facts),
        )
    ]


def transport_findings(manifest: Manifest) -> list[Finding]:
    """`transport-security` warnings (e.g. `tls.verifyPeerName: false` in test), so the
    reviewer of the pull request sees them; the refusals already stopped validation."""
    from iplosctl.manifest.checks import transport_concerns

    return [
        Finding(transport_policy.RULE_ID, c.severity, c.message, 1)
        for c in transport_concerns(manifest)
    ]


def unchanged_resubmit_findings(
    lock: lockfile.Lockfile | None, analysis: Analysis, action: Action
) -> list[Finding]:
    """`resubmit-unchanged`: sending the rejected payload again gets the same rejection.

    A warning, not a block: a transport error, or a rejection the register has since
    fixed on its side, is a real reason to send the same bytes again."""
    last = lock.last_attempt if lock else None
    if action != Action.RESUBMIT or last is None or last.payload_digest != analysis.payload_digest:
        return []
    if last.abandoned:  # never arrived (a recorded decision): the same bytes are the point
        return []
    return [
        Finding(
            "resubmit-unchanged",
            "warning",
            f"attempt {last.number} was rejected and the payload is unchanged: the register "
            "will most likely reject it again; fix what its receipt says first, unless the "
            "register confirmed the problem was on its side",
            1,
        )
    ]


def sandbox_findings(manifest: Manifest, profile: Profile) -> list[Finding]:
    """`sandbox-certificates`: which certificates a rehearsal with the built-in register uses,
    so nobody believes the sandbox checked something it did not."""
    if not profile.environments[manifest.environment].sandbox or manifest.endpoint is not None:
        return []
    if manifest.certificates is None:
        message = (
            "the built-in register and this municipality both use the sandbox's own test "
            "certificates (the manifest names none)"
        )
    else:
        message = (
            "the built-in register trusts your signing certificate and encrypts its receipts "
            "to your encryption certificate; its own side uses the sandbox's test "
            "certificates, not certificates.register (nobody has KPR's private keys)"
        )
    return [Finding("sandbox-certificates", "info", message, 1)]


def plan_submission(
    manifest: Manifest,
    *,
    today: dt.date | None = None,
    late: bool = False,
    lockfile_path: Path | None = None,
    payload_outputs: Mapping[str, BinaryIO] | None = None,
    compressed_outputs: Mapping[str, BinaryIO] | None = None,
    offline_revocation: bool = False,
    last_year: Sequence[Path] | None = None,
) -> SubmissionPlan:
    """Plan one manifest (already validated).

    With `payload_outputs` (and `compressed_outputs`), apply gets each part's payload
    written in the same pass that plans it (`analyse`), so it reads the export once.
    Certificates are checked against the real clock, not `today`: `--today` rehearses
    deadlines, while a certificate that expired is expired for the register too.
    `last_year` are the files that may be last year's manifest (`last_year_candidates`,
    once per plan of many); without it the manifest's folder is looked at here.
    """
    inflight.remove_stale(manifest)  # plaintext payloads a killed apply left: gone now
    today = today or dt.date.today()
    profile = profiles.profile_for(manifest)
    digest = profile_inputs_digest(manifest, profile)
    lock_path = lockfile_path or manifest.lockfile_path
    lock = lockfile.load(lock_path)
    if lock is not None and lock.submission != manifest.name:
        raise IplosctlError(
            f"{lock_path} belongs to submission {lock.submission!r}, not "
            f"{manifest.name!r}: each manifest needs its own lockfile"
        )
    accepted = lock.last_accepted if lock else None
    previous = dict(accepted.summary) if accepted else None
    analysis = analyse(
        manifest,
        profile,
        previous=previous,
        today=today,
        late=late,
        payload_outputs=payload_outputs,
        compressed_outputs=compressed_outputs,
        profile_digest=digest,
    )
    environment = profile.environments[manifest.environment]
    cert_report = check_certificates(manifest, offline_revocation=offline_revocation)
    findings = (
        analysis.findings
        + tuple(size_findings(manifest, profile, analysis))
        + tuple(payload_format_findings(manifest, profile, analysis))
        + tuple(unverified_findings(manifest, profile, environment))
        + tuple(transport_findings(manifest))
        + tuple(sandbox_findings(manifest, profile))
        + cert_report.findings
    )
    if accepted is not None:
        since = f"the accepted attempt {accepted.number}"
        findings += tuple(plausibility_findings(analysis.summary, previous, since))
    if (before := previous_year_summary(manifest, last_year)) is not None:
        findings += tuple(plausibility_findings(analysis.summary, before[1], before[0]))
    errors = [f for f in findings if f.severity == "error"]
    action, reason, attempt = decide(lock, analysis, errors)
    reason = reason.replace("{manifest}", str(manifest.path))
    way_out = ""
    if action == Action.BLOCKED and "iplosctl attempt abandon" in reason:
        way_out = reason[reason.index("iplosctl attempt abandon") :].removesuffix(
            ", then plan again"
        )
        way_out = f"restore the export and run iplosctl apply {manifest.path}, or: {way_out}"
    findings += tuple(unchanged_resubmit_findings(lock, analysis, action))
    lineage = lock.lineage if lock else lineage_for(manifest)
    encodings = part_encodings(manifest, profile, analysis)
    plain = PartEncoding("", 0)
    if action == Action.RECOVER and lock and lock.last_attempt:
        parts = tuple(
            PartPlan(
                p.type,
                p.payload_digest,
                p.size_bytes,
                p.msg_id,
                encodings.get(p.type, plain).compression,
                encodings.get(p.type, plain).sent_bytes,
            )
            for p in lock.last_attempt.parts
        )
    else:
        parts = tuple(
            PartPlan(
                t,
                d,
                size,
                message_id(lineage, attempt, t, d),
                encodings[t].compression,
                encodings[t].sent_bytes,
            )
            for t, d, size in analysis.part_digests
        )
    receipt_errors: tuple[dict[str, str], ...] = ()
    last = lock.last_attempt if lock else None
    if last is not None:
        # The register's texts are scrubbed again here: a lockfile written by an older
        # iplosctl may hold them verbatim, and this goes into the pull request.
        receipt_errors = tuple(
            {
                "part": p.type,
                "code": scrub(e.code),
                "system": scrub(e.system),
                "text": scrub(e.text),
            }
            for p in last.parts
            if p.receipt
            for e in p.receipt.errors
        ) + tuple(
            {
                "part": p.type,
                "code": scrub(p.transport_error.get("condition", "")),
                "system": "transport",
                "text": scrub(p.transport_error.get("description", "")),
            }
            for p in last.parts
            if p.transport_error
        )
    return SubmissionPlan(
        name=manifest.name,
        manifest_path=manifest.path,
        lockfile_path=lock_path,
        year=manifest.reporting_year,
        environment=manifest.environment,
        municipality=f"{manifest.municipality.number} {manifest.municipality.name}",
        action=action,
        reason=reason,
        findings=findings,
        summary=analysis.summary,
        previous_summary=previous,
        deadline=window_at(profile, today, environment.sandbox),
        manifest_digest=manifest.digest,
        source_digest=analysis.source_digest,
        payload_digest=analysis.payload_digest,
        lineage=lineage,
        serial=lock.serial if lock else 0,
        attempt=attempt,
        parts=parts,
        receipt_errors=receipt_errors,
        way_out=way_out,
        payload_format=analysis.payload_mode,
        payload_schema=analysis.payload_schema,
        profile_digest=digest,
        profile=profile,
        route=endpoint.route(manifest).as_dict(),
        certificates=cert_report.checks,
        revocation_note=cert_report.revocation_note,
        offline_revocation=offline_revocation,
    )


def _plan_one(
    job: tuple[Manifest, tuple[Path, ...]],
    *,
    today: dt.date | None,
    late: bool,
    lockfile_path: Path | None,
    offline_revocation: bool,
) -> SubmissionPlan | UnplannedSubmission:
    """One submission's plan, or why it has none: returned, not raised, so that a worker
    process hands it back like any result and the other submissions are still planned.
    `job` is the manifest and the files that may be last year's (`last_year_candidates`)."""
    manifest, last_year = job
    try:
        return plan_submission(
            manifest,
            today=today,
            late=late,
            lockfile_path=lockfile_path,
            offline_revocation=offline_revocation,
            last_year=last_year,
        )
    except IplosctlError as exc:
        return UnplannedSubmission(manifest.name, manifest.path, tuple(exc.lines()))


def make_plan(
    manifests: Sequence[Manifest],
    *,
    broken: Sequence[BrokenManifest] = (),
    today: dt.date | None = None,
    late: bool = False,
    lockfile_path: Path | None = None,
    offline_revocation: bool = False,
    jobs: int | None = 1,
) -> Plan:
    """Plan every manifest, `jobs` at a time in parallel processes (None: one per core).

    `broken` manifests (their problems already reported by validation) and manifests
    whose planning failed are `unplanned`, blocked with their reasons, and the others are
    planned as usual; `Plan.errors` holds the lines of the failures, in manifest order.
    The plan is the same whatever `jobs` is.
    """
    work = functools.partial(
        _plan_one,
        today=today,
        late=late,
        lockfile_path=lockfile_path,
        offline_revocation=offline_revocation,
    )
    planned: list[SubmissionPlan] = []
    unplanned = [
        UnplannedSubmission(b.label, b.path, tuple(str(p) for p in b.problems)) for b in broken
    ]
    errors: list[str] = []
    items = list(zip(manifests, last_year_candidates(manifests), strict=True))
    for result in run_ordered(work, items, jobs=jobs, caller_works=True):
        if isinstance(result, SubmissionPlan):
            planned.append(result)
        else:
            unplanned.append(result)
            errors.extend(result.reasons)
    return Plan(tuple(planned), unplanned=tuple(unplanned), errors=tuple(errors))


# --- saved plans ------------------------------------------------------------------


def plan_digest(plan: Plan) -> str:
    """One digest of everything `apply` would send and check: per submission the manifest,
    export and payload digests, lineage, serial, attempt, action and each part's digest and
    message id. Printed in every plan format, stored in the saved plan and printed by
    `apply PLANFILE`, it ties a pull-request comment to the send that follows it."""
    entries = saved_submissions(plan)
    canonical = json.dumps(entries, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def saved_submissions(plan: Plan) -> list[SavedSubmission]:
    """Each submission as a saved plan records it (what `plan_digest` covers)."""
    return [
        {
            "name": s.name,
            "manifest": str(s.manifest_path),
            "action": s.action,
            "manifestDigest": s.manifest_digest,
            "sourceDigest": s.source_digest,
            "payloadDigest": s.payload_digest,
            "profileDigest": s.profile_digest,
            "lineage": s.lineage,
            "serial": s.serial,
            "attempt": s.attempt,
            "parts": [p.as_dict() for p in s.parts],
        }
        for s in plan.submissions
    ]


def saved_form(plan: Plan, *, with_digest: bool = True) -> SavedPlan:
    """What `plan --out` writes: enough to refuse a stale apply; no personal data."""
    form: SavedPlan = {
        "formatVersion": PLAN_FORMAT_VERSION,
        "kind": "iplosctl-saved-plan",
        "toolVersion": plan.tool_version,
        "createdAt": plan.created_at,
        "submissions": saved_submissions(plan),
    }
    if with_digest:
        form["planDigest"] = plan_digest(plan)
    return form
