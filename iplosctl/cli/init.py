"""`iplosctl init`: write a commented manifest from flags and, on a terminal, questions."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from iplosctl import output
from iplosctl.cli.app import app
from iplosctl.errors import EXIT_OK
from iplosctl.init import (
    answers_from_values,
    default_out,
    prompt_answers,
    refuse_existing,
    write_manifest,
)


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
