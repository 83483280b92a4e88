"""`iplosctl sandbox …`: the local KPR simulator (serve, attach, attach-edi) and its test
data (pki, generate)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from iplosctl import output
from iplosctl import secrets as secret_store
from iplosctl.cli.app import sandbox_app
from iplosctl.cli.options import BehaviourOpt, SchemaDirOpt
from iplosctl.errors import EXIT_OK
from iplosctl.manifest import load_manifest
from iplosctl.sandbox import commands
from iplosctl.sandbox.edi import RegisterMailbox
from iplosctl.sandbox.generate import generate_export
from iplosctl.sandbox.pki import LEAVES, generate_pki


def _printers() -> commands.Printers:
    """Where the sandbox commands print: the CLI's own output, looked up at each call."""
    return commands.Printers(out=output.out, note=output.note)


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
    commands.serve(
        _printers(),
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
    commands.attach_to_broker(
        _printers(),
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
    mailbox = RegisterMailbox(
        address=address,
        smtp=smtp,
        imap=imap,
        username=username,
        password=secret_store.get_secret(credential),
        ca_file=ca_file,
    )
    commands.attach_to_mailbox(
        _printers(),
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
