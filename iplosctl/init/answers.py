"""init.answers: what `iplosctl init` collects, typed, before anything is written.

Filled by `init.questions` (flags or a prompt) and turned into a manifest by
`init.render`; file paths are as the user typed them, relative to the current folder.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from iplosctl import profiles
from iplosctl.errors import ProfileError


@dataclass(frozen=True)
class ServiceUnitAnswer:
    """One unit allowed as the executing unit on services."""

    org_number: str
    name: str


@dataclass(frozen=True)
class CertificatePaths:
    """The seven certificate files of a non-sandbox manifest, relative to the current folder."""

    signing_certificate: str
    signing_key: str
    encryption_certificate: str
    encryption_key: str
    register_signing: str
    register_encryption: str
    trust_anchors: str | None = None

    @classmethod
    def in_folder(cls, folder: str | Path) -> CertificatePaths:
        """The file names `iplosctl sandbox pki` writes and examples/fjordvik/certs uses."""
        base = Path(folder)
        return cls(
            signing_certificate=str(base / "municipality-signing.pem"),
            signing_key=str(base / "municipality-signing.key"),
            encryption_certificate=str(base / "municipality-encryption.pem"),
            encryption_key=str(base / "municipality-encryption.key"),
            register_signing=str(base / "register-signing.pem"),
            register_encryption=str(base / "register-encryption.pem"),
            trust_anchors=str(base / "ca.pem"),
        )

    def paths(self) -> list[str]:
        return [p for p in (getattr(self, f.name) for f in fields(self)) if p is not None]


@dataclass(frozen=True)
class InitAnswers:
    """Everything `init` needs; file paths are relative to the current folder, as typed.

    `endpoint_*`, `username`, `credential` and `certificates` are ignored in a
    sandbox environment (the built-in register needs none of them).
    """

    name: str
    reporting_year: int
    environment: str
    municipality_number: str
    municipality_name: str
    org_number: str
    her_id: int
    service_her_id: int
    epj_system: str
    epj_version: str
    service_units: tuple[ServiceUnitAnswer, ...]
    source_path: str
    source_plugin: str = "xml"
    source_format: str | None = "iplos-export-v1"
    endpoint_url: str | None = None
    namespace: str | None = None
    username: str | None = None
    credential: str | None = None
    certificates: CertificatePaths | None = None
    owner: str | None = None
    test_person_names: tuple[str, ...] = ("Donald Duck",)
    #: `$schema` reference for editors; a path to the installed schema when None
    schema: str | None = None

    @property
    def sandbox(self) -> bool:
        return is_sandbox(self.reporting_year, self.environment)


def is_sandbox(year: int, environment: str) -> bool:
    """Whether `environment` of `year`'s profile is the built-in register (no endpoint)."""
    try:
        env = profiles.load_profile(year).environments.get(environment)
    except ProfileError:
        return environment == "sandbox"
    return env.sandbox if env is not None else environment == "sandbox"
