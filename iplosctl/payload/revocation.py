"""Is a certificate revoked? CRL files first, then the CRL distribution points, then OCSP.

NHN's reference client checks revocation for the whole chain online. Municipal servers
often cannot reach the CAs' CRL and OCSP addresses, so the manifest may name CRL files
(`certificates.crls`) fetched elsewhere; when nothing answers, the status is `unknown`,
which callers refuse unless the operator said `--offline-revocation` out loud.

Parsing and signature checks are `cryptography.x509` (CRLs and the `ocsp` module), never
hand-written ASN.1. Network access is urllib with a short timeout; every network or
parsing failure becomes a reason string in the result, never an exception.
"""

from __future__ import annotations

import datetime as dt
import itertools
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from iplosctl.errors import IplosctlError

#: seconds per CRL or OCSP request: a plan must not hang on an unreachable CA
FETCH_TIMEOUT = 5.0
#: CRLs larger than this are refused (Buypass's largest are a few MB)
MAX_CRL_BYTES = 32 * 1024 * 1024


class Status(StrEnum):
    """Stable values for the plan's JSON and for tests."""

    GOOD = "good"
    REVOKED = "revoked"
    #: sources exist (distribution point, OCSP, CRL file) but none gave an answer
    UNKNOWN = "unknown"
    #: the certificate names no distribution point or OCSP responder, and no CRL file covers it
    UNPUBLISHED = "unpublished"
    #: not checked: `--offline-revocation`, or the sandbox
    SKIPPED = "skipped"


_WORST = [Status.GOOD, Status.SKIPPED, Status.UNPUBLISHED, Status.UNKNOWN, Status.REVOKED]


@dataclass(frozen=True)
class Result:
    status: Status
    #: where the answer came from or why there is none; names files and URLs, no personal data
    detail: str

    def worse(self, other: Result) -> Result:
        return other if _WORST.index(other.status) > _WORST.index(self.status) else self


class CrlFileError(IplosctlError):
    """A CRL file the manifest names cannot be read."""


def load_crl_files(paths: Sequence[Path]) -> list[tuple[Path, x509.CertificateRevocationList]]:
    """Each file's CRL (PEM or DER); a file that is no CRL is the manifest's error."""
    out = []
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CrlFileError(f"cannot read CRL file {path}: {exc.strerror}") from None
        crl = _parse_crl(data)
        if crl is None:
            raise CrlFileError(
                f"{path} is not a CRL in PEM or DER format; download the CA's CRL again"
            )
        out.append((path, crl))
    return out


def _parse_crl(data: bytes) -> x509.CertificateRevocationList | None:
    try:
        if b"-----BEGIN X509 CRL-----" in data:
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError:
        return None


def _get(url: str, *, body: bytes | None = None, timeout: float) -> bytes:
    """GET (or POST `body` as an OCSP request); raises OSError/ValueError on any failure."""
    headers = {"User-Agent": "iplosctl revocation check"}
    if body is not None:
        headers["Content-Type"] = "application/ocsp-request"
    request = urllib.request.Request(url, data=body, headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        data: bytes = response.read(MAX_CRL_BYTES + 1)
    if len(data) > MAX_CRL_BYTES:
        raise ValueError(f"answer over {MAX_CRL_BYTES:,} bytes")
    return data


def _fetch_error(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)[:120]
    return (str(exc) or type(exc).__name__)[:120]


def _http_uris(names: Sequence[x509.GeneralName] | None) -> list[str]:
    return [
        n.value
        for n in names or ()
        if isinstance(n, x509.UniformResourceIdentifier) and n.value.lower().startswith("http")
    ]


def crl_urls(cert: x509.Certificate) -> list[str]:
    try:
        points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return []
    return [u for p in points for u in _http_uris(p.full_name)]


def ocsp_urls(cert: x509.Certificate) -> list[str]:
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return []
    return _http_uris(
        [d.access_location for d in aia if d.access_method == AuthorityInformationAccessOID.OCSP]
    )


def _verify_signed(
    issuer: x509.Certificate, signature: bytes, data: bytes, algo: hashes.HashAlgorithm | None
) -> bool:
    key = issuer.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey) and algo is not None:
            key.verify(signature, data, padding.PKCS1v15(), algo)
        elif isinstance(key, ec.EllipticCurvePublicKey) and algo is not None:
            key.verify(signature, data, ec.ECDSA(algo))
        else:
            return False
    except (InvalidSignature, UnsupportedAlgorithm, ValueError):
        return False
    return True


#: fetched CRLs (or why not) by URL, shared by every Checker of this process: fifty
#: manifests planned at once fetch their CA's CRL once. Entries expire after
#: `CACHE_SECONDS`, so `receipts --wait 1h` sees a CA's next CRL.
_FETCHED: dict[str, tuple[float, x509.CertificateRevocationList | str]] = {}
CACHE_SECONDS = 600.0


@dataclass
class Checker:
    """Revocation answers; fetched CRLs are shared per URL within the process (`_FETCHED`).

    `online=False` consults the CRL files only (no network at all).
    """

    crl_files: Sequence[tuple[Path, x509.CertificateRevocationList]] = ()
    online: bool = True
    timeout: float = FETCH_TIMEOUT
    fetch: Callable[..., bytes] = _get
    cache: dict[str, tuple[float, x509.CertificateRevocationList | str]] = field(
        default_factory=lambda: _FETCHED
    )
    clock: Callable[[], float] = time.monotonic

    def check_chain(self, chain: Sequence[x509.Certificate], now: dt.datetime) -> Result:
        """The worst answer over every certificate of `chain` (leaf first) but its anchor."""
        result = Result(Status.GOOD, "no certificate to check")
        details = []
        for index, (cert, issuer) in enumerate(itertools.pairwise(chain)):
            one = self.check(cert, issuer, now)
            if index and one.status is not Status.GOOD:  # say which CA, not the leaf
                one = Result(one.status, f"its CA {_name(cert)}: {one.detail}")
            details.append(one)
            result = result.worse(one)
        if result.status is Status.GOOD and details:
            return Result(Status.GOOD, "; ".join(dict.fromkeys(d.detail for d in details)))
        return result

    def check(self, cert: x509.Certificate, issuer: x509.Certificate, now: dt.datetime) -> Result:
        """One certificate against CRL files, then distribution points, then OCSP."""
        problems: list[str] = []
        for path, crl in self.crl_files:
            if crl.issuer != cert.issuer:
                continue
            answer = self._from_crl(crl, cert, issuer, now, f"CRL file {path.name}")
            if isinstance(answer, Result):
                return answer
            problems.append(answer)
        urls, responders = crl_urls(cert), ocsp_urls(cert)
        if self.online:
            for url in urls:
                crl_or_error = self._fetched_crl(url)
                if isinstance(crl_or_error, str):
                    problems.append(f"{url}: {crl_or_error}")
                    continue
                answer = self._from_crl(crl_or_error, cert, issuer, now, f"CRL {url}")
                if isinstance(answer, Result):
                    return answer
                problems.append(answer)
            for url in responders:
                answer = self._from_ocsp(url, cert, issuer, now)
                if isinstance(answer, Result):
                    return answer
                problems.append(answer)
        elif urls or responders:
            problems.append("network revocation checks are off")
        if not problems:
            return Result(
                Status.UNPUBLISHED,
                "no CRL distribution point or OCSP responder in the certificate, and no CRL "
                "file of its issuer configured",
            )
        return Result(Status.UNKNOWN, "; ".join(problems))

    def _fetched_crl(self, url: str) -> x509.CertificateRevocationList | str:
        cached = self.cache.get(url)
        if cached is not None and self.clock() - cached[0] < CACHE_SECONDS:
            return cached[1]
        answer: x509.CertificateRevocationList | str
        try:
            crl = _parse_crl(self.fetch(url, timeout=self.timeout))
            answer = crl if crl is not None else "not a CRL"
        except (OSError, ValueError) as exc:  # URLError, timeouts, HTTP errors
            answer = _fetch_error(exc)
        self.cache[url] = (self.clock(), answer)
        return answer

    @staticmethod
    def _from_crl(
        crl: x509.CertificateRevocationList,
        cert: x509.Certificate,
        issuer: x509.Certificate,
        now: dt.datetime,
        source: str,
    ) -> Result | str:
        """A Result, or why this CRL cannot answer (wrong signer, out of date)."""
        if not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
            return f"{source} is not signed by {_name(issuer)}"
        next_update = crl.next_update_utc
        if next_update is not None and now > next_update:
            return f"{source} is out of date (next update was {next_update:%Y-%m-%d})"
        if now < crl.last_update_utc - dt.timedelta(minutes=5):
            return f"{source} is not valid yet (this computer's clock?)"
        entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
        if entry is not None:
            return Result(
                Status.REVOKED,
                f"{_name(cert)} was revoked on {entry.revocation_date_utc:%Y-%m-%d} ({source})",
            )
        return Result(Status.GOOD, f"not revoked ({source})")

    def _from_ocsp(
        self, url: str, cert: x509.Certificate, issuer: x509.Certificate, now: dt.datetime
    ) -> Result | str:
        request = (
            ocsp.OCSPRequestBuilder()
            .add_certificate(cert, issuer, hashes.SHA1())  # the CertID hash every responder knows
            .build()
            .public_bytes(serialization.Encoding.DER)
        )
        try:
            response = ocsp.load_der_ocsp_response(
                self.fetch(url, body=request, timeout=self.timeout)
            )
        except (OSError, ValueError) as exc:
            return f"OCSP {url}: {_fetch_error(exc)}"
        if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
            return f"OCSP {url}: {response.response_status.name.lower()}"
        if not _ocsp_signed_for(response, issuer):
            return f"OCSP {url}: answer not signed by {_name(issuer)} or its OCSP responder"
        for single in response.responses:
            if single.serial_number != cert.serial_number:
                continue
            if single.next_update_utc is not None and now > single.next_update_utc:
                return f"OCSP {url}: answer out of date"
            if single.certificate_status == ocsp.OCSPCertStatus.REVOKED:
                when = single.revocation_time_utc
                day = f" on {when:%Y-%m-%d}" if when else ""
                return Result(Status.REVOKED, f"{_name(cert)} was revoked{day} (OCSP {url})")
            if single.certificate_status == ocsp.OCSPCertStatus.GOOD:
                return Result(Status.GOOD, f"not revoked (OCSP {url})")
            return f"OCSP {url}: status unknown to the responder"
        return f"OCSP {url}: no answer for this certificate"


def _ocsp_signed_for(response: ocsp.OCSPResponse, issuer: x509.Certificate) -> bool:
    """Signed by the issuer itself, or by a responder certificate it issued for OCSP signing."""
    signers = [issuer]
    for delegate in response.certificates:
        if delegate.issuer != issuer.subject:
            continue
        if not _verify_signed(
            issuer,
            delegate.signature,
            delegate.tbs_certificate_bytes,
            delegate.signature_hash_algorithm,
        ):
            continue
        try:
            eku = delegate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            continue
        if ExtendedKeyUsageOID.OCSP_SIGNING in eku:
            signers.append(delegate)
    return any(
        _verify_signed(
            s, response.signature, response.tbs_response_bytes, response.signature_hash_algorithm
        )
        for s in signers
    )


def _name(cert: x509.Certificate) -> str:
    # local import: cms imports this module
    from iplosctl.payload.cms import describe

    return describe(cert)
