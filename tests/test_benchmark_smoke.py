"""The benchmark script still runs end to end (tiny N, one run), so it cannot rot between the real runs.

It checks that every measurement and every ratio is reported, not the numbers: timings at N=100 say
nothing about the targets, which are stated for large topologies.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from rabbitmq_node import Broker

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench.py"

MEASUREMENT_ROWS = [
    "raw bulk import (POST /api/definitions/{vhost})",
    "raw sequential PUT/POST",
    "raw parallel PUT/POST",
    "raw GET /api/definitions/{vhost}",
    "topo apply (create)",
    "topo plan (no-op)",
    "topo apply (no-op)",
    "topo apply (10% replace)",
    "topo export (--vhost, --no-users)",
    "topo start-up only (python -m topo version)",
]
RATIO_LINES = [
    "topo plan (no-op) / raw GET definitions",
    "topo apply (create) / raw bulk import",
    "raw sequential PUT / topo apply (create)",
    "topo apply (no-op) / topo plan (no-op)",
    "topo export / raw GET definitions",
    "peak RSS of topo (MB)",
]


@pytest.mark.broker
def test_benchmark_runs_and_reports_every_row(broker: Broker, tmp_path: Path) -> None:
    # A vhost of its own, so a shared broker's real `bench-100` (or a parallel run) is not disturbed.
    prefix = f"t-bench-smoke-{secrets.token_hex(3)}-"
    out_json = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOPO_")}
    command = [sys.executable, str(BENCH), "--n", "100", "--runs", "1", "--vhost-prefix", prefix]
    command += ["--url", broker.url, "--user", broker.user, "--password", broker.password, "--json", str(out_json)]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,  # a bound, not the budget: this takes ~10 s on a 2-core machine
        check=False,
    )
    assert result.returncode == 0, f"benchmark failed:\n{result.stderr[-3000:]}\n{result.stdout[-2000:]}"
    table_rows = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    for label in MEASUREMENT_ROWS + RATIO_LINES:
        assert any(line.startswith(f"| {label} | ") for line in table_rows), f"no row {label!r}:\n{result.stdout}"
    assert "### N = 100" in result.stdout

    document = json.loads(out_json.read_text())
    (only,) = document["results"]
    assert only["n"] == 100
    assert set(only["median_seconds"]) == set(MEASUREMENT_ROWS)
    assert all(seconds > 0 for seconds in only["median_seconds"].values())
    assert [ratio["label"] for ratio in only["ratios"]] == RATIO_LINES
    assert document["machine"]["rabbitmq_version"]


RUN_ALL = BENCH.parent / "run_all.py"
RUN_ALL_ROWS = [
    "plan (no-op) / raw GET definitions, N=100 ",
    "plan (no-op) / raw GET definitions, N=300 ",
    "plan growth per object, N=100→300",
    "1% change (3 queue replaces + 3 bindings)",
    "apply (create) / raw bulk import, N=100 ",
    "start-up: topo version",
    "start-up: topo validate of a 10-line file",
    "floor of validate: importing typer, pydantic, PyYAML and topo's models",
    "floor: the same content as plain dicts (json.load, traced)",
    "peak RSS MB: validate,",
    "peak RSS MB: plan,",
    "peak RSS MB: plan --json,",
]


@pytest.mark.broker
def test_run_all_quick_reports_every_target(broker: Broker, tmp_path: Path) -> None:
    prefix = f"t-run-all-{secrets.token_hex(3)}-"
    out_json = tmp_path / "all.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOPO_")}
    command = [sys.executable, str(RUN_ALL), "--quick", "--vhost-prefix", prefix, "--json", str(out_json)]
    command += ["--url", broker.url, "--user", broker.user, "--password", broker.password]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert result.returncode == 0, f"run_all failed:\n{result.stderr[-3000:]}\n{result.stdout[-2000:]}"
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    for label in RUN_ALL_ROWS:
        assert any(line.startswith(f"| {label}") for line in rows), f"no row {label!r}:\n{result.stdout}"
    document = json.loads(out_json.read_text())
    assert len(document["rows"]) == len(RUN_ALL_ROWS)
    assert all(isinstance(row["value"], float) for row in document["rows"])
    # Timings and memory are positive; a growth per object at these tiny sizes may be noise below zero.
    assert all(row["value"] > 0 for row in document["rows"] if not row["label"].startswith("plan growth"))
