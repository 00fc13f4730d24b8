"""benchmarks/migrate_bench.py still runs end to end (tiny N, one run), so it cannot rot between the
real runs. It checks that every case and column is reported, not the numbers: a 200-message move says
nothing about the rate."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from rabbitmq_node import Broker

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "migrate_bench.py"
CASES = ["classic -> quorum", "classic -> classic (arguments)"]


@pytest.mark.broker
def test_migrate_benchmark_runs_and_reports_every_case(broker: Broker, tmp_path: Path) -> None:
    if broker.node is None:
        pytest.skip("needs the test node's AMQP port (TOPO_TEST_URL points at an external broker)")
    prefix = f"t-migrate-bench-{secrets.token_hex(3)}-"
    out_json = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOPO_")}
    command = [sys.executable, str(BENCH), "--n", "200", "--runs", "1", "--vhost-prefix", prefix]
    command += ["--url", broker.url, "--user", broker.user, "--password", broker.password]
    command += ["--amqp-port", str(broker.node.amqp_port), "--json", str(out_json)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert result.returncode == 0, f"benchmark failed:\n{result.stderr[-3000:]}\n{result.stdout[-2000:]}"
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    for case in CASES:
        [row] = [line for line in rows if line.startswith(f"| {case} | ")]
        assert len(row.strip("|").split("|")) == 7, row
    document = json.loads(out_json.read_text())
    assert document["n"] == 200 and set(document["seconds"]) == set(CASES)
    for samples in document["seconds"].values():
        assert all(len(values) == 1 and values[0] > 0 for values in samples.values())
    vhosts = requests.get(f"{broker.url}/api/vhosts", auth=broker.auth, timeout=30).json()
    assert not [v["name"] for v in vhosts if v["name"].startswith(prefix)]  # the benchmark's vhosts are deleted
