"""How `iplosctl plan` scales with the export, against xmllint validating the same file.

Issue 15's target for 100,000 recipients: plan, with the per-record path compiled by
mypyc (setup.py), at most 2.5 times as slow as `xmllint --noout --schema` on the same
export, and a peak RSS of at most 300 MB whatever the export's size (plan must stream).
xmllint is the yardstick because it does the minimum any plan must do (parse and
schema-check every byte) in C. Beside each run of the installed build, the same plan runs
with the per-record path interpreted (`python -m iplosctl.compiled`, which imports the
`.py` files instead of the `.so`), so one run prints both figures under the same load.

The plan runs as a subprocess, exactly as a municipality runs it, with a fresh
XDG_CACHE_HOME so its digest cache is cold; a second run in the same cache shows the
cache hit. The manifest is the demo's (municipality 9999, sandbox, so deadlines do not
block) with a raised message size limit, so large exports plan as `submit` rather than
`blocked`: the work is the same, and exit code 0 then means success.

    .venv/bin/python benchmarks/plan_scale.py --recipients 100000 [--seed 1]

It also times the floor under any plan built on lxml: the xml source's own streaming
parse and XSD check, in a fresh Python, reading no field (`lxml_floor_seconds`, context
for the ratio, not part of it).

With `--shapes` (default `vendor-a,vendor-b`), the same recipients are also written in
the test suite's vendor shapes (tests/shapes.py) and planned through their profiles
(tests/data/formats): vendor-a is the converter-heavy profile (dd.mm.yyyy dates, decimal
commas, J/N, a code map, trimming), vendor-b the linked layout (services and assessments
as shuffled sibling lists joined by key: two streaming passes). Issue 11's target: each
within 1.3 times export v1's plan time, peak RSS at most 300 MB. The JSON line gives each
shape's time, ratio to v1 and peak RSS, and checks its payload digest equals v1's.

Each command runs `--repeat` times (default 3; xmllint's time varies by a factor of up to
two between runs here) and the JSON reports the fastest run and the highest peak RSS.
The last line printed is one JSON object; earlier lines are context. Times are printed,
never asserted.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common import MB, REPO, Measured, cache_root, cached_export, manifest_yaml, run_measured

XSD = REPO / "iplosctl" / "formats" / "iplos-export-v1.xsd"


#: a run with its CPU time (user + system) beside the wall time: on this shared 2-core
#: machine other jobs stretch wall times by up to three times within minutes; the CPU a
#: run used varies far less, so ratios are given both ways. `Measured` carries it now.
Timed = Measured


def run_timed(cmd: Sequence[str | os.PathLike[str]], **kwargs: Any) -> Timed:
    """`run_measured` (one way to time a child; it reaps it and reads its CPU time)."""
    return run_measured(cmd, **kwargs)


TODAY = "2024-01-05"


def iplosctl_command() -> list[str]:
    """The installed console script beside this interpreter (the venv's), else on PATH."""
    beside = Path(sys.executable).with_name("iplosctl")
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("iplosctl")
    if found is None:
        sys.exit("iplosctl is not installed: run `make test` or `pip install -e .` first")
    return [found]


def installed_build() -> str:
    """`compiled` when the install built every module mypyc should compile, else why not."""
    import importlib

    from iplosctl.compiled import COMPILED_MODULES, is_compiled

    interpreted = [n for n, _p in COMPILED_MODULES if not is_compiled(importlib.import_module(n))]
    return "compiled" if not interpreted else f"interpreted ({len(interpreted)} not compiled)"


def run_plan(
    manifest: Path, cache: Path, workdir: Path, *, interpreted: bool = False
) -> tuple[Timed, dict[str, Any]]:
    """One `iplosctl plan --format json` with XDG_CACHE_HOME=`cache`; exits on failure.

    `interpreted` runs it with the per-record path from its `.py` files (iplosctl.compiled).
    """
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    program = [sys.executable, "-m", "iplosctl.compiled"] if interpreted else iplosctl_command()
    cmd = [*program, "plan", "--format", "json", "--today", TODAY, str(manifest)]
    measured = run_timed(cmd, env=env, cwd=workdir)
    try:
        plan = json.loads(measured.stdout)
    except ValueError:
        plan = None
    if measured.returncode != 0 or not isinstance(plan, dict):
        print(f"iplosctl plan failed (exit {measured.returncode}):", file=sys.stderr)
        print(measured.stderr[-4000:], file=sys.stderr)
        sys.exit(1)
    return measured, plan


def submission(plan: dict[str, Any]) -> dict[str, Any]:
    """The plan's one submission (the benchmark plans one manifest)."""
    (sub,) = plan["submissions"]
    assert isinstance(sub, dict)
    return sub


def describe_plan(plan: dict[str, Any]) -> str:
    """Action, part sizes and findings: proof the plan did the whole job."""
    sub = submission(plan)
    parts = ", ".join(f"{p['type']} {p['sizeBytes'] / MB:.1f} MB" for p in sub.get("parts", []))
    findings = ", ".join(f"{f['rule']}:{f['severity']}×{f['count']}" for f in sub["findings"])
    return f"action {sub['action']}; parts {parts or '-'}; findings {findings or 'none'}"


def find_xmllint() -> str:
    """Checked before anything runs, so a missing yardstick costs no waiting."""
    xmllint = shutil.which("xmllint")
    if xmllint is None:
        print("xmllint is missing: apt-get install -y libxml2-utils")
        sys.exit(1)
    return xmllint


def run_xmllint(xmllint: str, export: Path, workdir: Path) -> Timed:
    """xmllint's schema validation of the same file, as issue 3 names it."""
    measured = run_timed([xmllint, "--noout", "--schema", XSD, export], cwd=workdir)
    if measured.returncode != 0:
        print(f"xmllint rejected {export} (exit {measured.returncode}):", file=sys.stderr)
        print(measured.stderr[-2000:], file=sys.stderr)
        sys.exit(1)
    return measured


def lxml_floor(export: Path, *, touch: bool = False) -> int:
    """The xml source's streaming parse and XSD check with no per-record work (a child run).

    Same iterparse settings, chunk size and schema as the plugin, each recipient cleared
    at once: what any plan written in Python on lxml pays before it reads one field.
    With `touch`, every field is also fetched once through lxml's API (each child's text
    and attributes, as the reader fetches them) and thrown away: the floor of reading
    through lxml, before any conversion, rule, summary or payload.
    """
    from lxml import etree

    from iplosctl.formats.profile import load_format
    from iplosctl_source_xml import CHUNK_SIZE
    from iplosctl_source_xml._diagnose import HARDENED_PARSING

    profile = load_format("iplos-export-v1")
    with export.open("rb") as fh:
        for _event, elem in etree.iterparse(
            fh,
            events=("end",),
            tag=profile.recipient.tag,
            schema=profile.xml_schema(),
            remove_blank_text=True,
            chunk_size=CHUNK_SIZE,
            **HARDENED_PARSING,
        ):
            if touch:
                for child in elem:
                    child.text  # noqa: B018 - fetched, as the reader fetches it
                    for grandchild in child:
                        grandchild.text  # noqa: B018
                    child.items()
            elem.clear(keep_tail=False)
            while elem.getprevious() is not None:
                del elem.getparent()[0]
    return 0


def run_lxml_floor(export: Path, workdir: Path, *, touch: bool = False) -> Timed:
    flag = "--field-floor" if touch else "--lxml-floor"
    measured = run_timed([sys.executable, __file__, flag, export], cwd=workdir)
    if measured.returncode != 0:
        print(measured.stderr[-2000:], file=sys.stderr)
        sys.exit(1)
    return measured


def shape_export(shape: str, recipients: int, seed: int) -> Path:
    """The export v1 records written in a test shape, generated once per size and seed."""
    directory = cache_root() / "exports"
    directory.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256((REPO / "tests" / "shapes.py").read_bytes()).hexdigest()[:12]
    path = directory / f"{shape}-{recipients}-s{seed}-{digest}.xml"
    if not path.is_file():
        # In a child process: the writer builds the file in memory, and a parent that
        # grew would inflate every later child's peak RSS (Linux carries the parent's
        # high-water mark across vfork+exec into the child's ru_maxrss).
        partial = path.with_suffix(".part")
        code = (
            "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); "
            "from tests.shapes import write_shape; "
            "write_shape(sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))"
        )
        args = [str(REPO), shape, str(partial), str(recipients), str(seed)]
        subprocess.run([sys.executable, "-c", code, *args], check=True)
        partial.replace(path)
    return path


def plan_shapes(
    shapes: list[str], args: argparse.Namespace, workdir: Path, v1: Path, v1_digest: str
) -> dict[str, dict[str, object]]:
    """Plan each shape's export through its profile, cold cache, `--repeat` times.

    Each shape run is paired with an export v1 run right before it, so a pair shares the
    machine's load of the moment (on a shared machine it swings by a factor of two
    within minutes): `pair_ratios` are shape / v1 per pair, `ratio_to_v1` their median.
    """
    results: dict[str, dict[str, object]] = {}
    for shape in shapes:
        export = shape_export(shape, args.recipients, args.seed)
        profile = REPO / "tests" / "data" / "formats" / f"{shape}.yaml"
        manifest = workdir / "manifests" / f"{shape}.yaml"
        text = manifest_yaml(
            name=f"bench-{args.recipients}",
            export=export,
            environment="sandbox",
            size_limit=10**10,
        ).replace("format: iplos-export-v1", f"format: {profile}")
        manifest.write_text(text, encoding="utf-8")
        runs, ratios = [], []
        for i in range(args.repeat):
            base, _ = run_plan(v1, workdir / f"xdg-cache-v1-{shape}-{i}", workdir)
            run, plan = run_plan(manifest, workdir / f"xdg-cache-{shape}-{i}", workdir)
            runs.append(run)
            ratios.append(round(run.seconds / base.seconds, 3))
        same = submission(plan)["digests"]["payload"] == v1_digest
        size = export.stat().st_size / MB
        print(
            f"plan {shape} ({size:.1f} MB): {_runs(runs)}; ratio to the v1 run before each: "
            f"{', '.join(map(str, ratios))}; same payload as v1: {same}"
        )
        results[shape] = {
            "seconds": round(min(m.seconds for m in runs), 3),
            "peak_rss_mb": round(max(m.peak_rss_mb for m in runs), 1),
            "pair_ratios": ratios,
            "ratio_to_v1": statistics.median(ratios),
            "same_payload_as_v1": same,
        }
    return results


def _runs(runs: Sequence[Measured]) -> str:
    times = ", ".join(f"{m.seconds:.2f}" for m in runs)
    cpu = ", ".join(f"{m.cpu_seconds:.2f}" for m in runs if isinstance(m, Timed))
    cpu = f" (CPU {cpu} s)" if cpu else ""
    return f"{times} s{cpu}, peak RSS {max(m.peak_rss_mb for m in runs):.0f} MB"


def _cpu(runs: list[Timed]) -> float:
    return min(m.cpu_seconds for m in runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int)
    parser.add_argument("--lxml-floor", type=Path, help=argparse.SUPPRESS)  # the child run
    parser.add_argument("--field-floor", type=Path, help=argparse.SUPPRESS)  # the child run
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--shapes",
        default="vendor-a,vendor-b",
        help="test shapes to plan beside export v1 (comma-separated; empty for none)",
    )
    parser.add_argument(
        "--no-interpreted",
        dest="interpreted",
        action="store_false",
        help="skip the interpreted runs beside the installed build's",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs of each command; the JSON takes the fastest (noise only adds time)",
    )
    args = parser.parse_args(argv)
    if args.lxml_floor is not None:
        return lxml_floor(args.lxml_floor)
    if args.field_floor is not None:
        return lxml_floor(args.field_floor, touch=True)
    if args.recipients is None:
        parser.error("--recipients is required")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    xmllint = find_xmllint()

    export = cached_export(args.recipients, args.seed)
    export_mb = export.stat().st_size / MB
    with tempfile.TemporaryDirectory(prefix="iplosctl-bench-plan-") as tmp:
        workdir = Path(tmp)
        manifest = workdir / "manifests" / "bench.yaml"
        manifest.parent.mkdir()
        manifest.write_text(
            manifest_yaml(
                name=f"bench-{args.recipients}",
                export=export,
                environment="sandbox",
                size_limit=10**10,
            ),
            encoding="utf-8",
        )
        build = installed_build()
        colds: list[Timed] = []
        interpreted: list[Timed] = []
        for i in range(args.repeat):  # each cold run gets its own, empty cache
            cold, plan = run_plan(manifest, workdir / f"xdg-cache-{i}", workdir)
            colds.append(cold)
            if args.interpreted:  # right after, so both share the machine's load of the moment
                py_run, py_plan = run_plan(
                    manifest, workdir / f"xdg-cache-py-{i}", workdir, interpreted=True
                )
                interpreted.append(py_run)
                if submission(py_plan)["digests"] != submission(plan)["digests"]:
                    sys.exit("the interpreted plan's digests differ from the installed build's")
        print(f"plan (cold cache, {build} build): {_runs(colds)}; {describe_plan(plan)}")
        if interpreted:
            print(f"plan (cold cache, per-record path interpreted): {_runs(interpreted)}")
        warm, _ = run_plan(manifest, workdir / "xdg-cache-0", workdir)
        print(f"plan (warm cache, same export): {_runs([warm])}")
        lints = [run_xmllint(xmllint, export, workdir) for _ in range(args.repeat)]
        print(f"xmllint --noout --schema: {_runs(lints)}")
        floors = [run_lxml_floor(export, workdir) for _ in range(args.repeat)]
        print(f"lxml streaming parse + XSD alone, no records (the floor): {_runs(floors)}")
        touched = [run_lxml_floor(export, workdir, touch=True) for _ in range(args.repeat)]
        print(f"the same, fetching every field through lxml once: {_runs(touched)}")
        shapes = [s for s in args.shapes.split(",") if s]
        v1_digest = submission(plan)["digests"]["payload"]
        shape_results = plan_shapes(shapes, args, workdir, manifest, v1_digest)

    plan_seconds = min(m.seconds for m in colds)
    xmllint_seconds = min(m.seconds for m in lints)
    plan_rss = max(m.peak_rss_mb for m in colds)
    figures: dict[str, object] = {}
    if interpreted:
        py_seconds = min(m.seconds for m in interpreted)
        figures = {
            "interpreted_plan_seconds": round(py_seconds, 3),
            "interpreted_ratio": round(py_seconds / xmllint_seconds, 3),
            "interpreted_cpu_seconds": round(_cpu(interpreted), 3),
            "interpreted_cpu_ratio": round(_cpu(interpreted) / _cpu(lints), 3),
            "interpreted_peak_rss_mb": round(max(m.peak_rss_mb for m in interpreted), 1),
        }
        print(
            f"interpreted: ratio {py_seconds / xmllint_seconds:.2f} ({py_seconds:.2f} s), "
            f"by CPU time {_cpu(interpreted) / _cpu(lints):.2f}; speed-up of the {build} "
            f"build: {py_seconds / plan_seconds:.2f}x, by CPU time "
            f"{_cpu(interpreted) / _cpu(colds):.2f}x"
        )
    print(
        f"{build}: ratio {plan_seconds / xmllint_seconds:.2f} against xmllint, by CPU time "
        f"{_cpu(colds) / _cpu(lints):.2f} "
        f"(target <= 2.5: {'met' if plan_seconds / xmllint_seconds <= 2.5 else 'not met'}); "
        f"peak RSS {plan_rss:.0f} MB (target <= 300 MB: {'met' if plan_rss <= 300 else 'not met'})"
    )
    print(
        json.dumps(
            {
                "recipients": args.recipients,
                "export_mb": round(export_mb, 2),
                "build": build,
                "plan_seconds": round(plan_seconds, 3),
                "plan_peak_rss_mb": round(plan_rss, 1),
                "xmllint_seconds": round(xmllint_seconds, 3),
                "ratio": round(plan_seconds / xmllint_seconds, 3),
                "plan_cpu_seconds": round(_cpu(colds), 3),
                "xmllint_cpu_seconds": round(_cpu(lints), 3),
                "cpu_ratio": round(_cpu(colds) / _cpu(lints), 3),
                **figures,
                "lxml_floor_seconds": round(min(m.seconds for m in floors), 3),
                "field_floor_seconds": round(min(m.seconds for m in touched), 3),
                "field_floor_ratio": round(min(m.seconds for m in touched) / xmllint_seconds, 3),
                "shapes": shape_results,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
