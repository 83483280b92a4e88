"""The zero-setup register: `apply` and `receipts` in the `sandbox` environment start it here.

`embedded_register` generates a test PKI once under `STATE/pki`, starts the peer on an
ephemeral loopback port with a `SandboxRegister` for the manifest's register HER-id, and
hands back what `iplosctl.endpoint.connect` needs: transport settings for the real AMQP
transport and the municipality's keys. `connect` finds it as the `sandbox` entry point of
the `iplosctl.registers` group (pyproject.toml), never by importing this package. Queues
and the register's answered-message list live under the same state folder, so a receipt
produced while `apply` runs is still there when `receipts` runs later in another process.

`IPLOSCTL_SANDBOX_BEHAVIOUR` makes the embedded register misbehave on purpose, e.g.
`IPLOSCTL_SANDBOX_BEHAVIOUR=reject-all` or `answer-twice,delay=5`; the words are those of
`iplosctl sandbox serve --behaviour` (`register.parse_behaviour`): normal, reject-all,
never-answer, answer-twice, error-queue, delay=SECONDS.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from iplosctl.endpoint import Addressing, Keys, OwnKeys, RegisterFactory
from iplosctl.errors import IplosctlError, PayloadError, UsageError
from iplosctl.payload.cms import (
    check_encryption_certificate,
    check_signing_certificate,
    load_certificate,
    load_private_key,
)
from iplosctl.plugins import TransportSettings
from iplosctl.private_files import private_dir
from iplosctl.sandbox.behaviour import Behaviour, parse_behaviour
from iplosctl.sandbox.peer import SandboxPeer
from iplosctl.sandbox.pki import LEAVES, PkiFiles, generate_pki
from iplosctl.sandbox.register import SandboxRegister

log = logging.getLogger(__name__)

BEHAVIOUR_ENV = "IPLOSCTL_SANDBOX_BEHAVIOUR"
#: a PKI that expires sooner than this is made anew rather than failing mid-rehearsal
RENEW_BEFORE = dt.timedelta(days=7)


@dataclass
class EmbeddedRegister:
    """A running embedded register: where to connect and with which keys."""

    transport_settings: TransportSettings
    pki: PkiFiles
    register: SandboxRegister
    peer: SandboxPeer
    #: the manifest's own key pairs, when it names certificates; else the test PKI's
    own: OwnKeys | None = None

    def municipality_keys(self) -> Keys:
        """The municipality's keys (its own, or the test PKI's), trusting the test CA."""
        keys = municipality_keys(self.pki)
        if self.own is None:
            return keys
        return dataclasses.replace(
            keys,
            signing_cert=self.own.signing_cert,
            signing_key=self.own.signing_key,
            encryption_cert=self.own.encryption_cert,
            encryption_key=self.own.encryption_key,
        )


def municipality_keys(pki: PkiFiles) -> Keys:
    """Keys for a municipality talking to the sandbox register of `pki`."""
    return Keys(
        signing_cert=load_certificate(pki.certificate("municipality-signing")),
        signing_key=load_private_key(pki.key("municipality-signing"), None),
        encryption_cert=load_certificate(pki.certificate("municipality-encryption")),
        encryption_key=load_private_key(pki.key("municipality-encryption"), None),
        register_signing_cert=load_certificate(pki.certificate("register-signing")),
        register_encryption_cert=load_certificate(pki.certificate("register-encryption")),
        trust_anchors=(load_certificate(pki.ca),),
    )


def behaviour_from_env() -> Behaviour:
    """`IPLOSCTL_SANDBOX_BEHAVIOUR`, or normal behaviour when unset."""
    try:
        return parse_behaviour(os.environ.get(BEHAVIOUR_ENV))
    except UsageError as exc:
        raise UsageError(f"{BEHAVIOUR_ENV}: {exc.message}") from None


def ensure_pki(directory: Path, *, now: dt.datetime | None = None) -> PkiFiles:
    """The test PKI in `directory`, generated the first time and when unusable or expiring."""
    now = now or dt.datetime.now(dt.UTC)
    files = PkiFiles(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    # Two processes (apply -j, or apply beside `sandbox serve`) must not both generate:
    # the second would replace the CA the first one's register already trusts.
    with FileLock(str(directory) + ".lock"):
        problem = _pki_problem(files, now)
        if problem is None:
            return files
        log.info("generating the sandbox test PKI in %s (%s)", directory, problem)
        return generate_pki(directory, now=now)


def _pki_problem(files: PkiFiles, now: dt.datetime) -> str | None:
    """Why the PKI in `files` cannot be used, or None when it can."""
    if not files.ca.is_file():
        return "none yet"
    try:
        ca = load_certificate(files.ca)
        for stem, (_cn, role) in LEAVES.items():
            cert = load_certificate(files.certificate(stem))
            load_private_key(files.key(stem), None)
            check = check_signing_certificate if role == "signing" else check_encryption_certificate
            check(cert, now + RENEW_BEFORE)
            if cert.issuer != ca.subject:
                return f"{stem} was not issued by the CA beside it"
    except PayloadError as exc:
        return exc.message
    return None


def prepare_state_dir(state_dir: Path) -> Path:
    """Create the sandbox state folder, marked git-ignored: certificates and queues never
    belong in a repository, whatever the repository's own .gitignore says."""
    state_dir = Path(state_dir)
    try:
        private_dir(state_dir)  # 0700, and so is `.iplosctl/` above it when this creates it
        ignore = state_dir / ".gitignore"
        if not ignore.exists():
            ignore.write_text("# written by iplosctl: local sandbox state\n*\n", encoding="utf-8")
    except OSError as exc:
        raise IplosctlError(
            f"cannot create the sandbox state folder {state_dir}: {exc.strerror or exc}; "
            "set IPLOSCTL_STATE_DIR to a writable folder"
        ) from None
    return state_dir


@contextlib.contextmanager
def embedded_register(
    state_dir: Path, address: Addressing, *, own: OwnKeys | None = None
) -> Iterator[EmbeddedRegister]:
    """Run the sandbox register on an ephemeral loopback port for the `with` block.

    With `own` (the manifest's certificates), the register trusts exactly that signing
    certificate (pinned: it is its own trust anchor, whoever issued it) and encrypts its
    receipts to that encryption certificate; otherwise it trusts the test PKI's municipality.
    """
    state_dir = prepare_state_dir(state_dir)
    behaviour = behaviour_from_env()
    pki = ensure_pki(state_dir / "pki")
    register = SandboxRegister.from_pki(
        pki,
        her_id=address.receiver_her_id,
        name=address.receiver_name,
        behaviour=behaviour,
        state_dir=state_dir,
        municipality=(own.signing_cert, own.encryption_cert) if own is not None else None,
    )
    if behaviour != Behaviour():
        log.warning("sandbox register behaviour: %s", behaviour.describe())
    peer = SandboxPeer(state_dir, register).start()
    try:
        settings = TransportSettings(url=peer.url, namespace=None, username=None)
        yield EmbeddedRegister(settings, pki, register, peer, own)
    finally:
        peer.stop()


#: mypy holds the entry point to the contract `endpoint.connect` calls it by
_REGISTER_FACTORY: RegisterFactory = embedded_register
