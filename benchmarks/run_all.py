#!/usr/bin/env python3
"""One command for every target of the performance issue (issue 13), printed as a table of ratios.

    python benchmarks/run_all.py                 # the full run (a throwaway RabbitMQ node; 20-40 min on 2 cores)
    python benchmarks/run_all.py --quick         # tiny sizes, one run: the smoke test's run
    python benchmarks/run_all.py --url http://127.0.0.1:15672 --user guest --password guest

What it measures (medians of ``--runs`` runs; every topo run is a fresh ``python -m topo`` process):

1. plan, nothing to change, against one raw ``GET /api/definitions/{vhost}`` at N=1,000 / 10,000 /
   50,000 queues (2.1·N+2 objects), and the plan's growth per object between the sizes;
2. apply into an empty broker against the broker's bulk import (``POST /api/definitions/{vhost}``), and
   a 1% change (every 100th queue's TTL: a replace and its binding) on the N=50,000 broker, split into
   the read (``topo plan`` of the change) and the changed requests (the rest of the apply);
3. start-up: ``topo version`` and ``topo validate`` of a 10-line file against a bare interpreter;
4. peak RSS of ``validate``, ``plan`` and ``plan --json`` at about 100,000 and 200,000 objects against
   the file's size (the plans run against a broker without the vhost: everything is to be created, the
   largest plan there is).

The building blocks (topology, raw baselines, the child launcher that measures topo's own peak RSS)
are bench.py's; see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench
from bench import Api, BenchError, ChildRun, Target, TopoRunner, api, delete_vhost, progress

SMALL_FILE = Path(__file__).resolve().parent / "startup.yaml"  # the 10-line file of the start-up target


@dataclass(frozen=True)
class Sizes:
    plan: tuple[int, ...]  # N of the plan-vs-GET rows (the last is also the 1% change's broker)
    apply: int  # N of apply-from-empty vs the bulk import
    memory: tuple[int, ...]  # N of the memory rows
    startup_runs: int
    # Plans up to N=10,000 take seconds, and the broker's own GET varies by ±15% from one read to the
    # next (0.99-1.42 s at N=10,000 on one idle node): more runs there, for a median that holds.
    small_plan_runs: int
    # The broker's import of N=10,000 took 24.0-30.2 s on the same idle node: topo's whole part of the
    # apply (2.3-2.5 s) is smaller than that spread, so the apply rows get more pairs too.
    apply_runs: int


FULL = Sizes(
    plan=(1_000, 10_000, 50_000),
    apply=10_000,
    memory=(50_000, 100_000),
    startup_runs=11,
    small_plan_runs=9,
    apply_runs=5,
)
QUICK = Sizes(plan=(100, 300), apply=100, memory=(100,), startup_runs=3, small_plan_runs=1, apply_runs=1)


def objects(n: int) -> int:
    """Objects in bench.py's topology of size N: N queues, N/10 exchanges, N bindings, a policy, the vhost."""
    return n + n // 10 + n + 2


@dataclass(frozen=True)
class OnePercent(bench.Topology):
    """bench.py's topology with every 100th queue's TTL changed (1%): a replace plus its binding each."""

    def ttl(self, i: int, changed: bool) -> int:
        return bench.CHANGED_TTL if changed and i % 100 == 0 else bench.TTL


@dataclass
class Row:
    label: str
    value: float
    target: str
    met: bool | None
    detail: str = ""


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    samples: dict[str, list[float]] = field(default_factory=dict)

    def sample(self, key: str, value: float) -> None:
        self.samples.setdefault(key, []).append(value)

    def median(self, key: str) -> float:
        return statistics.median(self.samples[key])

    def spread(self, key: str) -> str:
        values = self.samples[key]
        return f"{statistics.median(values):.3f} s (min {min(values):.3f}, max {max(values):.3f}, {len(values)} runs)"


def timed(call: Callable[[], Any]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def populate(admin: Api, target: Target, topo: bench.Topology) -> float:
    """Fills the vhost with one bulk import (timed); beyond N=10,000 in untimed parts, since the broker
    refuses a request body above its limit (management.http.max_body_size) and returns 0."""
    bench.reset_vhost(admin, topo.vhost)
    if topo.n <= 10_000:
        seconds = bench.raw_bulk_import(target, topo)
    else:
        seconds = 0.0
        whole = topo.definitions()
        parts = [{"policies": whole["policies"], "exchanges": whole["exchanges"]}]
        for kind in ("queues", "bindings"):
            parts += [{kind: whole[kind][i : i + 10_000]} for i in range(0, len(whole[kind]), 10_000)]
        for part in parts:
            admin.call("POST", api("definitions", topo.vhost), part)
    bench.check_populated(admin, topo, who="the bulk import")
    return seconds


# -- 1. plan with nothing to change vs the raw read ------------------------------------------------------


def plan_rows(ctx: Context, results: Results) -> None:
    slopes: list[tuple[int, int, float]] = []
    previous: tuple[int, float] | None = None
    for n in ctx.sizes.plan:
        topo = bench.Topology(n, f"{ctx.prefix}{n}")
        path = ctx.write(f"plan-{n}.yaml", topo.yaml())
        progress(f"plan N={n}: populating with the bulk import")
        populate(ctx.admin, ctx.target, topo)
        runs = ctx.runs if n > 10_000 else max(ctx.runs, ctx.sizes.small_plan_runs)
        for run in range(runs):
            progress(f"plan N={n} run {run + 1}/{runs}")
            results.sample(f"get {n}", bench.raw_get_definitions(ctx.target, topo))
            results.sample(f"plan {n}", ctx.topo.run("plan", "--detailed-exitcode", "-f", path).seconds)
        ratio = results.median(f"plan {n}") / results.median(f"get {n}")
        results.rows.append(
            Row(
                f"plan (no-op) / raw GET definitions, N={n} ({objects(n):,} objects)",
                ratio,
                "≤ 1.5 at N=10,000 and 50,000",
                ratio <= 1.5 if n >= 10_000 else None,
                f"plan {results.spread(f'plan {n}')}; GET {results.spread(f'get {n}')}",
            )
        )
        if previous is not None:
            n0, t0 = previous
            slope = (results.median(f"plan {n}") - t0) / (objects(n) - objects(n0))
            slopes.append((n0, n, slope))
        previous = (n, results.median(f"plan {n}"))
        if n != ctx.sizes.plan[-1]:
            delete_vhost(ctx.admin, topo.vhost)
    for n0, n1, slope in slopes:
        results.rows.append(
            Row(f"plan growth per object, N={n0}→{n1} (µs/object)", slope * 1e6, "", None, "marginal cost")
        )
    if len(slopes) >= 2:
        ratio = slopes[-1][2] / slopes[0][2]
        interval = f"N={slopes[-1][0]}→{slopes[-1][1]} vs {slopes[0][0]}→{slopes[0][1]}"
        results.rows.append(
            Row(
                f"plan growth per object, last / first interval ({interval})",
                ratio,
                "0.8–1.2 (constant within 20%)",
                0.8 <= ratio <= 1.2,
            )
        )
        # The floor of the row above: the plan contains the GET, so it cannot grow more evenly than the GET.
        get_slopes = [
            (results.median(f"get {n1}") - results.median(f"get {n0}")) / (objects(n1) - objects(n0))
            for n0, n1, _ in slopes
        ]
        above = [(slope - get_slope) * 1e6 for (_, _, slope), get_slope in zip(slopes, get_slopes, strict=True)]
        results.rows.append(
            Row(
                f"floor: raw GET growth per object, last / first interval ({interval})",
                get_slopes[-1] / get_slopes[0],
                "",
                None,
                f"the broker's own read: {get_slopes[0] * 1e6:.0f} → {get_slopes[-1] * 1e6:.0f} µs/object; "
                f"topo's time above the GET: {above[0]:.0f} → {above[-1]:.0f} µs/object",
            )
        )


# -- 2. apply from empty vs the bulk import; the 1% change -----------------------------------------------


def apply_rows(ctx: Context, results: Results) -> None:
    n = ctx.sizes.apply
    topo = bench.Topology(n, f"{ctx.prefix}apply-{n}")
    path = ctx.write(f"apply-{n}.yaml", topo.yaml())
    try:
        runs = max(ctx.runs, ctx.sizes.apply_runs)
        for run in range(runs):
            progress(f"apply N={n} run {run + 1}/{runs}: bulk import, then topo apply")
            results.sample("bulk", populate(ctx.admin, ctx.target, topo))
            delete_vhost(ctx.admin, topo.vhost)  # topo creates the vhost itself, inside its timing
            results.sample("apply", ctx.topo.run("apply", "--auto-approve", "-f", path).seconds)
            bench.check_populated(ctx.admin, topo, who="topo apply (create)")
    finally:
        with contextlib.suppress(BenchError, requests.RequestException):
            delete_vhost(ctx.admin, topo.vhost)
    ratio = results.median("apply") / results.median("bulk")
    results.rows.append(
        Row(
            f"apply (create) / raw bulk import, N={n} ({objects(n):,} objects)",
            ratio,
            "≤ 1.1",
            ratio <= 1.1,
            f"apply {results.spread('apply')}; import {results.spread('bulk')}",
        )
    )


def raw_changed_requests(target: Target, topo: OnePercent, *, changed: bool) -> float:
    """The requests a 1% change needs, one after another: each changed queue deleted, re-declared, re-bound."""
    indexes = [i for i in range(topo.n) if i % 100 == 0]
    with Api(target) as session:
        start = time.perf_counter()
        for i in indexes:
            session.call("DELETE", api("queues", topo.vhost, f"q{i}"))
            session.call("PUT", api("queues", topo.vhost, f"q{i}"), topo.queue_body(i, changed=changed))
            session.call("POST", api("bindings", topo.vhost, "e", topo.exchange(i), "q", f"q{i}"), topo.binding_body(i))
        return time.perf_counter() - start


def change_rows(ctx: Context, results: Results) -> None:
    """On the largest plan size's broker (still populated by plan_rows): a 1% change, timed and split."""
    n = ctx.sizes.plan[-1]
    topo = OnePercent(n, f"{ctx.prefix}{n}")
    original = ctx.write(f"plan-{n}.yaml", topo.yaml())
    changed = ctx.write(f"change-{n}.yaml", topo.yaml(changed=True))
    count = n // 100
    try:
        for run in range(ctx.runs):
            progress(f"1% change N={n} run {run + 1}/{ctx.runs}")
            results.sample("change get", bench.raw_get_definitions(ctx.target, topo))
            results.sample("change plan", ctx.topo.run("plan", "-f", changed).seconds)
            results.sample(
                "change apply", ctx.topo.run("apply", "--auto-approve", "--allow-data-loss", "-f", changed).seconds
            )
            bench.check_populated(ctx.admin, topo, changed=True, who="topo apply (1% change)")
            # Back to the original with the raw requests, timed: the same requests the change needed.
            results.sample("change raw", raw_changed_requests(ctx.target, topo, changed=False))
            bench.check_populated(ctx.admin, topo, who="restoring the original topology")
            ctx.topo.run("plan", "--detailed-exitcode", "-f", original)  # nothing left to do, or it fails
    finally:
        with contextlib.suppress(BenchError, requests.RequestException):
            delete_vhost(ctx.admin, topo.vhost)
    apply_s, plan_s = results.median("change apply"), results.median("change plan")
    get_s, raw_s = results.median("change get"), results.median("change raw")
    results.rows.append(
        Row(
            f"1% change ({count} queue replaces + {count} bindings) on {objects(n):,} objects: "
            "apply / (raw GET + raw changed requests)",
            apply_s / (get_s + raw_s),
            "reported (the read plus the changed requests)",
            None,
            f"apply {apply_s:.3f} s = read+plan {plan_s:.3f} s (topo plan of the change) + changes and "
            f"verification {apply_s - plan_s:.3f} s; raw GET {get_s:.3f} s, raw sequential changed requests "
            f"{raw_s:.3f} s",
        )
    )


# -- 3. start-up ------------------------------------------------------------------------------------------


def startup_rows(ctx: Context, results: Results) -> None:
    small = str(SMALL_FILE)
    ctx.topo.run("validate", "-f", small)  # writes the bytecode cache, as installing a package does
    for run in range(ctx.sizes.startup_runs):
        progress(f"start-up run {run + 1}/{ctx.sizes.startup_runs}")
        results.sample("bare", ctx.topo.run_python("-c", "pass").seconds)
        results.sample("version", ctx.topo.run("version").seconds)
        results.sample("validate", ctx.topo.run("validate", "-f", small).seconds)
        results.sample("floor", ctx.topo.run_python("-c", VALIDATE_FLOOR).seconds)
    bare = results.median("bare")
    for key, label in (("version", "topo version"), ("validate", "topo validate of a 10-line file")):
        seconds = results.median(key)
        results.rows.append(
            Row(
                f"start-up: {label} (s)",
                seconds,
                "≤ 0.15 s",
                seconds <= 0.15,
                f"{results.spread(key)}; bare interpreter {bare:.3f} s ({seconds / bare:.1f}×)",
            )
        )
    results.rows.append(
        Row(
            "floor of validate: importing typer, pydantic, PyYAML and topo's models (s)",
            results.median("floor"),
            "",
            None,
            f"{results.spread('floor')}: what validate needs before it reads a line (it parses its options "
            "with typer and checks the file with the pydantic models)",
        )
    )


# What `topo validate` imports before it can read a file: its command-line parser, its validator and the
# models it validates with (building the pydantic models is most of topo.model's import).
VALIDATE_FLOOR = "import typer, typer.main, pydantic, yaml, topo.model"

# The file's content as plain Python values, nothing more: no line numbers, no models, no state.
CONTENT_FLOOR = """\
import json, sys, tracemalloc
tracemalloc.start()
with open(sys.argv[1], encoding="utf-8") as handle:
    content = json.load(handle)
print(tracemalloc.get_traced_memory()[0])
"""


# -- 4. memory --------------------------------------------------------------------------------------------


def memory_rows(ctx: Context, results: Results) -> None:
    interpreter = statistics.median(ctx.topo.run("version").rss_mb for _ in range(3))
    for n in ctx.sizes.memory:
        topo = bench.Topology(n, f"{ctx.prefix}memory-{n}")
        delete_vhost(ctx.admin, topo.vhost)  # plans of everything: the vhost does not exist
        path = ctx.write(f"memory-{n}.yaml", topo.yaml())
        size_mb = Path(path).stat().st_size / 1024 / 1024
        limit = 5 * size_mb + interpreter
        plain = ctx.write(f"memory-{n}.json", json.dumps(yaml.load(topo.yaml(), Loader=yaml.CSafeLoader)))
        ctx.topo.run_python("-c", CONTENT_FLOOR, plain)
        content_mb = int((ctx.workdir / "py.stdout").read_text()) / 1024 / 1024
        results.rows.append(
            Row(
                f"floor: the same content as plain dicts (json.load, traced), {objects(n):,} objects",
                content_mb,
                "",
                None,
                f"{content_mb / size_mb:.1f}× the file ({content_mb * 1024 * 1024 / objects(n):.0f} bytes per "
                f"object; the YAML takes {size_mb * 1024 * 1024 / objects(n):.0f}), before line numbers, "
                "validation or state",
            )
        )
        for label, args in (
            ("validate", ("validate", "-f", path)),
            ("plan", ("plan", "-f", path)),
            ("plan --json", ("plan", "--json", "-f", path)),
        ):
            runs: list[ChildRun] = []
            for run in range(ctx.runs):
                progress(f"memory N={n} {label} run {run + 1}/{ctx.runs}")
                runs.append(ctx.topo.run(*args))
            rss = statistics.median(r.rss_mb for r in runs)
            seconds = statistics.median(r.seconds for r in runs)
            results.rows.append(
                Row(
                    f"peak RSS MB: {label}, {objects(n):,} objects ({size_mb:.1f} MB file)",
                    rss,
                    f"≤ 5 × file + interpreter = {limit:.0f} MB",
                    rss <= limit,
                    f"{(rss - interpreter) / size_mb:.1f}× the file above the interpreter's {interpreter:.0f} MB; "
                    f"{seconds:.2f} s",
                )
            )


# -- the run ----------------------------------------------------------------------------------------------


class Runner(TopoRunner):
    def run(self, *args: str, expect: str | None = None) -> ChildRun:
        # The default 30 s per request is too short for a 105,000-object definitions GET on a busy machine.
        if args and args[0] in ("plan", "apply"):
            args = (args[0], "--timeout", "600", *args[1:])
        return super().run(*args, expect=expect)

    def run_python(self, *args: str) -> ChildRun:
        """The bare interpreter, launched and measured exactly as topo is."""
        return _launch(self, [sys.executable, *args], " ".join(["python", *args]))


def _launch(runner: TopoRunner, command: list[str], shown: str) -> ChildRun:
    out, err = runner.workdir / "py.stdout", runner.workdir / "py.stderr"
    spec = {"command": command, "cwd": str(runner.workdir), "stdout": str(out), "stderr": str(err), "timeout": 60}
    launcher = subprocess.run(
        [sys.executable, "-I", "-c", bench._LAUNCHER, json.dumps(spec)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        env=runner.env,
        timeout=90,
        check=False,
    )
    if launcher.returncode != 0:
        raise BenchError(f"launcher for `{shown}` failed: {launcher.stderr.decode(errors='replace')[-2000:]}")
    result = json.loads(launcher.stdout)
    if result["returncode"] != 0:
        raise BenchError(f"`{shown}` exited with {result['returncode']}")
    return ChildRun(float(result["seconds"]), int(result["maxrss_kb"]) / 1024)


@dataclass
class Context:
    target: Target
    admin: Api
    topo: Runner
    workdir: Path
    sizes: Sizes
    runs: int
    prefix: str

    def write(self, name: str, text: str) -> str:
        path = self.workdir / name
        path.write_text(text)
        return str(path)


def table(results: Results) -> str:
    out = ["| measurement | value | target | verdict | detail |", "|---|---:|---|---|---|"]
    for row in results.rows:
        verdict = "reported" if row.met is None else ("met" if row.met else "NOT MET")
        out.append(f"| {row.label} | {row.value:.2f} | {row.target} | {verdict} | {row.detail} |")
    return "\n".join(out) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Every target of issue 13, measured in one run.")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one run (the smoke test)")
    parser.add_argument("--runs", type=int, help="runs per measurement (default 3, --quick 1)")
    parser.add_argument("--only", nargs="+", choices=("plan", "apply", "change", "startup", "memory"))
    parser.add_argument("--url", help="management API of an existing broker (default: start a throwaway node)")
    parser.add_argument("--user", default="guest")
    parser.add_argument("--password", default="guest")
    parser.add_argument("--vhost-prefix", default="bench-all-", help="vhosts are PREFIX<N>...")
    parser.add_argument("--json", metavar="OUT", type=Path, help="also write the rows and samples to OUT")
    args = parser.parse_args(argv)
    args.runs = args.runs or (1 if args.quick else 3)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # A stopped benchmark still stops its node and deletes its vhosts (the finally blocks run).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    for name in bench.PROXY_VARIABLES:
        os.environ.pop(name, None)
        os.environ.pop(name.upper(), None)
    sizes = QUICK if args.quick else FULL
    parts = args.only or ["plan", "change", "apply", "startup", "memory"]
    if "change" in parts and "plan" not in parts:
        parts = ["plan", *parts]  # the change runs on the plan's largest broker
    results = Results()
    try:
        with bench.broker(args) as (target, kind), Api(target) as admin, tempfile.TemporaryDirectory() as tmp:
            info = bench.machine_info(admin, kind)
            print(bench.machine_report(info, 0).replace("- raw parallel baseline: 0 threads over one session\n", ""))
            timeout = 300 + 0.06 * max(sizes.memory + sizes.plan)
            ctx = Context(target, admin, Runner(target, Path(tmp), timeout), Path(tmp), sizes, args.runs,
                          args.vhost_prefix)  # fmt: skip
            steps = {
                "plan": plan_rows,
                "change": change_rows,
                "apply": apply_rows,
                "startup": startup_rows,
                "memory": memory_rows,
            }
            try:
                for part in ("plan", "change", "apply", "startup", "memory"):
                    if part in parts:
                        steps[part](ctx, results)
                    if part == "plan" and "change" not in parts:
                        # The largest plan's broker is kept for the change only: left there, its 105,002
                        # objects slowed the apply rows' broker (imports of 30.8-34.7 s instead of 24-30).
                        delete_vhost(admin, f"{args.vhost_prefix}{sizes.plan[-1]}")
            finally:
                for n in sizes.plan:
                    with contextlib.suppress(BenchError, requests.RequestException):
                        delete_vhost(admin, f"{args.vhost_prefix}{n}")
            print(f"medians of {args.runs} run(s){' (--quick)' if args.quick else ''}\n")
            print(table(results), flush=True)
            if args.json:
                document = {
                    "machine": info,
                    "runs": args.runs,
                    "quick": args.quick,
                    "rows": [row.__dict__ for row in results.rows],
                    "samples": results.samples,
                }
                args.json.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    except (RuntimeError, requests.RequestException) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
