"""Two processes that start the embedded sandbox at once share one test PKI.

`apply -j` found this: both generated a CA, the second replaced the first's, and the
register then refused one municipality's certificates.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from iplosctl.sandbox.embedded import ensure_pki
from iplosctl.sandbox.pki import PkiFiles


def _ca_of(directory: str) -> bytes:
    files = ensure_pki(Path(directory))
    return files.ca.read_bytes()


def test_concurrent_ensure_pki_generates_one_ca(tmp_path: Path) -> None:
    directory = str(tmp_path / "state" / "pki")
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        cas = pool.map(_ca_of, [directory] * 4)
    assert len(set(cas)) == 1
    assert PkiFiles(Path(directory)).ca.read_bytes() == cas[0]  # and it is the one kept
