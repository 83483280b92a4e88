"""`iplosctl init`: write a first, commented manifest from flags or answers at a prompt.

A municipality's IT person starts from a blank repository (issue 6). The file they get
must pass `iplosctl validate` once the export and certificates are in place, and must
explain itself. One job per module: `questions` collects and checks the answers (flags,
or a prompt that re-asks a wrong one), with the patterns read from the manifest schema
(`schema_rules`); `answers` types them; `render` fills the commented template
`manifest.yaml.tmpl` from them and writes it atomically.
"""

from __future__ import annotations

from iplosctl.init.answers import CertificatePaths, InitAnswers, ServiceUnitAnswer
from iplosctl.init.questions import MAX_ATTEMPTS, Ask, Tell, answers_from_values, prompt_answers
from iplosctl.init.render import (
    default_out,
    manifest_data,
    refuse_existing,
    render_manifest,
    schema_reference,
    write_manifest,
)

__all__ = [
    "MAX_ATTEMPTS",
    "Ask",
    "CertificatePaths",
    "InitAnswers",
    "ServiceUnitAnswer",
    "Tell",
    "answers_from_values",
    "default_out",
    "manifest_data",
    "prompt_answers",
    "refuse_existing",
    "render_manifest",
    "schema_reference",
    "write_manifest",
]
