"""cms_errors: why a key file, a certificate or a CMS message was refused.

One `CmsError` with a stable `Failure` reason, shared by key loading (`key_files`),
certificate checks (`cert_checks`) and CMS itself (`cms`), so that the sandbox register
can choose an AppRec or error-queue code without parsing messages.
"""

from __future__ import annotations

from enum import StrEnum

from iplosctl.errors import PayloadError


class Failure(StrEnum):
    """Why a CMS operation failed; stable values for code and tests."""

    UNREADABLE = "unreadable"
    WRONG_PASSPHRASE = "wrong-passphrase"
    WRONG_FORMAT = "wrong-format"
    KEY_MISMATCH = "key-mismatch"
    MALFORMED = "malformed"
    UNSUPPORTED = "unsupported"
    NOT_FOR_US = "not-for-us"
    WRONG_KEY = "wrong-key"
    BAD_SIGNATURE = "bad-signature"
    UNKNOWN_SIGNER = "unknown-signer"
    UNTRUSTED = "untrusted-chain"
    EXPIRED = "expired"
    NOT_YET_VALID = "not-yet-valid"
    KEY_USAGE = "key-usage"
    REVOKED = "revoked"
    REVOCATION_UNKNOWN = "revocation-unknown"


class CmsError(PayloadError):
    """A PayloadError that also says which `Failure` happened."""

    def __init__(self, reason: Failure, message: str) -> None:
        super().__init__(message)
        self.reason = reason
