"""The `iplosctl sandbox serve|attach|attach-edi` commands, minus their option parsing.

The three commands start the same `SandboxRegister` three ways (an embedded AMQP peer,
a consumer on a real broker, an EDI mailbox), and each used to repeat the defaults:
the register's HER-id from the newest profile, the behaviour from `--behaviour` or
`IPLOSCTL_SANDBOX_BEHAVIOUR`, a git-ignored state folder, ^C as a normal stop. They live
here once, so each CLI command is one call; the CLI passes its two printers (`out` for
stdout, `note` for stderr) and keeps nothing else.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from iplosctl import endpoint, profiles
from iplosctl.sandbox.attach import attach
from iplosctl.sandbox.behaviour import Behaviour, parse_behaviour
from iplosctl.sandbox.edi import RegisterMailbox, answer_mailbox
from iplosctl.sandbox.embedded import behaviour_from_env, ensure_pki, prepare_state_dir
from iplosctl.sandbox.peer import SandboxPeer
from iplosctl.sandbox.pki import PkiFiles
from iplosctl.sandbox.register import Answer, SandboxRegister

Print = Callable[[str], None]


@dataclass(frozen=True)
class Printers:
    """Where a command writes: `out` what a script reads (stdout), `note` the rest."""

    out: Print
    note: Print

    def answered(self, message_id: str | None, answer: Answer) -> None:
        """One line per message the register answered."""
        self.note(f"{message_id}: {answer.outcome}")


def sandbox_her_id(her_id: int | None = None) -> int:
    """`her_id`, else the sandbox register's HER-id in the newest reporting-year profile."""
    if her_id is not None:
        return her_id
    newest = profiles.load_profile(profiles.available_years()[-1])
    return next(e.receiver_her_id for e in newest.environments.values() if e.sandbox)


def chosen_behaviour(text: str | None) -> Behaviour:
    """`--behaviour` when given, else `IPLOSCTL_SANDBOX_BEHAVIOUR`, else normal."""
    return parse_behaviour(text) if text is not None else behaviour_from_env()


def serve(
    printers: Printers,
    *,
    port: int = 0,
    state: Path | None = None,
    her_id: int | None = None,
    behaviour: str | None = None,
    schema_dir: Path | None = None,
) -> None:
    """`sandbox serve`: the register as an AMQP 1.0 peer on 127.0.0.1 until ^C; the first
    line on stdout is its URL, so a script can read where to connect."""
    folder = prepare_state_dir(state or endpoint.state_dir() / "sandbox")
    her_id = sandbox_her_id(her_id)
    chosen = chosen_behaviour(behaviour)
    pki = ensure_pki(folder / "pki")
    register = SandboxRegister.from_pki(
        pki, her_id=her_id, behaviour=chosen, schema_dir=schema_dir, state_dir=folder
    )

    def ready(bound: int) -> None:
        printers.out(f"amqp://127.0.0.1:{bound}")
        printers.note(
            f"sandbox register {her_id} reads queue {register.queue} on amqp://127.0.0.1:{bound} "
            f"(behaviour {chosen.describe()}; certificates in {pki.directory}); ^C stops it"
        )

    peer = SandboxPeer(folder, register, port=port, on_answer=printers.answered)
    try:
        peer.serve(on_ready=ready)
    except KeyboardInterrupt:
        printers.note("stopped")


def attach_to_broker(
    printers: Printers,
    url: str,
    *,
    pki: Path,
    her_id: int,
    username: str | None = None,
    password: str | None = None,
    namespace: str | None = None,
    behaviour: str | None = None,
    stop_after: float | None = None,
    schema_dir: Path | None = None,
    state: Path | None = None,
) -> None:
    """`sandbox attach`: answer from `{her_id}_async` on a real broker until ^C or
    `stop_after` seconds, then say how many messages were answered."""
    chosen = chosen_behaviour(behaviour)
    printers.note(f"sandbox register {her_id} reads {her_id}_async at {url} ({chosen.describe()})")
    try:
        stats = attach(
            url,
            username=username,
            password=password,
            pki_dir=pki,
            register_her_id=her_id,
            behaviour=chosen,
            namespace=namespace,
            stop_after=stop_after,
            schema_dir=schema_dir,
            state_dir=state,
            on_answer=printers.answered,
        )
    except KeyboardInterrupt:
        printers.note("stopped")
        return
    printers.note(f"answered {stats.handled} message(s), {stats.duplicates} duplicate(s)")


def attach_to_mailbox(
    printers: Printers,
    mailbox: RegisterMailbox,
    *,
    pki: Path,
    her_id: int | None = None,
    behaviour: str | None = None,
    schema_dir: Path | None = None,
    state: Path | None = None,
    once: bool = False,
    poll: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """`sandbox attach-edi`: read the register's mailbox and answer by mail (issue 14),
    every `poll` seconds until ^C, or once."""
    her_id = sandbox_her_id(her_id)
    chosen = chosen_behaviour(behaviour)
    folder = prepare_state_dir(state or endpoint.state_dir() / "sandbox-edi")
    register = SandboxRegister.from_pki(
        PkiFiles(pki), her_id=her_id, behaviour=chosen, schema_dir=schema_dir, state_dir=folder
    )
    printers.note(
        f"sandbox register {her_id} reads the mailbox of {mailbox.address} at {mailbox.imap}"
    )
    try:
        while True:
            for line in answer_mailbox(register, mailbox):
                printers.note(line)
            if once:
                break
            sleep(poll)
    except KeyboardInterrupt:
        printers.note("stopped")
