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
