"""`iplosctl plugins`, `iplosctl schema` and `iplosctl format check`: what is installed and
how exports and manifests are read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from iplosctl import output, plugins
from iplosctl.cli.app import app, format_app
from iplosctl.errors import EXIT_ERROR, EXIT_OK
from iplosctl.formatcheck import check_sample
from iplosctl.manifest import manifest_schema


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

    report = check_sample(profile, sample, plugin=plugin)
    for line in report.lines:
        output.out(line)
    return EXIT_ERROR if report.failed else EXIT_OK
