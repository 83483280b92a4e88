"""`make demo-edi`: the demo's rehearsal over the EDI channel, on loopback only.

Starts the tests' mail servers (aiosmtpd with STARTTLS + AUTH into Maildirs, dovecot
serving them over IMAPS/STARTTLS, a throw-away CA: tests/mailservers.py), writes a
sandbox manifest with `transport: edi` and the sandbox PKI into a temporary folder,
then runs what a municipality would: validate, plan, apply, the sandbox register
answering from its mailbox (`iplosctl sandbox attach-edi --once`), receipts, status.
Everything is removed afterwards; nothing leaves this machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from iplosctl.sandbox.pki import generate_pki  # noqa: E402
from tests.mailservers import USERS, mail_servers  # noqa: E402


def main() -> int:
    iplosctl = sys.argv[1] if len(sys.argv) > 1 else "iplosctl"
    with tempfile.TemporaryDirectory(prefix="iplosctl-demo-edi-") as tmp, mail_servers() as ms:
        root = Path(tmp)
        (root / "manifests").mkdir()
        (root / "exports").mkdir()
        shutil.copy(REPO / "examples" / "exports" / "demo-2023.xml", root / "exports")
        generate_pki(root / "pki")
        manifest = root / "manifests" / "demo-edi-2023.yaml"
        text = (REPO / "manifests" / "demo-2023.yaml").read_text(encoding="utf-8")
        manifest.write_text(_edi_manifest(text, ms), encoding="utf-8")
        env = dict(
            os.environ,
            IPLOSCTL_STATE_DIR=str(root / "state"),
            IPLOSCTL_SECRET_EDI_DEMO=USERS["kommune"],
            IPLOSCTL_SECRET_KPR_MAIL=USERS["kpr"],
        )
        register = [
            "sandbox", "attach-edi", "--once",
            "--smtp", f"smtp://127.0.0.1:{ms.smtp_port}",
            "--imap", f"imap://127.0.0.1:{ms.imap_port}",
            "--address", "kpr@edi.test", "--username", "kpr", "--credential", "kpr-mail",
            "--pki", str(root / "pki"), "--ca-file", str(ms.tls.ca_file),
            "--state", str(root / "register"),
        ]  # fmt: skip
        for title, args, ok in (
            ("validate", ["validate", str(manifest)], (0,)),
            ("plan", ["plan", str(manifest), "--detailed-exitcode"], (0, 2)),
            ("apply (S/MIME over SMTP)", ["apply", str(manifest), "--auto-approve"], (0,)),
            ("the sandbox register reads its mailbox and answers by mail", register, (0,)),
            ("receipts (IMAP)", ["receipts", str(manifest)], (0,)),
            ("status", ["status", str(manifest)], (0,)),
        ):
            print(f"\n\033[1m==> iplosctl {title}\033[0m", flush=True)
            code = subprocess.run([iplosctl, *args], env=env, check=False).returncode
            if code not in ok:
                print(f"demo-edi: iplosctl {args[0]} exited {code}", file=sys.stderr)
                return 1
    return 0


def _edi_manifest(text: str, ms: object) -> str:
    """The demo manifest, moved to the temp folder, with an edi endpoint and certificates."""
    lines = []
    for line in text.splitlines():
        if line.strip().startswith("path:") and "demo-2023.xml" in line:
            line = line.split("path:")[0] + "path: ../exports/demo-2023.xml"
        lines.append(line)
    body = "\n".join(lines).replace("examples/exports/demo-2023.xml", "../exports/demo-2023.xml")
    return (
        body.rstrip()
        + f"""
  endpoint:
    transport: edi
    address: kommune@edi.test
    registerAddress: kpr@edi.test
    smtp: smtp://127.0.0.1:{ms.smtp_port}
    imap: imaps://127.0.0.1:{ms.imaps_port}
    username: kommune
    credential: edi-demo
    tls: {{caFile: {ms.tls.ca_file}}}
  certificates:
    signing: {{certificate: ../pki/municipality-signing.pem, key: ../pki/municipality-signing.key}}
    encryption:
      certificate: ../pki/municipality-encryption.pem
      key: ../pki/municipality-encryption.key
    register:
      signing: ../pki/register-signing.pem
      encryption: ../pki/register-encryption.pem
      trustAnchors: ../pki/ca.pem
"""
    )


if __name__ == "__main__":
    sys.exit(main())
