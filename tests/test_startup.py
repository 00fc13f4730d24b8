"""Start-up (issue 13): what each quick command imports, in a fresh interpreter as a user starts it.

Counted in modules rather than seconds, so that the test holds on a loaded machine and still fails when
a change brings pydantic back to `topo version` or the planner back to `topo validate`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

# The file benchmarks/run_all.py times validate on.
SMALL = Path(__file__).resolve().parent.parent / "benchmarks" / "startup.yaml"

# run() ends the process with os._exit; the probes watch what it leaves behind, so they take sys.exit.
PROBE = """\
import json, os, sys
os._exit = sys.exit
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


@pytest.mark.parametrize(
    ("annotation", "value", "expected"),
    [
        (str, "a.yaml", "a.yaml"),
        (str | None, "a.yaml", "a.yaml"),
        (bool, True, True),
        (list[str] | None, ("a.yaml", "b.yaml"), ["a.yaml", "b.yaml"]),
        (list[str], ["a.yaml"], ["a.yaml"]),
    ],
)
def test_plain_option_values_need_no_adapter(annotation: Any, value: Any, expected: Any) -> None:
    """What typer's pydantic adapter would hand back unchanged is handed back without building one."""
    from topo.cli_defer import _as_given

    given = _as_given(annotation, value)
    assert given == expected and type(given) is type(expected)


@pytest.mark.parametrize(
    ("annotation", "value"),
    [(int, 5), (float, 1), (str, 5), (bool, "yes"), (list[int], (1,)), (list[str], ("a", 1)), (str | int, "a")],
)
def test_other_option_values_go_to_the_adapter(annotation: Any, value: Any) -> None:
    from topo.cli_defer import _UNSURE, _as_given

    assert _as_given(annotation, value) is _UNSURE


FIRST_CONNECT = """\
import os, sys
os._exit = sys.exit
seen = []
def hook(event, args):
    if event == "socket.connect" and not seen:
        seen.append(sorted(m for m in ("pydantic", "yaml", "topo.model", "topo.read") if m in sys.modules))
sys.addaudithook(hook)
sys.argv = ["topo", *sys.argv[1:]]
from topo.__main__ import run
try:
    run()
except SystemExit:
    pass
sys.stderr.write("\\nFIRST " + repr(seen))
"""


def test_plan_sends_its_first_request_before_importing_the_models(tmp_path: Path) -> None:
    """topo.first_read: the definitions request leaves before pydantic, the models, the reader and the
    YAML parser are imported (requests is imported meanwhile, on the main thread): 0.5 s of start-up that
    the broker's own work now covers. A port nobody listens on will do: the attempt is what is watched."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    topology = tmp_path / "t.yaml"
    topology.write_text("vhosts:\n  shop:\n    queues:\n      orders: {}\n")
    env = {**os.environ, "TOPO_URL": f"http://127.0.0.1:{port}", "TOPO_TIMEOUT": "2"}
    done = subprocess.run(
        [sys.executable, "-c", FIRST_CONNECT, "plan", "-f", str(topology)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
        timeout=120,
        env=env,
    )
    assert "\nFIRST [[]]" in done.stderr, done.stderr[-2000:]


def _topo(*args: str) -> subprocess.CompletedProcess[bytes]:
    """`python -m topo ARGS`, the real entry point with its os._exit."""
    return subprocess.run(
        [sys.executable, "-m", "topo", *args],
        capture_output=True,
        cwd=Path(__file__).resolve().parent.parent,
        timeout=60,
    )


def _definitions(tmp_path: Path, queues: int) -> Path:
    """A definitions file whose export runs to several pipe buffers (64 KiB each on Linux)."""
    definitions = {
        "vhosts": [{"name": "shop"}],
        "queues": [
            {"name": f"orders-{i}", "vhost": "shop", "durable": True, "auto_delete": False, "arguments": {}}
            for i in range(queues)
        ],
    }
    path = tmp_path / "definitions.json"
    path.write_text(json.dumps(definitions))
    return path


def test_the_fast_exit_keeps_every_byte_and_the_exit_code(tmp_path: Path) -> None:
    """run() skips the interpreter's teardown: what was printed must still arrive whole, to a pipe (block
    buffered, so the last of it is still in the buffer at the exit), and the command's code must be kept."""
    definitions = _definitions(tmp_path, 15000)
    written = tmp_path / "export.yaml"
    assert _topo("export", "--from-definitions", str(definitions), "-o", str(written)).returncode == 0
    done = _topo("export", "--from-definitions", str(definitions))
    assert done.returncode == 0 and len(done.stdout) > 4 * 65536
    assert done.stdout == written.read_bytes()

    broken = tmp_path / "bad.yaml"
    broken.write_text("vhosts:\n  shop:\n    queues:\n      orders: {durable: maybe}\n")
    done = _topo("validate", "-f", str(broken))
    assert done.returncode == 1 and b"durable" in done.stderr + done.stdout
    assert b"Traceback" not in done.stderr

    done = _topo("plan", "--no-such-option")
    assert done.returncode == 1 and b"No such option" in done.stderr


def test_a_reader_that_leaves_early_is_no_failure(tmp_path: Path) -> None:
    """`topo export ... | head`: the pipe closes under a full buffer; the command ends without a traceback
    and with its own exit code."""
    with subprocess.Popen(
        [sys.executable, "-m", "topo", "export", "--from-definitions", str(_definitions(tmp_path, 15000))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=Path(__file__).resolve().parent.parent,
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        assert process.stdout.read(100)
        process.stdout.close()
        error = process.stderr.read()
        code = process.wait(timeout=60)
    assert b"Traceback" not in error and b"BrokenPipe" not in error, error
    assert code == 0, error
