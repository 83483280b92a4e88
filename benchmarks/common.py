"""Helpers shared by the benchmarks: where generated data lives, cached exports, manifests,
and measuring a child process.

Generated exports are large (about 0.9 MB per 1,000 recipients) and deterministic, so
they are cached outside the repository and reused across runs; the cache key includes a
digest of the generator's source so an edit to the generator never serves a stale file.
MB means 10^6 bytes everywhere in the benchmarks' output.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import iplosctl
from iplosctl.sandbox.generate import DEMO_SERVICE_UNITS, generate_export

REPO = Path(__file__).resolve().parent.parent
# The benchmarks reuse tests/broker.py, the one description of the test broker.
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))
MB = 1_000_000
#: sources whose change alters a generated export (the cache key hashes them)
_GENERATOR_SOURCES = ("sandbox/generate.py", "payload/export_writer.py", "records.py")


def cache_root() -> Path:
    """`$XDG_CACHE_HOME/iplosctl-bench` (or ~/.cache/…): generated data stays out of git."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    root = Path(base) / "iplosctl-bench"
    root.mkdir(parents=True, exist_ok=True)
    return root


def _generator_digest() -> str:
    package = Path(iplosctl.__file__).resolve().parent
    h = hashlib.sha256()
    for rel in _GENERATOR_SOURCES:
        path = package / rel
        h.update(rel.encode())
        h.update(path.read_bytes() if path.is_file() else b"-")
    return h.hexdigest()[:12]


def cached_export(recipients: int, seed: int, *, root: Path | None = None) -> Path:
    """A synthetic export v1 for municipality 9999 and the demo units, generated once.

    The file name carries recipients, seed and the generator digest, so reruns reuse it
    and a changed generator produces a new file instead of a stale hit.
    """
    directory = (root or cache_root()) / "exports"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"export-{recipients}-s{seed}-{_generator_digest()}.xml"
    if not path.is_file():
        started = time.perf_counter()
        generate_export(path, recipients=recipients, seed=seed, service_units=DEMO_SERVICE_UNITS)
        print(
            f"generated {path} ({path.stat().st_size / MB:.1f} MB) "
            f"in {time.perf_counter() - started:.1f} s",
            flush=True,
        )
    return path


def service_units_yaml() -> str:
    """The demo units as manifests/demo-2023.yaml declares them (the generator uses these)."""
    names = ("Demo hjemmetjeneste", "Demo sykehjem", "Demo bofellesskap")
    return "\n".join(
        f'    - {{orgNumber: "{org}", name: {name}}}'
        for org, name in zip(DEMO_SERVICE_UNITS, names, strict=True)
    )


def manifest_yaml(
    *, name: str, export: Path, environment: str, extra: str = "", size_limit: int | None = None
) -> str:
    """A manifest modelled on manifests/demo-2023.yaml, pointing at an absolute export path.

    `extra` is appended to `spec` (already indented by two spaces), e.g. endpoint and
    certificates for the apply benchmark.
    """
    limit = f"  messageSizeLimitBytes: {size_limit}\n" if size_limit else ""
    return f"""apiVersion: iplosctl/v1
kind: Submission
metadata:
  name: {name}
  description: benchmark submission (synthetic data)
spec:
  reportingYear: 2023
  environment: {environment}
  municipality: {{number: "9999", name: Demo kommune, orgNumber: "310000019"}}
  sender: {{herId: 900100, serviceHerId: 900101}}
  epj: {{system: DemoEPJ, version: 4.2.0}}
  epjMinimumVersions: {{DemoEPJ: 4.0.0}}
  serviceUnits:
{service_units_yaml()}
  source: {{plugin: xml, path: {export}, format: iplos-export-v1}}
  testPersons: {{names: ["Donald Duck", "Test Testesen"]}}
{limit}{extra}"""


@dataclass(frozen=True)
class Measured:
    """One child process: wall time, its own peak RSS (not any other child's), output."""

    seconds: float
    peak_rss_mb: float
    returncode: int
    stdout: str
    stderr: str
    #: user + system CPU of the child and the children it reaped (workers of -j)
    cpu_seconds: float = 0.0


def run_measured(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Measured:
    """Run `cmd` and reap it with os.wait4, so the peak RSS is this child's alone.

    getrusage(RUSAGE_CHILDREN) would report the maximum over *all* children so far (an
    earlier xmllint would mask the plan's figure). Output goes to temporary files, not
    pipes, so a chatty child can never block on a full pipe while we wait.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [str(c) for c in cmd],
            stdout=out,
            stderr=err,
            env=dict(env) if env is not None else None,
            cwd=cwd,
        )
        _pid, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped: keep Popen consistent
        out.seek(0)
        err.seek(0)
        return Measured(
            seconds=seconds,
            peak_rss_mb=usage.ru_maxrss * 1024 / MB,  # Linux reports KiB
            returncode=proc.returncode,
            stdout=out.read().decode("utf-8", "replace"),
            stderr=err.read().decode("utf-8", "replace"),
            cpu_seconds=usage.ru_utime + usage.ru_stime,
        )
