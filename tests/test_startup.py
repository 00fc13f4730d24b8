"""Start-up (issue 13): what each quick command imports, in a fresh interpreter as a user starts it.

Counted in modules rather than seconds, so that the test holds on a loaded machine and still fails when
a change brings pydantic back to `topo version` or the planner back to `topo validate`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

# The file benchmarks/run_all.py times validate on.
SMALL = Path(__file__).resolve().parent.parent / "benchmarks" / "startup.yaml"

PROBE = """\
import json, sys
sys.argv = ["topo", *sys.argv[1:]]
from topo.__main__ import run
try:
    run()
except SystemExit as exc:
    code = exc.code
sys.stdout.flush()
sys.stderr.write("\\nMODULES " + json.dumps([m.split(".")[0] if m.split(".")[0] != "topo" else m for m in sys.modules]))
sys.stderr.write(" CODE " + json.dumps(code))
"""


def _run(*args: str) -> tuple[str, set[str], object]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
        timeout=60,
    )
    head, _, tail = done.stderr.rpartition("\nMODULES ")
    modules, _, code = tail.partition(" CODE ")
    return done.stdout + head, set(json.loads(modules)), json.loads(code)


def test_version_imports_neither_pydantic_nor_requests_nor_yaml() -> None:
    output, modules, code = _run("version")
    assert output.startswith("topo ") and code == 0
    assert not {"pydantic", "pydantic_core", "requests", "yaml"} & modules


def test_help_imports_no_pydantic() -> None:
    output, modules, code = _run("--help")
    assert "validate" in output and code == 0
    assert "pydantic" not in modules


def test_validate_imports_neither_requests_nor_the_planner() -> None:
    output, modules, code = _run("validate", "-f", str(SMALL))
    assert "Valid: 1 file(s), 1 vhost(s), 4 object(s)." in output and code == 0
    assert "requests" not in modules
    assert not {"topo.diff", "topo.holding", "topo.migrate", "topo.client", "topo.engine"} & modules


def test_an_option_given_is_still_converted_and_checked() -> None:
    # typer's adapters are built only for values that were given: a bad one is refused as before.
    output, _, code = _run("plan", "--timeout", "0", "-f", "none.yaml")
    assert code == 1
    assert "Invalid value for '--timeout'" in output and "greater than or equal to 0.1" in output
