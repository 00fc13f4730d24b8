"""The client survives what real networks and brokers do: connections dropped mid-way are retried."""

from __future__ import annotations

import contextlib
import json
import socket
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from cli_runner import run_topo

pytestmark = pytest.mark.broker


class DroppingProxy:
    """A TCP proxy to the broker that closes its first `drop` connections without answering."""

    def __init__(self, target_host: str, target_port: int, drop: int):
        self.target = (target_host, target_port)
        self.drop = drop
        self.accepted = 0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            self.accepted += 1
            if self.accepted <= self.drop:
                client.close()  # as a broker does to a keep-alive connection after a 400
                continue
            upstream = socket.create_connection(self.target)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def proxy(broker: Any) -> Iterator[DroppingProxy]:
    parts = urlsplit(broker.url)
    dropping = DroppingProxy(parts.hostname or "127.0.0.1", parts.port or 15672, drop=2)
    yield dropping
    dropping.close()


def test_dropped_connections_are_retried(broker: Any, proxy: DroppingProxy, vhost_name: str, tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(textwrap.dedent(f"vhosts:\n  {json.dumps(vhost_name)}:\n    queues:\n      q: {{}}\n"))
    env = {"TOPO_URL": f"http://127.0.0.1:{proxy.port}", "TOPO_USER": broker.user, "TOPO_PASSWORD": broker.password}
    result = run_topo("apply", "--auto-approve", "-f", str(path), env=env)
    assert result.code == 0, result.output
    assert proxy.accepted >= 3  # two dropped, then served
    assert run_topo("plan", "--detailed-exitcode", "-f", str(path), env=env).code == 0


def test_unreachable_broker_is_a_clear_error_after_retries(tmp_path: Path) -> None:
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    path = tmp_path / "t.yaml"
    path.write_text("vhosts:\n  v: {}\n")
    result = run_topo("plan", "-f", str(path), env={"TOPO_URL": f"http://127.0.0.1:{port}"})
    assert result.code == 1
    assert f"cannot reach http://127.0.0.1:{port}: connection refused" in result.stderr
    assert "Traceback" not in result.output


def test_a_file_with_errors_does_not_wait_for_a_silent_broker(tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    # A listener that accepts connections and never answers: the early read of the broker hangs.
    silent = socket.create_server(("127.0.0.1", 0))
    port = silent.getsockname()[1]
    path = tmp_path / "bad.yaml"
    path.write_text("vhosts:\n  v:\n    queues:\n      q: {durabel: true}\n")
    try:
        started = time.monotonic()
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "topo",
                "plan",
                "-f",
                str(path),
                "--url",
                f"http://127.0.0.1:{port}",
                "--timeout",
                "5",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        elapsed = time.monotonic() - started
    finally:
        silent.close()
    assert done.returncode == 1 and "durabel" in done.stderr
    # Waiting for the read (5 s per attempt, 5 attempts) would take half a minute.
    assert elapsed < 15, elapsed
