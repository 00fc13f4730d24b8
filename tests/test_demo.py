"""scripts/demo.py (what scripts/demo.sh runs after setup) leaves no node and no folder behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# It starts a real node of its own (and needs RabbitMQ installed, like the broker tests).
pytestmark = pytest.mark.broker


def test_the_demo_runs_and_cleans_up_after_itself(tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch), "NO_COLOR": "1"}
    result = subprocess.run(
        [sys.executable, "scripts/demo.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Done:" in result.stdout
    node_dir = re.search(r"data in (\S+) \(removed at the end\)", result.stdout)
    assert node_dir is not None, result.stdout[-2000:]
    assert not Path(node_dir.group(1)).exists()  # the node's data directory
    assert list(scratch.iterdir()) == []  # the work folder with the export
    name = re.search(r"Node (\S+@localhost)", result.stdout)
    assert name is not None
    # No process of that node is left running.
    leftover = subprocess.run(["pgrep", "-f", name.group(1)], capture_output=True, text=True)
    assert leftover.stdout.strip() == "", leftover.stdout
