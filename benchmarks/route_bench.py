"""How long `topo route` takes on the benchmark topology (bench.py's: N queues, N/10 topic exchanges,
N bindings, one policy; 21,002 objects at N=10,000). Offline: no broker needed.

    python benchmarks/route_bench.py              # N=10000, 5 runs
    python benchmarks/route_bench.py --n 1000 --runs 3

Rows: the whole command as users run it (a child process: start-up, YAML parsing, validation,
simulation, printing), then the simulator alone in-process (building the routing view of the state, and
routing 1,000 messages), so it is clear where the time goes.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench import Topology as BenchTopology  # noqa: E402

from topo.load import load_topology  # noqa: E402
from topo.route import Message, Topology, route  # noqa: E402


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, timeout=600)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="queues (a multiple of 10)")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    bench = BenchTopology(args.n, f"bench-{args.n}")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "topology.yaml"
        path.write_text(bench.yaml(), encoding="utf-8")
        objects = args.n + bench.exchange_count + args.n + 2
        key = f"k.{args.n // 2}"
        exchange = bench.exchange(args.n // 2)
        base = [sys.executable, "-m", "topo"]
        command = [*base, "route", "-f", str(path), "--vhost", bench.vhost, "-e", exchange, "-k", key]
        env_note = f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
        rows = []
        rows.append(("topo route (whole command)", [timed(command) for _ in range(args.runs)]))
        rows.append(
            (
                "topo validate (same file, for comparison)",
                [timed([*base, "validate", "-f", str(path)]) for _ in range(args.runs)],
            )
        )
        rows.append(("topo version (start-up only)", [timed([*base, "version"]) for _ in range(args.runs)]))
        desired = load_topology([str(path)]).desired
        build, thousand = [], []
        rng = random.Random(1)
        for _ in range(args.runs):
            started = time.perf_counter()
            topology = Topology.of(desired.objects, bench.vhost)
            build.append(time.perf_counter() - started)
            messages = [(bench.exchange(i), Message((f"k.{i}",))) for i in (rng.randrange(args.n) for _ in range(1000))]
            started = time.perf_counter()
            for name, message in messages:
                assert route(topology, name, message).queues
            thousand.append(time.perf_counter() - started)
        rows.append(("simulator: routing view of the state (Topology.of)", build))
        rows.append(("simulator: 1,000 messages routed", thousand))
    print(f"# topo route, N={args.n} ({objects:,} objects), {args.runs} runs, {env_note}\n")
    print("| measurement | median s | min s | max s |")
    print("|---|---:|---:|---:|")
    for name, samples in rows:
        print(f"| {name} | {statistics.median(samples):.3f} | {min(samples):.3f} | {max(samples):.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
