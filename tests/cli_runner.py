"""Run the real `topo` entry point in-process and capture what it prints and its exit code."""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from topo.cli import main
from topo.redact import forget_secrets


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@contextlib.contextmanager
def _environment(env: Mapping[str, str | None]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in env}
    try:
        for name, value in env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def broker_env(broker: Any, **overrides: str | None) -> dict[str, str | None]:
    """The environment that points topo at the test broker (as its administrator, without colour)."""
    env: dict[str, str | None] = {
        "TOPO_URL": broker.url,
        "TOPO_USER": broker.user,
        "TOPO_PASSWORD": broker.password,
        "NO_COLOR": "1",
    }
    return {**env, **overrides}


def run_topo(*args: str, env: Mapping[str, str | None] | None = None, cwd: str | None = None) -> Result:
    """`topo ARGS...` with `env` overriding the environment; never raises for a non-zero exit."""
    stdout, stderr = io.StringIO(), io.StringIO()
    old_argv, old_cwd = sys.argv, os.getcwd()
    sys.argv = ["topo", *args]
    code = 0
    # A real run starts with no known secrets: those of earlier runs in this process would scrub
    # innocent text (a password "123" seen by one test would hide a queue named "123" in the next).
    forget_secrets()
    try:
        if cwd:
            os.chdir(cwd)
        with _environment(env or {}), contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                main()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = old_argv
        os.chdir(old_cwd)
    return Result(code, stdout.getvalue(), stderr.getvalue())
