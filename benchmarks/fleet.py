"""`iplosctl plan` over a whole country: 356 municipalities, one process against all cores.

Issue 15's fleet: one manifest per municipality (Norway has 356 since 2024), sizes skewed
as Norway's: one municipality of about 40,000 recipients, a long tail of a few hundred,
350,000 recipients in total (sizes follow a Zipf law fitted to those two figures). The
exports are written by `generate_export` (what `iplosctl sandbox generate` runs), once,
into a temporary folder that later runs reuse (`--data` to choose it), never the repository.

It prints, for `-j 1` and `-j <cores>`: the cold plan (a fresh XDG_CACHE_HOME, so every
export is read, checked and digested) and the plan again with nothing changed (the same
cache), each with its CPU time (the process and its workers) and peak RSS (the largest
single process: `wait4` reports the maximum over the process and the workers it reaped,
not their sum). On a machine other work keeps busy (see the load average printed), two
cores are not two cores: compare the CPU time with the wall time. Issue 15's targets are
printed beside the figures, never asserted: cold < 20 s and unchanged < 2 s on a 2-core
machine (measured with one process before -j existed: 44 s cold, 5.8 s unchanged, 86 MB).

    .venv/bin/python benchmarks/fleet.py [--data DIR] [--jobs N] [--repeat 1]

The last line printed is one JSON object; earlier lines are context.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from common import MB, Measured, manifest_yaml, run_measured
from plan_scale import TODAY, iplosctl_command

from iplosctl.parallel import default_jobs
from iplosctl.sandbox.generate import generate_export

MUNICIPALITIES = 356
TOTAL = 350_000
LARGEST = 40_000
SMALLEST = 30
TARGETS = {"cold": 20.0, "unchanged": 2.0}


def fleet_sizes(
    count: int = MUNICIPALITIES, total: int = TOTAL, largest: int = LARGEST
) -> list[int]:
    """Recipients per municipality, largest first: `largest / rank**a`, with `a` chosen so
    the sizes add up to `total` (the remainder goes to the largest, to hit it exactly)."""
    low, high = 0.1, 3.0
    for _ in range(60):  # bisection: a larger exponent, a smaller sum
        a = (low + high) / 2
        if sum(max(SMALLEST, round(largest / k**a)) for k in range(1, count + 1)) > total:
            low = a
        else:
            high = a
    sizes = [max(SMALLEST, round(largest / k**high)) for k in range(1, count + 1)]
    sizes[0] += total - sum(sizes)
    return sizes


def default_data_dir(sizes: list[int]) -> Path:
    key = f"{len(sizes)}-{sum(sizes)}-{sizes[0]}"
    return Path(tempfile.gettempdir()) / f"iplosctl-fleet-{key}"


def _generate(job: tuple[Path, int, int]) -> None:
    """`iplosctl sandbox generate --recipients N --seed I --out PATH`, without starting 356
    interpreters: the function the command runs (the file is replaced atomically)."""
    out, recipients, seed = job
    generate_export(out, recipients=recipients, seed=seed)


def generate_fleet(data: Path, sizes: list[int], jobs: int) -> Path:
    """Exports (as `iplosctl sandbox generate` writes them) and manifests, unless there."""
    manifests = data / "manifests"
    exports = data / "exports"
    manifests.mkdir(parents=True, exist_ok=True)
    exports.mkdir(parents=True, exist_ok=True)
    todo = [(i, n) for i, n in enumerate(sizes) if not (exports / f"kommune-{i:03d}.xml").is_file()]
    if todo:
        print(f"generating {len(todo)} exports in {exports} ...", flush=True)
        started = time.perf_counter()

        with ProcessPoolExecutor(jobs) as pool:
            list(pool.map(_generate, [(exports / f"kommune-{i:03d}.xml", n, i) for i, n in todo]))
        print(f"generated in {time.perf_counter() - started:.0f} s", flush=True)
    for i, _n in enumerate(sizes):
        text = manifest_yaml(
            name=f"kommune-{i:03d}-2023",
            export=exports / f"kommune-{i:03d}.xml",
            environment="sandbox",
            size_limit=10**9,  # the largest plans as `submit`, not `blocked` on size
        )
        path = manifests / f"kommune-{i:03d}-2023.yaml"
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
    return manifests


def plan(manifests: Path, cache: Path, jobs: int, expected: int) -> Measured:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    cmd = [*iplosctl_command(), "plan", "--format", "json", "--today", TODAY,
           "-j", str(jobs), str(manifests)]  # fmt: skip
    measured = run_measured(cmd, env=env, cwd=manifests.parent)
    if measured.returncode != 0:
        print(f"iplosctl plan failed (exit {measured.returncode}):", file=sys.stderr)
        print(measured.stderr[-4000:], file=sys.stderr)
        sys.exit(1)
    planned = len(json.loads(measured.stdout)["submissions"])
    if planned != expected:
        sys.exit(f"planned {planned} submissions, not {expected}")
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="folder for exports and manifests")
    parser.add_argument("--jobs", type=int, default=default_jobs(), help="the parallel run's -j")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each; the fastest counts")
    # a smaller country, for the smoke test that keeps this script working (tests/)
    parser.add_argument("--municipalities", type=int, default=MUNICIPALITIES)
    parser.add_argument("--recipients", type=int, default=TOTAL, help="in all")
    parser.add_argument("--largest", type=int, default=LARGEST)
    args = parser.parse_args()
    sizes = fleet_sizes(args.municipalities, args.recipients, args.largest)
    data = args.data or default_data_dir(sizes)
    print(
        f"fleet: {len(sizes)} municipalities, {sum(sizes):,} recipients (largest {sizes[0]:,}, "
        f"median {sorted(sizes)[len(sizes) // 2]:,}, smallest {sizes[-1]:,}); data in {data}"
    )
    manifests = generate_fleet(data, sizes, args.jobs)
    size = sum(p.stat().st_size for p in (data / "exports").glob("*.xml"))
    print(f"exports: {size / MB:.0f} MB; {os.cpu_count()} cores; parallel run: -j {args.jobs}")
    results: dict[str, dict[str, float]] = {}
    for jobs in dict.fromkeys((1, args.jobs)):
        cold: list[Measured] = []
        unchanged: list[Measured] = []
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory(prefix="iplosctl-fleet-cache-") as cache:
                cold.append(plan(manifests, Path(cache), jobs, len(sizes)))
                unchanged.append(plan(manifests, Path(cache), jobs, len(sizes)))
        for what, runs in (("cold", cold), ("unchanged", unchanged)):
            best = min(runs, key=lambda m: m.seconds)
            rss = max(m.peak_rss_mb for m in runs)
            results[f"{what}_j{jobs}"] = {
                "seconds": round(best.seconds, 2),
                "cpu_seconds": round(best.cpu_seconds, 2),
                "peak_rss_mb": round(rss),
            }
            print(
                f"plan {what:<9} -j {jobs}: {best.seconds:6.1f} s (CPU {best.cpu_seconds:5.1f} s, "
                f"load average {os.getloadavg()[0]:.1f}), peak RSS {rss:4.0f} MB "
                f"(target < {TARGETS[what]:.0f} s with all cores)",
                flush=True,
            )
    print(json.dumps({"municipalities": len(sizes), "recipients": sum(sizes), **results}))


if __name__ == "__main__":
    main()
