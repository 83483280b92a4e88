"""init.render: the manifest `iplosctl init` writes, a commented template filled from the answers.

The file must pass `iplosctl validate` once the export and certificates are in place, and
must explain itself: every key carries the comment a reviewer needs, like
`examples/fjordvik/manifests/fjordvik-2023.yaml`. What it says and where lives in one
readable file, `manifest.yaml.tmpl` beside this module (its opening notes give the
syntax); the values come from `manifest_data`, built from the answers. The filled text is
loaded with the project's ruamel set-up (`yamlio`) and must hold exactly that data, so a
template that drifts from the data, or a value that would change the YAML around it
(a name with `: ` or `#`), fails here and never reaches the user's repository.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from iplosctl import profiles, yamlio
from iplosctl.atomic import write_atomic
from iplosctl.errors import IplosctlError, ProfileError
from iplosctl.init.answers import CertificatePaths, InitAnswers
from iplosctl.manifest.loader import SCHEMA_PATH

TEMPLATE = Path(__file__).with_name("manifest.yaml.tmpl")
#: where a comment after a value starts, when the value leaves room (ruamel's habit)
COMMENT_COLUMN = 32

_VALUE = re.compile(r"\{\{\s*([\w.]+)\s*\}\}")
_TEXT = re.compile(r"\[\[\s*(\w+)\s*\]\]")
_IF = re.compile(r"^\{%\s*if\s+(not\s+)?(\w+)\s*%\}$")
_END = re.compile(r"^\{%\s*end\s*%\}$")
#: characters that end a plain scalar inside a flow collection
_FLOW_INDICATORS = frozenset(",[]{}")


def schema_reference(out: Path | None = None) -> str:
    """Where editors find the installed schema, as seen from the manifest's folder.

    Relative when manifest and package share a folder below the filesystem root
    (a repository with its own .venv, or this repository); a file URI otherwise,
    since `../../../usr/lib/…` breaks as soon as the repository moves.
    """
    base = (out.parent if out is not None else Path.cwd()).resolve()
    schema = SCHEMA_PATH.resolve()
    try:
        common = Path(os.path.commonpath([schema, base]))
        relative = os.path.relpath(schema, base)
    except ValueError:  # another drive on Windows
        return schema.as_uri()
    if common == Path(common.anchor):
        return schema.as_uri()
    return Path(relative).as_posix()


def manifest_data(answers: InitAnswers, *, out: Path | None = None) -> dict[str, Any]:
    """The manifest as plain data: what the written file must load as.

    With `out`, file paths in the answers (relative to the current folder) are
    rewritten relative to the manifest's folder, as the manifest format wants.
    """

    def path(value: str) -> str:
        if out is None or Path(value).is_absolute():
            return Path(value).as_posix()
        return Path(os.path.relpath(os.path.abspath(value), os.path.abspath(out.parent))).as_posix()

    metadata: dict[str, Any] = {
        "name": answers.name,
        "description": (
            f"{answers.municipality_name}, IPLOS {answers.reporting_year} ({answers.environment})"
        ),
    }
    if answers.owner:
        metadata["owner"] = answers.owner
    source: dict[str, Any] = {"plugin": answers.source_plugin, "path": path(answers.source_path)}
    if answers.source_format:
        source["format"] = answers.source_format
    spec: dict[str, Any] = {
        "reportingYear": answers.reporting_year,
        "environment": answers.environment,
        "municipality": {
            "number": answers.municipality_number,
            "name": answers.municipality_name,
            "orgNumber": answers.org_number,
        },
        "sender": {"herId": answers.her_id, "serviceHerId": answers.service_her_id},
        "epj": {"system": answers.epj_system, "version": answers.epj_version},
        "serviceUnits": [
            {"orgNumber": u.org_number, "name": u.name} for u in answers.service_units
        ],
        "source": source,
        "testPersons": {"names": list(answers.test_person_names)},
    }
    if not answers.sandbox:
        endpoint: dict[str, Any] = {"transport": "amqp"}
        for key, value in (
            ("url", answers.endpoint_url),
            ("namespace", answers.namespace),
            ("username", answers.username),
            ("credential", answers.credential),
        ):
            if value:
                endpoint[key] = value
        spec["endpoint"] = endpoint
        if answers.certificates is not None:
            spec["certificates"] = _certificates(answers.certificates, path)
    return {"apiVersion": "iplosctl/v1", "kind": "Submission", "metadata": metadata, "spec": spec}


def _certificates(certs: CertificatePaths, path: Callable[[str], str]) -> dict[str, Any]:
    register = {
        "signing": path(certs.register_signing),
        "encryption": path(certs.register_encryption),
    }
    if certs.trust_anchors:
        register["trustAnchors"] = path(certs.trust_anchors)
    return {
        "signing": {"certificate": path(certs.signing_certificate), "key": path(certs.signing_key)},
        "encryption": {
            "certificate": path(certs.encryption_certificate),
            "key": path(certs.encryption_key),
        },
        "register": register,
    }


def render_manifest(answers: InitAnswers, *, out: Path | None = None) -> str:
    """The manifest as commented YAML.

    With `out`, file paths in the answers (relative to the current folder) are
    rewritten relative to the manifest's folder, as the manifest format wants,
    and the `$schema` line points at the installed schema from there.
    """
    data = manifest_data(answers, out=out)
    spec = data["spec"]
    endpoint = spec.get("endpoint", {})
    credential = endpoint.get("credential")
    own_format = spec["source"].get("format") == "iplos-export-v1"
    flags = {
        "sandbox": answers.sandbox,
        "owner": "owner" in data["metadata"],
        # plan blocks iplosctl's own format outside the sandbox (rule payload-format)
        "own_format_blocked": own_format and not answers.sandbox,
        "format_allowed": "format" in spec["source"] and not (own_format and not answers.sandbox),
        "url": "url" in endpoint,
        "namespace": "namespace" in endpoint,
        "username": "username" in endpoint,
        "credential": credential is not None,
        "certificates": "certificates" in spec,
        "trust_anchors": "trustAnchors" in spec.get("certificates", {}).get("register", {}),
    }
    texts = {
        "schema": answers.schema or schema_reference(out),
        "municipality_name": answers.municipality_name,
        "year": str(answers.reporting_year),
        "environment": answers.environment,
        "name": answers.name,
        "environments": _environment_names(answers.reporting_year),
        "credential": credential or "",
        "credential_variable": (
            "IPLOSCTL_SECRET_" + re.sub(r"[^A-Z0-9]", "_", credential.upper()) if credential else ""
        ),
    }
    text = fill(_template(), data, flags, texts)
    loaded = yamlio.to_plain(yamlio.loads(text, name=str(out or "manifest.yaml")))
    if loaded != data:  # a bug in the template or the quoting, never the user's
        raise IplosctlError(
            "iplosctl init produced a manifest that does not hold the answers given; "
            "please report this (iplosctl support-bundle)"
        )
    return text


def _environment_names(year: int) -> str:
    try:
        return " | ".join(profiles.load_profile(year).environments)
    except ProfileError:
        return "production | qa | test | sandbox"


@cache
def _template() -> str:
    return TEMPLATE.read_text(encoding="utf-8")


def fill(
    template: str, data: Mapping[str, Any], flags: Mapping[str, bool], texts: Mapping[str, str]
) -> str:
    """The template with its conditions applied and its placeholders filled (syntax: the
    template's opening notes). Unknown names are a KeyError: a template bug."""
    lines: list[str] = []
    for line in _kept_lines(template.splitlines(), flags):
        lines.extend(_fill_line(line, data, texts))
    return "\n".join(lines) + "\n"


def _kept_lines(lines: list[str], flags: Mapping[str, bool]) -> Iterator[str]:
    keeping = [True]
    for line in lines:
        condition = _IF.match(line.strip())
        if condition:
            wanted = flags[condition.group(2)] != bool(condition.group(1))
            keeping.append(keeping[-1] and wanted)
        elif _END.match(line.strip()):
            keeping.pop()
        elif keeping[-1] and not line.startswith("{#"):
            yield line
    if len(keeping) != 1:
        raise ValueError("manifest template: an {% if %} without its {% end %}")


def _fill_line(line: str, data: Mapping[str, Any], texts: Mapping[str, str]) -> list[str]:
    if line.lstrip().startswith("#"):  # a comment line: text only
        # a line break in an answer must not end the comment and start YAML
        return [_TEXT.sub(lambda m: " ".join(texts[m.group(1)].splitlines()), line)]
    found = _VALUE.search(line)
    if found is None:
        return [line]
    indent = line[: len(line) - len(line.lstrip())]
    value = _lookup(data, found.group(1))
    if line.strip() == found.group(0) and isinstance(value, list):  # a block list of maps
        return [f"{indent}- {_flow_map(item)}" for item in value]
    head, comment = line[found.end() :], ""
    if " # " in head:
        head, comment = head.split(" # ", 1)
        comment = "# " + comment
    content = (line[: found.start()] + _value(value) + head).rstrip()
    if comment:
        content = content.ljust(COMMENT_COLUMN - 1) + " " + comment
    return [content]


def _lookup(data: Mapping[str, Any], dotted: str) -> Any:
    node: Any = data
    for key in dotted.split("."):
        node = node[key]
    return node


def _value(value: Any) -> str:
    if isinstance(value, list):  # names as people write them: always quoted, like "Donald Duck"
        return "[" + ", ".join(json.dumps(str(v), ensure_ascii=False) for v in value) + "]"
    return _scalar(value)


def _flow_map(item: Mapping[str, Any]) -> str:
    return "{" + ", ".join(f"{k}: {_scalar(v, in_flow=True)}" for k, v in item.items()) + "}"


def _scalar(value: Any, *, in_flow: bool = False) -> str:
    """A YAML scalar that loads back as `value`: plain when that is safe, else double-quoted
    (numbers the schema wants as strings, like "0301", are always quoted that way)."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise TypeError(f"manifest template: cannot write {type(value).__name__}")
    if isinstance(value, int):
        return str(value)
    quoted = json.dumps(value, ensure_ascii=False)
    if in_flow and (_FLOW_INDICATORS & set(value) or " #" in value):
        return quoted
    dumped = yamlio.dumps({"v": value})  # ruamel quotes what would not read back as written
    plain = dumped.removeprefix("v: ").rstrip("\n")
    if not dumped.startswith("v: ") or "\n" in plain or plain != value:
        return quoted
    return plain


def default_out(answers: InitAnswers) -> Path:
    """`manifests/<name>.yaml`: where `iplosctl validate` looks by default."""
    return Path("manifests") / f"{answers.name}.yaml"


def refuse_existing(out: Path, *, force: bool) -> None:
    """Raise before anything is asked or written: a manifest may hold weeks of review."""
    if out.exists() and not force:
        raise IplosctlError(f"{out} exists: refusing to overwrite it (use --force to replace it)")


def write_manifest(answers: InitAnswers, out: Path, *, force: bool = False) -> Path:
    """Render and write the manifest atomically; an existing file needs `force`."""
    refuse_existing(out, force=force)
    text = render_manifest(answers, out=out)
    # all or nothing: ^C never leaves half a manifest for validate to trip over
    write_atomic(out, text.encode("utf-8"))
    return out
