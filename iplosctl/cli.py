"""The command line: parse, call, render, turn IplosctlError into exit codes.

Thin on purpose: each command calls one function of the core and renders
what it returns. Exit codes (DESIGN.md §3): 0 ok, 1 error or blocked,
2 changes present (with --detailed-exitcode), 3 internal error, 64 usage.
"""

from __future__ import annotations

import datetime as dt
import enum
import getpass
import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from typer import Abort
from typer._click.exceptions import ClickException, NoArgsIsHelpError
from typer._click.exceptions import UsageError as ClickUsageError

from iplosctl import __version__, output, plugins
from iplosctl import secrets as secret_store
from iplosctl.crashlog import write_crash_log
from iplosctl.errors import (
    EXIT_ERROR,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    EXIT_WAITING,
    IplosctlError,
    UsageError,
)
from iplosctl.manifest import DEFAULT_PATH, Manifest, manifest_schema, validate_paths
from iplosctl.manifest.checks import BrokenManifest
from iplosctl.profiles import profile_for
from iplosctl.sandbox.pki import LEAVES, generate_pki
from iplosctl.sandbox.register import BEHAVIOUR_HELP

app = typer.Typer(
    name="iplosctl",
    help="Declarative, reviewable IPLOS submissions to KPR: validate, plan, apply, receipts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
secrets_app = typer.Typer(
    help="Store or remove credentials in the OS keyring.", no_args_is_help=True
)
app.add_typer(secrets_app, name="secrets")
sandbox_app = typer.Typer(help="The local KPR simulator and its test data.", no_args_is_help=True)
app.add_typer(sandbox_app, name="sandbox")
format_app = typer.Typer(help="Write and test export format profiles.", no_args_is_help=True)
app.add_typer(format_app, name="format")

_state = {"debug": False}

PathsArg = Annotated[
    list[Path] | None,
    typer.Argument(help="Manifest files or folders (default: manifests/).", show_default=False),
]

# Options several commands share, defined once so they read and behave the same.
OnlyOpt = Annotated[
    list[str] | None,
    typer.Option("--only", help="Only submissions whose name matches (glob); repeatable."),
]
TodayOpt = Annotated[
    str | None, typer.Option("--today", help="Pretend today is YYYY-MM-DD (rehearsals, tests).")
]
LateOpt = Annotated[
    bool,
    typer.Option(
        "--late", help="Allow a submission after the last deadline (agree with KPR first)."
    ),
]
BehaviourOpt = Annotated[
    str | None,
    typer.Option("--behaviour", help=f"{BEHAVIOUR_HELP} (default: $IPLOSCTL_SANDBOX_BEHAVIOUR)."),
]
SchemaDirOpt = Annotated[
    Path | None,
    typer.Option("--schema-dir", help="Folder with MsgHead-v1_2.xsd: validate MsgHeads fully."),
]
OfflineRevocationOpt = Annotated[
    bool,
    typer.Option(
        "--offline-revocation",
        help="Go on when certificate revocation cannot be checked (no CRL file, CRL "
        "distribution point or OCSP responder reachable); the plan says so in capitals.",
    ),
]
LockfileOpt = Annotated[
    Path | None, typer.Option("--lockfile", help="Lockfile to use (only with one manifest).")
]


def _version(value: bool) -> None:
    if value:
        output.out(f"iplosctl {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks of internal errors.")
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    _state["debug"] = debug


@app.command()
def validate(
    paths: PathsArg = None,
    no_files: Annotated[
        bool,
        typer.Option(
            "--no-files",
            help="Skip checking that exports and certificates exist (pre-commit, PR runners).",
        ),
    ] = False,
    offline_revocation: OfflineRevocationOpt = False,
) -> int:
    """Check manifests against the schema, profiles, plugins and referenced files."""
    from iplosctl.certificates import check_certificates

    result = validate_paths(paths or [DEFAULT_PATH], check_files=not no_files)
    if result.files == 0:
        raise IplosctlError(
            f"no manifests found in {', '.join(str(p) for p in paths or [DEFAULT_PATH])}"
        )
    for problem in result.problems:
        output.error(str(problem))
    for warning in result.warnings:
        output.note(f"warning: {warning}")
    # Certificates (validity, chain, revocation) need the files: not with --no-files.
    bad_certificates = []
    for m in result.manifests if not no_files else []:
        report = check_certificates(m, offline_revocation=offline_revocation)
        for f in report.findings:
            output.error(f"{m.path}: {f.severity}: {f.rule}: {f.message}")
        if report.revocation_note and offline_revocation:
            output.error(f"{m.path}: warning: {report.revocation_note}")
        if any(f.severity == "error" for f in report.findings):
            bad_certificates.append(m)
    for m in result.manifests:
        output.out(
            f"ok  {m.path}  ({m.name}: {m.municipality.number} {m.municipality.name}, "
            f"year {m.reporting_year}, {m.environment})"
        )
    if result.problems or bad_certificates:
        bad = len(
            {p.location.file for p in result.problems} | {str(m.path) for m in bad_certificates}
        )
        count = len(result.problems) + len(bad_certificates)
        output.error(f"error: {count} problem(s) in {bad} of {result.files} manifest(s)")
        return EXIT_ERROR
    output.note(f"{len(result.manifests)} manifest(s) valid.")
    return EXIT_OK


class Format(enum.StrEnum):
    text = "text"
    markdown = "markdown"
    json = "json"


def _select(
    paths: list[Path] | None, only: list[str] | None
) -> tuple[list[Manifest], list[BrokenManifest]]:
    """Validate like `iplosctl validate`, then keep going without the broken ones.

    One manifest with a missing export must not stop the other municipalities: each
    broken manifest's problems are printed here, and the caller reports it as that
    submission's error (and exits 1). `--only` selects before anything is reported.
    """
    result = validate_paths(paths or [DEFAULT_PATH])
    if result.files == 0:
        shown = ", ".join(str(p) for p in paths or [DEFAULT_PATH])
        raise IplosctlError(f"no manifests found in {shown}")
    result = result.only(only)
    if only and not result.manifests and not result.broken:
        raise IplosctlError(f"--only {' '.join(only)} matches no submission")
    for warning in result.warnings:  # e.g. tls.verifyPeerName: false outside production
        output.note(f"warning: {warning}")
    for problem in result.problems:
        output.error(f"error: {problem}")
    return result.manifests, result.broken


def _parse_day(value: str | None) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)") from None


@app.command()
def plan(
    paths: PathsArg = None,
    out: Annotated[Path | None, typer.Option("--out", help="Save the plan for apply.")] = None,
    fmt: Annotated[Format, typer.Option("--format", help="text, markdown or json.")] = Format.text,
    detailed_exitcode: Annotated[
        bool, typer.Option("--detailed-exitcode", help="Exit 2 when there are changes to apply.")
    ] = False,
    only: OnlyOpt = None,
    today: TodayOpt = None,
    late: LateOpt = False,
    lockfile_path: LockfileOpt = None,
    offline_revocation: OfflineRevocationOpt = False,
    reviewed: Annotated[
        Path | None,
        typer.Option(
            "--reviewed",
            metavar="PLANFILE",
            help="Fail unless this plan equals a saved plan that was reviewed (CI on merge).",
        ),
    ] = None,
) -> int:
    """Check the export against every pre-flight rule and show what apply would send."""
    from iplosctl.plan import Plan, UnplannedSubmission, plan_submission
    from iplosctl.render import RENDERERS, summary_line
    from iplosctl.savedplan import read_saved_plan, reviewed_differences, write_saved_plan

    day = _parse_day(today)
    reviewed_plan = read_saved_plan(reviewed) if reviewed is not None else None
    manifests, broken = _select(paths, only)
    if lockfile_path is not None and len(manifests) + len(broken) != 1:
        raise UsageError("--lockfile needs exactly one manifest")
    submissions, failures = [], []
    unplanned = [
        UnplannedSubmission(b.label, b.path, tuple(str(p) for p in b.problems)) for b in broken
    ]
    for manifest in manifests:
        try:
            submissions.append(
                plan_submission(
                    manifest,
                    today=day,
                    late=late,
                    lockfile_path=lockfile_path,
                    offline_revocation=offline_revocation,
                )
            )
        except IplosctlError as exc:
            failures.extend(exc.lines())
            unplanned.append(UnplannedSubmission(manifest.name, manifest.path, tuple(exc.lines())))
    result = Plan(tuple(submissions), unplanned=tuple(unplanned))
    if reviewed_plan is not None:
        assert reviewed is not None
        failures.extend(reviewed_differences(result, reviewed_plan, reviewed))
    if submissions or unplanned:
        rendered = RENDERERS[fmt.value](result)
        if fmt is Format.json:
            output.raw(rendered)
            output.note(summary_line(result))
        elif fmt is Format.text:
            output.out_highlighted(rendered.rstrip("\n"))
        else:
            output.out(rendered.rstrip("\n"))
    for line in failures:
        output.error(f"error: {line}")
    if out is not None and submissions:
        write_saved_plan(out, result)
        output.note(f"saved plan to {out}: run `iplosctl apply {out}` to send exactly this")
    if failures or unplanned:
        return EXIT_ERROR
    return result.exit_code(detailed=detailed_exitcode)


def _is_saved_plan(paths: list[Path] | None) -> bool:
    return bool(paths) and len(paths) == 1 and paths[0].suffix == ".json" and paths[0].is_file()


@app.command()
def apply(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(
            help="A saved plan (plan --out), or manifest files/folders (default: manifests/).",
            show_default=False,
        ),
    ] = None,
    auto_approve: Annotated[
        bool, typer.Option("--auto-approve", help="Do not ask for confirmation (CI).")
    ] = False,
    only: OnlyOpt = None,
    today: TodayOpt = None,
    late: LateOpt = False,
    wait: Annotated[
        str | None,
        typer.Option("--wait", metavar="DURATION", help="Then wait for the receipts (30s, 10m)."),
    ] = None,
    offline_revocation: OfflineRevocationOpt = False,
) -> int:
    """Send exactly the reviewed plan: MsgHead, CMS sign+encrypt, AMQP 1.0."""
    from iplosctl.apply import apply_submission
    from iplosctl.plan import Plan
    from iplosctl.render import render_text
    from iplosctl.savedplan import read_saved_plan

    day = _parse_day(today)
    wait_seconds = _parse_wait(wait)
    saved_by_manifest: dict[str, dict[str, Any]] = {}
    if _is_saved_plan(paths):
        assert paths is not None
        saved_plan = read_saved_plan(paths[0])
        saved_by_manifest = {s["manifest"]: s for s in saved_plan["submissions"]}
        if "planDigest" in saved_plan:  # the digest the reviewed comment showed
            output.note(f"applying saved plan {paths[0]}, plan digest {saved_plan['planDigest']}")
        manifests, broken = _select([Path(m) for m in saved_by_manifest], only)
    else:
        manifests, broken = _select(paths, only)

    def approve(plan) -> bool:  # type: ignore[no-untyped-def]
        if auto_approve or saved_by_manifest:
            return True
        output.out(render_text(Plan((plan,))).rstrip("\n"))
        if not sys.stdin.isatty():
            raise IplosctlError(
                "refusing to apply without confirmation: no terminal to ask on; "
                "use --auto-approve or apply a saved plan"
            )
        return typer.confirm(f"Send {plan.name} ({plan.action}, attempt {plan.attempt})?")

    failures = len(broken)  # reported by _select; the other submissions still apply
    for manifest in manifests:
        saved = saved_by_manifest.get(str(manifest.path)) if saved_by_manifest else None
        before = _file_bytes(manifest.lockfile_path)
        try:
            parts = len(profile_for(manifest).message_parts)
            with output.lazy_progress(f"{manifest.name}: sending", total=parts) as advance:
                # the bar starts with the first step, after the question was answered:
                # drawn earlier it hid "Send …? [y/N]" (issue 13.1)
                result = apply_submission(
                    manifest,
                    saved=saved,
                    approve=approve,
                    today=day,
                    late=late,
                    progress=lambda part, step: advance(f"{part} {step}", step == "sent"),
                    offline_revocation=offline_revocation,
                )
        except IplosctlError as exc:
            failures += 1
            for line in exc.lines():
                output.error(f"error: {line}")
            continue
        except KeyboardInterrupt:
            again = str(paths[0]) if saved_by_manifest and paths else str(manifest.path)
            output.error(f"interrupted: {_interrupted_state(manifest, before, again)}")
            return EXIT_INTERRUPTED
        if not result.sent:
            output.out(f"{result.name}: {result.action}: {result.skipped_reason}")
            continue
        for part in result.sent:
            output.out(
                f"{result.name}: sent {part.type} msgId {part.msg_id} "
                f"({part.size_bytes:,} bytes, attempt {result.attempt})"
            )
        if wait_seconds is None:
            output.note(f"next: iplosctl receipts {manifest.path} --wait 10m")
    if wait_seconds is not None:
        code = _collect_receipts(manifests, wait_seconds, offline_revocation=offline_revocation)
        return EXIT_ERROR if failures else code
    if failures:
        return EXIT_ERROR
    return EXIT_OK


def _file_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _interrupted_state(manifest: Manifest, before: bytes | None, again: str) -> str:
    """Where an interrupted apply left the lockfile, and the command that goes on from there."""
    from iplosctl import lockfile

    path = manifest.lockfile_path
    if _file_bytes(path) == before:
        return f"{manifest.name}: {path} is unchanged: nothing was journaled, nothing was sent"
    lock = lockfile.load(path)
    last = lock.last_attempt if lock else None
    if last is None:  # cannot happen: apply only ever writes attempts
        return f"{manifest.name}: {path} holds no attempt"
    states = ", ".join(f"{p.type} {p.state}" for p in last.parts)
    if "journaled" in last.states:
        return (
            f"{manifest.name}: attempt {last.number} is journaled in {path} ({states}); a "
            f"journaled part may or may not have left: run `iplosctl apply {again}` again to "
            "resend it with the same message ids (the register drops duplicates)"
        )
    return (
        f"{manifest.name}: attempt {last.number} is sent ({states}, {path}): next: "
        f"iplosctl receipts {manifest.path} --wait 10m"
    )


def _parse_wait(wait: str | None) -> float | None:
    from iplosctl.durations import parse_duration

    if wait is None:
        return None
    try:
        return parse_duration(wait)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--wait") from None


attempt_app = typer.Typer(
    help="Record an operator's decision about an attempt in the lockfile.", no_args_is_help=True
)
app.add_typer(attempt_app, name="attempt")


@attempt_app.command("abandon")
def attempt_abandon(
    manifest_path: Annotated[Path, typer.Argument(help="The submission's manifest.")],
    attempt: Annotated[
        int, typer.Option("--attempt", min=1, help="The attempt's number (the last one).")
    ],
    reason: Annotated[
        str, typer.Option("--reason", help="Why, for whoever reads the lockfile next.")
    ],
    never_sent: Annotated[
        bool,
        typer.Option(
            "--never-sent",
            help="You state that the attempt never left this machine (journaled parts only).",
        ),
    ] = False,
    confirmed_by_register: Annotated[
        bool,
        typer.Option(
            "--confirmed-by-register", help="KPR confirmed that the attempt never arrived."
        ),
    ] = False,
    by: Annotated[
        str | None,
        typer.Option("--by", help="Who decides (default: $IPLOSCTL_OPERATOR, CI user, login)."),
    ] = None,
    lockfile_path: LockfileOpt = None,
) -> int:
    """Abandon an attempt that will never be answered or never left: the next plan sends a new
    attempt with new message ids, and the abandoned ids are never sent again."""
    from iplosctl.decisions import CONFIRMED_BY_REGISTER, NEVER_SENT, abandon, transport_proof

    if never_sent == confirmed_by_register:
        raise UsageError("say what the decision rests on: --never-sent or --confirmed-by-register")
    manifests, broken = _select([manifest_path], None)
    if broken:
        return EXIT_ERROR  # its problems were printed; nothing was recorded
    if len(manifests) != 1:
        raise UsageError("attempt abandon takes exactly one manifest")
    manifest = manifests[0]
    done = abandon(
        lockfile_path or manifest.lockfile_path,
        name=manifest.name,
        attempt_number=attempt,
        reason=reason,
        basis=NEVER_SENT if never_sent else CONFIRMED_BY_REGISTER,
        by=by,
        prove_never_sent=transport_proof(manifest),
    )
    output.out(
        f"{done.name}: attempt {done.attempt} abandoned ({', '.join(done.parts)}) by "
        f"{done.decision.by} at {done.decision.at} (lockfile serial {done.serial})"
    )
    output.note(f"next: iplosctl plan {manifest.path} (a new attempt, new message ids)")
    return EXIT_OK


lock_app = typer.Typer(help="Inspect or clear a submission's apply lock.", no_args_is_help=True)
app.add_typer(lock_app, name="lock")


@lock_app.command("force-unlock")
def lock_force_unlock(
    lock_id: Annotated[str, typer.Argument(help="The id the 'lock held' message shows.")],
    lockfile_path: Annotated[Path, typer.Argument(help="The submission's .lock.yaml.")],
) -> int:
    """Remove the lock of a dead apply (only if the id matches)."""
    from iplosctl.locking import force_unlock

    force_unlock(lockfile_path, lock_id)
    output.note(f"removed lock {lock_id} of {lockfile_path}")
    return EXIT_OK


def _collect_receipts(
    manifests: list[Manifest],
    wait_seconds: float | None,
    lockfile_path: Path | None = None,
    *,
    offline_revocation: bool = False,
) -> int:
    """Collect receipts for each manifest and turn where each submission stands into the
    exit code (README, "Exit codes"): 1 when a part is rejected or has a transport
    error (or the run failed), else 75 when `--wait` ran out with receipts outstanding,
    else 0. Accepted with errors is 0 with a warning: the register took the data."""
    from iplosctl.receipts import collect_receipts, detail_lines, summary_line

    progress = output.note if output.is_terminal() else None
    deadline = time.monotonic() + (wait_seconds or 0.0)  # one budget for all submissions
    failures = waiting = rejected = 0
    for manifest in manifests:
        try:
            result = collect_receipts(
                manifest,
                wait_seconds=max(0.0, deadline - time.monotonic()) if wait_seconds else 0,
                lockfile_path=lockfile_path,
                progress=progress,
                offline_revocation=offline_revocation,
            )
        except IplosctlError as exc:
            failures += 1
            for line in exc.lines():
                output.error(f"error: {manifest.name}: {line}")
            continue
        output.out(summary_line(result))
        for line in detail_lines(result):
            output.out(line)
        waiting += result.outstanding
        if result.failed:
            rejected += 1
            what = ", ".join(f"{part} {state}" for part, state in result.failed)
            output.error(
                f"error: {manifest.name}: attempt {result.attempt} failed ({what}): run "
                f"`iplosctl plan {manifest.path}` for the register's errors, fix them, then apply "
                "(resubmit)"
            )
        elif result.with_errors:
            output.note(
                f"warning: {manifest.name}: attempt {result.attempt} was accepted with errors "
                f"({', '.join(result.with_errors)}): read them above; a correction may be due"
            )
    if wait_seconds is not None and waiting:
        output.error(
            f"still waiting for {waiting} receipt(s): run `iplosctl receipts --wait` again "
            "later; never resend before they are checked"
        )
    if failures or rejected:
        return EXIT_ERROR
    return EXIT_WAITING if wait_seconds is not None and waiting else EXIT_OK


@app.command()
def receipts(
    paths: PathsArg = None,
    wait: Annotated[
        str | None,
        typer.Option(
            "--wait",
            metavar="DURATION",
            help="Poll until every sent part is answered, at most this long (30s, 10m, 1h).",
        ),
    ] = None,
    only: OnlyOpt = None,
    lockfile_path: LockfileOpt = None,
    offline_revocation: OfflineRevocationOpt = False,
) -> int:
    """Collect the register's receipts (AppRec) and transport errors into the lockfiles."""
    wait_seconds = _parse_wait(wait)
    manifests, broken = _select(paths, only)
    if lockfile_path is not None and len(manifests) + len(broken) != 1:
        raise UsageError("--lockfile needs exactly one manifest")
    if offline_revocation:
        output.error(
            "warning: --offline-revocation: a receipt whose signer's revocation cannot be "
            "checked is accepted"
        )
    code = _collect_receipts(
        manifests, wait_seconds, lockfile_path, offline_revocation=offline_revocation
    )
    return EXIT_ERROR if broken else code


@app.command()
def status(
    paths: PathsArg = None,
    fmt: Annotated[Format, typer.Option("--format", help="text or json.")] = Format.text,
    only: OnlyOpt = None,
    today: TodayOpt = None,
) -> int:
    """Per submission: deadline window, last attempt, receipts, quarantine, what to do next."""
    from iplosctl.status import broken_status, render_status, submission_status

    day = _parse_day(today)
    manifests, broken = _select(paths, only)
    statuses = [submission_status(m, today=day) for m in manifests]
    statuses += [broken_status(b) for b in broken]
    if fmt is Format.json:
        output.raw(
            json.dumps(
                {"formatVersion": "1", "submissions": [s.as_dict() for s in statuses]}, indent=2
            )
        )
    else:
        output.out_highlighted(render_status(statuses).rstrip("\n"))
    return EXIT_ERROR if any(s.action == "error" for s in statuses) else EXIT_OK


@app.command("support-bundle")
def support_bundle(
    out: Annotated[
        Path, typer.Option("--out", dir_okay=False, help="Zip file to write (attach it).")
    ],
    paths: PathsArg = None,
    only: OnlyOpt = None,
    today: TodayOpt = None,
) -> int:
    """Zip what to attach when reporting a problem to the register: no personal data or secrets."""
    from iplosctl.support_bundle import build_support_bundle

    day = _parse_day(today)
    # Exactly when a manifest is broken or an export is missing is when a bundle is needed:
    # it is written for the usable manifests and names the problems of the others.
    manifests, broken = _select(paths, only)
    written = build_support_bundle(manifests, out, today=day, broken=broken)
    output.out(str(written))
    output.note(
        f"wrote {written}: versions, digests, MsgIds, states and receipt codes, without "
        "personal data or secrets; attach it to your report (addresses in its README.txt)"
    )
    return EXIT_OK


@app.command()
def init(
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", dir_okay=False, help="Manifest to write (default: manifests/NAME.yaml)."
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing file.")] = False,
    name: Annotated[
        str | None,
        typer.Option("--name", help="Submission name, e.g. oslo-2023 (default: from name, year)."),
    ] = None,
    year: Annotated[
        int | None, typer.Option("--year", help="Reporting year with a profile (default: newest).")
    ] = None,
    environment: Annotated[
        str | None,
        typer.Option("--environment", help="production, qa, test or sandbox (default: sandbox)."),
    ] = None,
    municipality_number: Annotated[
        str | None, typer.Option("--municipality-number", help="Kommunenummer, 4 digits.")
    ] = None,
    municipality_name: Annotated[
        str | None, typer.Option("--municipality-name", help="e.g. 'Fjordvik kommune'.")
    ] = None,
    org_number: Annotated[
        str | None, typer.Option("--org-number", help="The municipality's organisasjonsnummer.")
    ] = None,
    her_id: Annotated[
        int | None, typer.Option("--her-id", help="The municipality's HER-id.")
    ] = None,
    service_her_id: Annotated[
        int | None,
        typer.Option("--service-her-id", help='HER-id of its "Saksbehandling" service.'),
    ] = None,
    epj_system: Annotated[
        str | None, typer.Option("--epj-system", help="EPJ system as in the export header.")
    ] = None,
    epj_version: Annotated[
        str | None, typer.Option("--epj-version", help="Installed EPJ version, e.g. 5.4.1.")
    ] = None,
    service_unit: Annotated[
        list[str] | None,
        typer.Option(
            "--service-unit", metavar="ORGNUMBER=NAME", help="A service unit; repeatable."
        ),
    ] = None,
    source: Annotated[
        str | None, typer.Option("--source", help="The EPJ export (path from here).")
    ] = None,
    source_plugin: Annotated[
        str | None, typer.Option("--source-plugin", help="Source plugin (default: xml).")
    ] = None,
    source_format: Annotated[
        str | None, typer.Option("--source-format", help="Format profile (xml: iplos-export-v1).")
    ] = None,
    endpoint_url: Annotated[
        str | None, typer.Option("--endpoint-url", help="Broker URL (default: the profile's).")
    ] = None,
    namespace: Annotated[
        str | None, typer.Option("--namespace", help="NHN namespace (default: the profile's).")
    ] = None,
    username: Annotated[str | None, typer.Option("--username", help="Broker user name.")] = None,
    credential: Annotated[
        str | None,
        typer.Option(
            "--credential", help="Secret name of the broker password (default NAME-amqp)."
        ),
    ] = None,
    certs: Annotated[
        Path | None,
        typer.Option("--certs", file_okay=False, help="Folder with the certificates (test, prod)."),
    ] = None,
    owner: Annotated[str | None, typer.Option("--owner", help="Team or address answering.")] = None,
) -> int:
    """Write a commented manifest; on a terminal, asks for whatever the flags leave out."""
    from iplosctl.init import (
        answers_from_values,
        default_out,
        prompt_answers,
        refuse_existing,
        write_manifest,
    )

    if out is not None:
        refuse_existing(out, force=force)  # before a single question is asked
    given: dict[str, Any] = {
        "name": name,
        "reporting_year": year,
        "environment": environment,
        "municipality_number": municipality_number,
        "municipality_name": municipality_name,
        "org_number": org_number,
        "her_id": her_id,
        "service_her_id": service_her_id,
        "epj_system": epj_system,
        "epj_version": epj_version,
        "service_units": service_unit,
        "source_path": source,
        "source_plugin": source_plugin,
        "source_format": source_format,
        "endpoint_url": endpoint_url,
        "namespace": namespace,
        "username": username,
        "credential": credential,
        "certificates": str(certs) if certs is not None else None,
        "owner": owner,
    }
    if sys.stdin.isatty():

        def ask(question: str, default: str | None) -> str:
            return str(typer.prompt(question, default=default or "", show_default=bool(default)))

        answers = prompt_answers(ask, given=given, tell=output.error)
    else:
        answers = answers_from_values(given)
    target = out or default_out(answers)
    write_manifest(answers, target, force=force)
    output.out(f"wrote {target}")
    output.note(f"next: iplosctl validate {target}, then iplosctl plan {target}")
    return EXIT_OK


@app.command("plugins")
def list_plugins(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable list.")] = False,
) -> int:
    """List installed plugins with their versions."""
    infos = plugins.all_installed()
    if as_json:
        output.raw(json.dumps([info.__dict__ for info in infos], indent=2))
        return EXIT_OK
    if not infos:
        output.out("no plugins installed")
    for info in infos:
        output.out(
            f"{info.kind:<10} {info.name:<12} {info.distribution} {info.version}  ({info.target})"
        )
    return EXIT_OK


@app.command()
def schema() -> int:
    """Print the manifest's JSON Schema (for editors' autocompletion)."""
    output.raw(json.dumps(manifest_schema(), indent=2, ensure_ascii=False))
    return EXIT_OK


@format_app.command("check")
def format_check(
    profile: Annotated[
        str, typer.Argument(help="Format profile YAML (a path) or a shipped profile's name.")
    ],
    sample: Annotated[Path, typer.Option("--sample", help="An export to read with the profile.")],
    plugin: Annotated[str, typer.Option("--plugin", help="Source plugin (default xml).")] = "xml",
) -> int:
    """Per field: how many records had a value, which failed to convert, what nothing reads."""
    from iplosctl.formatcheck import check_sample

    report = check_sample(profile, sample, plugin=plugin)
    for line in report.lines:
        output.out(line)
    return EXIT_ERROR if report.failed else EXIT_OK


@secrets_app.command("set")
def secrets_set(name: Annotated[str, typer.Argument(help="Secret name used in manifests.")]) -> int:
    """Store a secret; reads it from a hidden prompt, or from stdin when piped."""
    if sys.stdin.isatty():
        value = getpass.getpass(f"value for {name}: ")
        if getpass.getpass("again: ") != value:
            raise IplosctlError("the two entries differ; nothing stored")
    else:
        value = sys.stdin.readline().rstrip("\r\n")
    secret_store.set_secret(name, value)
    output.note(f"stored secret {name!r} in the keyring (service {secret_store.KEYRING_SERVICE!r})")
    return EXIT_OK


@secrets_app.command("delete")
def secrets_delete(name: Annotated[str, typer.Argument(help="Secret name.")]) -> int:
    """Remove a secret from the keyring."""
    secret_store.delete_secret(name)
    output.note(f"deleted secret {name!r}")
    return EXIT_OK


@sandbox_app.command("pki")
def sandbox_pki(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the certificates to.")],
) -> int:
    """Create a test CA and signing/encryption certificates for a municipality and the register."""
    files = generate_pki(out)
    for stem in LEAVES:
        output.out(f"{files.certificate(stem)}  {files.key(stem)}")
    output.note(f"test PKI written to {out} (CA: {files.ca}); for rehearsals only")
    return EXIT_OK


@sandbox_app.command("generate")
def sandbox_generate(
    recipients: Annotated[int, typer.Option("--recipients", min=0, help="How many recipients.")],
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same bytes.")],
    out: Annotated[Path, typer.Option("--out", dir_okay=False, help="Export file to write.")],
    manifest: Annotated[
        Path | None,
        typer.Option(
            "--manifest", help="Take municipality, year, EPJ and service units from a manifest."
        ),
    ] = None,
    municipality: Annotated[
        str | None, typer.Option("--municipality", help="Kommunenummer, 4 digits (default 9999).")
    ] = None,
    year: Annotated[
        int | None, typer.Option("--year", help="Reporting year; needs a profile (default 2023).")
    ] = None,
    test_persons: Annotated[
        int, typer.Option("--test-persons", min=0, help='Recipients named "Donald Duck".')
    ] = 0,
) -> int:
    """Write a realistic synthetic export (Test-Norge ids only) in export format v1."""
    from iplosctl.manifest import load_manifest
    from iplosctl.sandbox.generate import generate_export

    options: dict[str, Any] = {}
    if manifest is not None:
        m = load_manifest(manifest)
        options = {
            "municipality": m.municipality.number,
            "year": m.reporting_year,
            "service_units": tuple(u.org_number for u in m.service_units),
            "epj_system": m.epj.system,
            "epj_version": m.epj.version,
        }
    if municipality is not None:
        options["municipality"] = municipality
    if year is not None:
        options["year"] = year
    written = generate_export(
        out, recipients=recipients, seed=seed, test_persons=test_persons, **options
    )
    output.note(
        f"wrote {written.recipients} synthetic recipients ({written.size:,} bytes) to {out}"
    )
    return EXIT_OK


@sandbox_app.command("serve")
def sandbox_serve(
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="Port on 127.0.0.1; 0 picks a free one.")
    ] = 0,
    state: Annotated[
        Path | None,
        typer.Option(
            "--state",
            help="Folder for the PKI, queues and answered ids (default: the embedded one).",
        ),
    ] = None,
    her_id: Annotated[
        int | None,
        typer.Option(
            "--her-id", help="The register's HER-id (default: the profiles' sandbox one)."
        ),
    ] = None,
    behaviour: BehaviourOpt = None,
    schema_dir: SchemaDirOpt = None,
) -> int:
    """Run the KPR sandbox register as an AMQP 1.0 peer on 127.0.0.1 until ^C."""
    from iplosctl.sandbox import commands

    commands.serve(
        commands.Printers(out=output.out, note=output.note),
        port=port,
        state=state,
        her_id=her_id,
        behaviour=behaviour,
        schema_dir=schema_dir,
    )
    return EXIT_OK


@sandbox_app.command("attach")
def sandbox_attach(
    url: Annotated[
        str, typer.Option("--url", help="Broker, amqp(s)://host:port (no credentials).")
    ],
    pki: Annotated[Path, typer.Option("--pki", help="Folder written by `iplosctl sandbox pki`.")],
    her_id: Annotated[
        int, typer.Option("--her-id", help="The register's HER-id: reads {HER-id}_async.")
    ],
    username: Annotated[str | None, typer.Option("--username", help="Broker user.")] = None,
    credential: Annotated[
        str | None,
        typer.Option(
            "--credential", help="Secret holding the broker password (iplosctl secrets set)."
        ),
    ] = None,
    namespace: Annotated[
        str | None, typer.Option("--namespace", help="Send replies via /exchange/NAMESPACE/QUEUE.")
    ] = None,
    behaviour: BehaviourOpt = None,
    stop_after: Annotated[
        float | None, typer.Option("--stop-after", min=0, help="Stop after this many seconds.")
    ] = None,
    schema_dir: SchemaDirOpt = None,
    state: Annotated[
        Path | None, typer.Option("--state", help="Folder that keeps the answered-message list.")
    ] = None,
) -> int:
    """Answer as the KPR sandbox register from a queue on a real broker, until ^C."""
    from iplosctl.sandbox import commands

    commands.attach_to_broker(
        commands.Printers(out=output.out, note=output.note),
        url,
        pki=pki,
        her_id=her_id,
        username=username,
        password=secret_store.get_secret(credential) if credential else None,
        namespace=namespace,
        behaviour=behaviour,
        stop_after=stop_after,
        schema_dir=schema_dir,
        state=state,
    )
    return EXIT_OK


@sandbox_app.command("attach-edi")
def sandbox_attach_edi(
    smtp: Annotated[str, typer.Option("--smtp", help="smtp://host:587 (STARTTLS) or smtps://.")],
    imap: Annotated[str, typer.Option("--imap", help="imaps://host:993 or imap:// (STARTTLS).")],
    address: Annotated[str, typer.Option("--address", help="The register's own EDI address.")],
    pki: Annotated[Path, typer.Option("--pki", help="Folder written by `iplosctl sandbox pki`.")],
    username: Annotated[str, typer.Option("--username", help="Mailbox user.")],
    credential: Annotated[
        str, typer.Option("--credential", help="Secret holding the mailbox password.")
    ],
    her_id: Annotated[
        int | None,
        typer.Option(
            "--her-id", help="The register's HER-id (default: the profiles' sandbox one)."
        ),
    ] = None,
    ca_file: Annotated[
        Path | None, typer.Option("--ca-file", help="CA bundle for the mail servers' TLS.")
    ] = None,
    behaviour: BehaviourOpt = None,
    schema_dir: SchemaDirOpt = None,
    state: Annotated[
        Path | None, typer.Option("--state", help="Folder that keeps the answered-message list.")
    ] = None,
    once: Annotated[
        bool, typer.Option("--once", help="Answer what is in the mailbox now, then stop.")
    ] = False,
    poll: Annotated[float, typer.Option("--poll", min=0.1, help="Seconds between reads.")] = 5.0,
) -> int:
    """Answer as the KPR sandbox register over EDI: read its mailbox, reply by mail (issue 14)."""
    from iplosctl.sandbox import commands
    from iplosctl.sandbox.edi import RegisterMailbox

    mailbox = RegisterMailbox(
        address=address,
        smtp=smtp,
        imap=imap,
        username=username,
        password=secret_store.get_secret(credential),
        ca_file=ca_file,
    )
    commands.attach_to_mailbox(
        commands.Printers(out=output.out, note=output.note),
        mailbox,
        pki=pki,
        her_id=her_id,
        behaviour=behaviour,
        schema_dir=schema_dir,
        state=state,
        once=once,
        poll=poll,
    )
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: run a command and map every outcome to an exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    output.reset()
    command = typer.main.get_command(app)
    try:
        result = command.main(args=args, prog_name="iplosctl", standalone_mode=False)
    except NoArgsIsHelpError as exc:
        output.note(exc.format_message())
        return EXIT_USAGE
    except ClickUsageError as exc:
        output.error(f"usage error: {exc.format_message()}")
        hint = exc.ctx.command_path if exc.ctx else "iplosctl"
        output.note(f"run `{hint} --help` for usage")
        return EXIT_USAGE
    except ClickException as exc:
        output.error(f"error: {exc.format_message()}")
        return exc.exit_code
    except Abort:
        output.error("aborted")
        return 130
    except IplosctlError as exc:
        for line in exc.lines():
            output.error(f"error: {line}")
        return exc.exit_code
    except KeyboardInterrupt:
        output.error("interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:
        if _state["debug"]:
            raise
        log = write_crash_log(exc, args)
        output.error(
            f"internal error ({type(exc).__name__}): this is a bug in iplosctl. "
            f"Details without personal data: {log}"
        )
        return EXIT_INTERNAL
    return result if isinstance(result, int) else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
