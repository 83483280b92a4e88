"""One exception family for everything a user can cause or fix.

Each class carries the exit code the CLI returns for it (DESIGN.md §3) and a
message a municipality's IT person can act on. Messages never contain a
person's identifier, a name or a secret: they are printed, logged and pasted
into pull requests.
"""

from __future__ import annotations

from dataclasses import dataclass

from iplosctl.privacy import scrub

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CHANGES = 2
EXIT_INTERNAL = 3
EXIT_USAGE = 64
#: sysexits' EX_TEMPFAIL ("try again later"): `receipts --wait` / `apply --wait` ran out of
#: time with receipts still outstanding. Not 1, so that automation can tell "nothing is
#: wrong yet, run again later" from "rejected" or "broken"; from sysexits.h like 64.
EXIT_WAITING = 75
#: Ctrl-C (128 + SIGINT), as shells report it
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class Location:
    """Where in a file a problem is: 1-based line and column, or 0 when unknown."""

    file: str
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        if self.line:
            return f"{self.file}:{self.line}:{self.column or 1}"
        return self.file


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one input, printed as `FILE:LINE:COL: path: message`."""

    location: Location
    message: str
    path: str = ""

    def __str__(self) -> str:
        where = f"{self.location}: "
        return f"{where}{self.path}: {self.message}" if self.path else f"{where}{self.message}"


class IplosctlError(Exception):
    """Base of every error the user can act on; the CLI prints it as one line."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def lines(self) -> list[str]:
        """The lines the CLI prints, one per problem."""
        return [self.message]


class UsageError(IplosctlError):
    """The command line itself is wrong (unknown option, bad combination)."""

    exit_code = EXIT_USAGE


class InputError(IplosctlError):
    """One or more problems in input files, each with its own location."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(str(p) for p in self.problems))

    def lines(self) -> list[str]:
        return [str(p) for p in self.problems]


class ManifestError(InputError):
    """A manifest failed to parse, to match the schema or a semantic check."""


class ProfileError(IplosctlError):
    """A reporting-year profile is missing or broken (a packaging bug or a bad extension)."""


class PluginError(IplosctlError):
    """A plugin is missing, duplicated or failed to load."""


class SecretError(IplosctlError):
    """A secret could not be resolved; the message says how to provide it."""


class SourceError(InputError):
    """An export could not be read: each problem names the file and line or record index."""


class TransportError(IplosctlError):
    """Sending or receiving failed; the message names the broker condition, never a password.

    The message often quotes the broker or the peer (a condition's description, a queue
    name), which is text from outside: it goes through the one scrubber here, so no
    transport can print or log a person id it was sent (DESIGN.md §5).
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(scrub(message))
        #: worth retrying with backoff (connection lost, broker restarting)
        self.transient = transient


class WorkerLostError(IplosctlError, RuntimeError):
    """A `-j` worker process died (killed, often for lack of memory): not the input's fault,
    and not a bug to report; running the command again carries on (apply recovers what its
    journal holds)."""


class PayloadError(IplosctlError):
    """A message could not be built, signed, encrypted, decrypted or verified."""
