"""An enterprise-style PKI built with the `openssl` command, like Buypass's chains.

root CA → intermediate CA whose extended key usage is only `emailProtection` (or
absent) → leaves with nonRepudiation + digitalSignature (signing) or keyEncipherment
(encryption). Both CAs keep an `openssl ca` database, so a leaf can be revoked and a
real CRL issued. A web-PKI client policy refuses this chain (the intermediate's EKU
lacks clientAuth); iplosctl must accept it. Also: a loopback HTTP server for CRL
distribution points.
"""

from __future__ import annotations

import http.server
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

LEAVES = {
    "municipality-signing": "signing",
    "municipality-encryption": "encryption",
    "register-signing": "signing",
    "register-encryption": "encryption",
}

_CONFIG = """\
[ca]
default_ca = ca_default
[ca_default]
database = {db}/index.txt
new_certs_dir = {db}
serial = {db}/serial
crlnumber = {db}/crlnumber
default_md = sha256
default_crl_days = 30
policy = policy_any
unique_subject = no
email_in_dn = no
[policy_any]
commonName = supplied
organizationName = optional
countryName = optional
[root_ext]
basicConstraints = critical,CA:true
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[intermediate_ext]
basicConstraints = critical,CA:true,pathlen:0
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
{intermediate_eku}
{intermediate_cdp}
[signing_ext]
basicConstraints = critical,CA:false
keyUsage = critical,nonRepudiation,digitalSignature
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
{leaf_cdp}
{leaf_aia}
[encryption_ext]
basicConstraints = critical,CA:false
keyUsage = critical,keyEncipherment,dataEncipherment
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
{leaf_cdp}
{leaf_aia}
"""


def openssl(*args: str | Path, cwd: Path | None = None) -> bytes:
    proc = subprocess.run(
        ["openssl", *map(str, args)], capture_output=True, cwd=cwd, check=False, timeout=60
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout


@dataclass
class EnterprisePki:
    """Files of one enterprise-style PKI; `revoke` and `crl` drive the intermediate's CRL."""

    directory: Path
    crl_base: str | None

    @property
    def root(self) -> Path:
        return self.directory / "root.pem"

    @property
    def intermediate(self) -> Path:
        return self.directory / "intermediate.pem"

    def certificate(self, stem: str) -> Path:
        return self.directory / f"{stem}.pem"

    def key(self, stem: str) -> Path:
        return self.directory / f"{stem}.key"

    def config(self, ca: str) -> Path:
        return self.directory / f"{ca}.cnf"

    def issue(
        self,
        stem: str,
        role: str,
        *,
        start: str | None = None,
        end: str | None = None,
        days: int = 400,
    ) -> Path:
        """A leaf from the intermediate; `start`/`end` as openssl's YYYYMMDDHHMMSSZ."""
        key, csr = self.key(stem), self.directory / f"{stem}.csr"
        openssl(
            "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
            "-subj", f"/C=NO/O=Enterprise test/CN={stem} (TEST)",
        )  # fmt: skip
        dates = ["-startdate", start] if start else []
        dates += ["-enddate", end] if end else ["-days", str(days)]
        openssl(
            "ca", "-batch", "-notext", "-config", self.config("intermediate"),
            "-cert", self.intermediate, "-keyfile", self.key("intermediate"),
            "-extensions", f"{role}_ext", "-in", csr, "-out", self.certificate(stem), *dates,
        )  # fmt: skip
        return self.certificate(stem)

    def revoke(self, stem: str) -> None:
        openssl(
            "ca", "-config", self.config("intermediate"), "-cert", self.intermediate,
            "-keyfile", self.key("intermediate"), "-revoke", self.certificate(stem),
        )  # fmt: skip

    def crl(self, ca: str = "intermediate", *, der: bool = True) -> bytes:
        """A fresh CRL of `ca` ("root" or "intermediate"), DER as CAs publish it, or PEM."""
        cert = self.root if ca == "root" else self.intermediate
        pem = self.directory / f"{ca}.crl.pem"
        openssl(
            "ca", "-gencrl", "-config", self.config(ca), "-cert", cert, "-keyfile", self.key(ca),
            "-out", pem,
        )  # fmt: skip
        if not der:
            return pem.read_bytes()
        return openssl("crl", "-in", pem, "-outform", "DER")


def build_enterprise_pki(
    directory: Path,
    *,
    crl_base: str | None = None,
    intermediate_eku: str | None = "emailProtection",
    ocsp_url: str | None = None,
) -> EnterprisePki:
    """Root, intermediate (EKU `intermediate_eku`, or none) and the four leaves.

    With `crl_base` (e.g. `http://127.0.0.1:8080`), the intermediate points at
    `{crl_base}/root.crl` and the leaves at `{crl_base}/intermediate.crl`; with
    `ocsp_url`, the leaves name that OCSP responder (authorityInfoAccess).
    """
    directory.mkdir(parents=True, exist_ok=True)
    pki = EnterprisePki(directory, crl_base)
    for ca in ("root", "intermediate"):
        db = directory / f"{ca}-db"
        db.mkdir()
        (db / "index.txt").write_text("")
        (db / "serial").write_text("1000\n" if ca == "root" else "2000\n")
        (db / "crlnumber").write_text("01\n")
        pki.config(ca).write_text(
            _CONFIG.format(
                db=db,
                intermediate_eku=(
                    f"extendedKeyUsage = {intermediate_eku}" if intermediate_eku else ""
                ),
                intermediate_cdp=(
                    f"crlDistributionPoints = URI:{crl_base}/root.crl" if crl_base else ""
                ),
                leaf_cdp=(
                    f"crlDistributionPoints = URI:{crl_base}/intermediate.crl" if crl_base else ""
                ),
                leaf_aia=f"authorityInfoAccess = OCSP;URI:{ocsp_url}" if ocsp_url else "",
            )
        )
    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", pki.key("root"),
        "-out", pki.root, "-subj", "/C=NO/O=Enterprise test/CN=Enterprise Root CA (TEST)",
        "-days", "3650", "-config", pki.config("root"), "-extensions", "root_ext",
    )  # fmt: skip
    csr = directory / "intermediate.csr"
    openssl(
        "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", pki.key("intermediate"),
        "-out", csr, "-subj", "/C=NO/O=Enterprise test/CN=Enterprise Class 3 CA (TEST)",
    )  # fmt: skip
    openssl(
        "ca", "-batch", "-notext", "-config", pki.config("root"), "-cert", pki.root,
        "-keyfile", pki.key("root"), "-extensions", "intermediate_ext", "-days", "1800",
        "-in", csr, "-out", pki.intermediate,
    )  # fmt: skip
    for stem, role in LEAVES.items():
        pki.issue(stem, role)
    return pki


@dataclass
class CrlServer:
    """A loopback HTTP server answering `GET /<name>` from `files`; counts the requests."""

    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    port: int = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextmanager
def crl_server() -> Iterator[CrlServer]:
    state = CrlServer()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # the name http.server calls
            name = self.path.lstrip("/")
            state.requests.append(name)
            body = state.files.get(name)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/pkix-crl")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def ocsp_responder(pki: EnterprisePki, port: int) -> Iterator[None]:
    """`openssl ocsp` answering for the intermediate's database on `port` (OpenSSL 3.0
    binds every interface; the clients here use 127.0.0.1)."""
    args = [
        "openssl", "ocsp", "-index", str(pki.directory / "intermediate-db" / "index.txt"),
        "-port", str(port), "-CA", str(pki.intermediate),
        "-rsigner", str(pki.intermediate), "-rkey", str(pki.key("intermediate")),
        "-ndays", "1",
    ]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # Ready when it says so; a probe connection would hold the single-threaded responder.
        assert proc.stdout is not None
        for line in proc.stdout:
            if "waiting for OCSP client connections" in line:
                break
        assert proc.poll() is None, "openssl ocsp exited"
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=5)
