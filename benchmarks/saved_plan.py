#!/usr/bin/env python3
"""Saved plans at scale: the size of a plan file, and what `topo apply FILE` costs over `topo apply`.

Uses bench.py's topology (vhost ``bench-saved-<N>``: N queues, N/10 exchanges, N bindings, a policy):

1. the file of a plan that creates everything (2.1 N + 1 changes), and of a 10% replace plan;
2. end to end, the median of --runs runs, each from the same broker state (the base topology applied):
   ``topo apply --auto-approve`` of the changed files vs ``topo apply FILE`` of a plan saved for them,
   and ``topo plan`` vs ``topo plan --out FILE``;
3. in process, the parts of the check alone: writing the file, and loading it plus comparing it with a
   fresh plan (the fresh plan itself is what any apply makes anyway).

    python benchmarks/saved_plan.py                      # N=10000, 3 runs, throwaway broker
    python benchmarks/saved_plan.py --n 1000 --runs 1 --url http://127.0.0.1:15672 --user guest --password guest
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import REPO, Target, Topology, broker, delete_vhost

sys.path.insert(0, str(REPO))
from topo.client import ManagementClient
from topo.connection import resolve_connection
from topo.engine import build_plan, manages_access, scope
from topo.load import load_topology
from topo.read import read_actual
from topo.render import plan_to_json
from topo.savedplan import load, read_identity, save, staleness


def topo(target: Target, *args: str) -> float:
    env = {**os.environ, "TOPO_URL": target.url, "TOPO_USER": target.user, "TOPO_PASSWORD": target.password}
    env["NO_COLOR"] = "1"
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "topo", *args], env=env, capture_output=True, text=True, cwd=REPO)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"topo {' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return elapsed


def in_process(target: Target, path: Path, out: Path) -> tuple[float, float, float, int]:
    """(plan s, save s, load + compare s, bytes) for the files at `path`, against the broker as it is."""
    env = {"TOPO_URL": target.url, "TOPO_USER": target.user, "TOPO_PASSWORD": target.password}
    options = dict(url=None, user=None, password=None, ca_cert=None, client_cert=None, client_key=None)
    connection = resolve_connection(env=env, broker=None, insecure=False, timeout=None, **options)
    client = ManagementClient(connection)
    started = time.perf_counter()
    desired = load_topology([str(path)], env={}).desired
    actual = read_actual(client, scope(desired), manages_access(desired))
    plan = build_plan(client, desired, actual)
    planned = time.perf_counter()
    size = save(
        str(out), plan, actual, read_identity(client), url=connection.url, user=connection.user,
        material=connection.password, files=[str(path)], var_files=[], targets=[], vhosts=[],
        plan_json=plan_to_json(plan),
    )  # fmt: skip
    saved = time.perf_counter()
    problems = staleness(load(str(out)), plan, actual, connection.password)
    checked = time.perf_counter()
    assert not problems, problems[:3]
    return planned - started, saved - planned, checked - saved, size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--url")
    parser.add_argument("--user", default="guest")
    parser.add_argument("--password", default="guest")
    args = parser.parse_args()
    from bench import Api

    with broker(args) as (target, kind), Api(target) as admin, tempfile.TemporaryDirectory() as work:
        vhost = f"bench-saved-{args.n}"
        topology = Topology(args.n, vhost)
        base, changed = Path(work) / "base.yaml", Path(work) / "changed.yaml"
        base.write_text(topology.yaml())
        changed.write_text(topology.yaml(changed=True))
        plan_file = Path(work) / "plan.json"
        print(f"N={args.n}, {args.runs} run(s), {kind}", flush=True)
        delete_vhost(admin, vhost)
        create = in_process(target, base, plan_file)
        print(
            f"create plan ({2 * args.n + args.n // 10 + 2} changes): file {create[3]:,} bytes; plan {create[0]:.2f} s, "
            f"save {create[1]:.2f} s, load + compare {create[2]:.2f} s",
            flush=True,
        )
        timings: dict[str, list[float]] = {k: [] for k in ("plan", "plan --out", "apply", "apply FILE")}
        sizes = []
        for run in range(args.runs):
            print(f"run {run + 1}: resetting to the base topology...", flush=True)
            topo(target, "apply", "--auto-approve", "--allow-data-loss", "-f", str(base))
            replace = in_process(target, changed, plan_file)
            sizes.append(replace[3])
            print(
                f"  10% replace plan: file {replace[3]:,} bytes; plan {replace[0]:.2f} s, save {replace[1]:.2f} s, "
                f"load + compare {replace[2]:.2f} s",
                flush=True,
            )
            timings["plan"].append(topo(target, "plan", "-f", str(changed)))
            timings["plan --out"].append(topo(target, "plan", "-f", str(changed), "--out", str(plan_file)))
            timings["apply FILE"].append(topo(target, "apply", str(plan_file)))
            topo(target, "apply", "--auto-approve", "--allow-data-loss", "-f", str(base))
            timings["apply"].append(topo(target, "apply", "--auto-approve", "-f", str(changed)))
        delete_vhost(admin, vhost)
    print("\n| measurement (10% replace plan) | median s |\n|---|---:|")
    for label, values in timings.items():
        print(f"| topo {label} | {statistics.median(values):.2f} |")
    overhead = statistics.median(timings["apply FILE"]) - statistics.median(timings["apply"])
    print(
        f"\napply FILE - apply: {overhead:+.2f} s; plan --out - plan: "
        f"{statistics.median(timings['plan --out']) - statistics.median(timings['plan']):+.2f} s; "
        f"10% replace plan file {statistics.median(sizes):,.0f} bytes"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
