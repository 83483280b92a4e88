"""`iplosctl validate`: schema, profiles, plugins, referenced files and certificates."""

from __future__ import annotations

from typing import Annotated

import typer

from iplosctl import output
from iplosctl.certificates import check_certificates
from iplosctl.cli.app import app
from iplosctl.cli.options import OfflineRevocationOpt, PathsArg
from iplosctl.errors import EXIT_ERROR, EXIT_OK, IplosctlError
from iplosctl.manifest import DEFAULT_PATH, Manifest, validate_paths


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

    result = validate_paths(paths or [DEFAULT_PATH], check_files=not no_files, reuse_parsed=True)
    if result.files == 0:
        raise IplosctlError(
            f"no manifests found in {', '.join(str(p) for p in paths or [DEFAULT_PATH])}"
        )
    for problem in result.problems:
        output.error(str(problem))
    for warning in result.warnings:
        output.note(f"warning: {warning}")
    # Certificates (validity, chain, revocation) need the files: not with --no-files.
    bad_certificates: list[Manifest] = []
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
