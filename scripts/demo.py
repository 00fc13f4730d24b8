"""Apply examples/ to a throwaway RabbitMQ node, then prove a fresh plan is empty.

Usage: python scripts/demo.py [--keep]   (--keep leaves the node running and prints how to reach it)
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from rabbitmq_node import RabbitNode  # noqa: E402  (the test suite's throwaway node)


def topo(*args: str, env: dict[str, str]) -> int:
    command = [sys.executable, "-m", "topo", *args]
    print(f"\n$ topo {' '.join(args)}", flush=True)
    return subprocess.call(command, env=env, cwd=ROOT)


def main() -> int:
    keep = "--keep" in sys.argv[1:]
    examples = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "examples").glob("*/topology.yaml"))
    node = RabbitNode()
    # A terminated demo cleans up like a finished one: SIGTERM runs the finally clauses below too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = Path(tempfile.mkdtemp(prefix="topo-demo-"))
    try:
        print("Starting a throwaway RabbitMQ node…", flush=True)
        node.start()
        print(f"Node {node.nodename}, data in {node.base_dir} (removed at the end)", flush=True)
        env = {**os.environ, "TOPO_URL": node.url, "TOPO_USER": "guest", "TOPO_PASSWORD": "guest"}
        files = [arg for path in examples for arg in ("-f", path)]
        exported = str(work / "sensors-export.yaml")
        steps = [
            ("validate", *files),
            ("plan", *files),
            ("apply", "--auto-approve", *files),
            ("plan", "--detailed-exitcode", *files),
            # Adoption: the broker's sensors vhost back as YAML, which describes the broker exactly.
            ("export", "--vhost", "sensors", "--keep-hashes", "-o", exported),
            ("plan", "--detailed-exitcode", "-f", exported),
        ]
        for step in steps:
            code = topo(*step, env=env)
            if code != 0:
                print(f"\nFAILED: topo {step[0]} exited {code}", file=sys.stderr)
                return 1
        print(
            f"\nDone: {len(examples)} example topologies applied to {node.url}; a fresh plan is empty, and so "
            "is a plan of the exported sensors vhost."
        )
        if keep:
            print(
                f"The node keeps running: TOPO_URL={node.url} (guest/guest); stop it with "
                f"rabbitmqctl -n {node.nodename} stop, then remove {node.base_dir} and {work} (the export)"
            )
        return 0
    finally:
        if not keep:
            node.stop()  # also deletes the node's data directory
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
