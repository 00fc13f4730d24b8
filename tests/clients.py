"""Real client applications for the tests: a Celery worker and client, pika consumers and publishers.

Each runs as its application would (the Celery worker in its own process, started by the `celery`
command; pika applications on their own connections in threads) against the test node's AMQP
port, and stops within a few seconds when asked.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pika
import pika.exceptions

CELERY_APP = """
import os

from celery import Celery

app = Celery("celeryapp", broker=os.environ["TOPO_CELERY_BROKER"], backend="rpc://")
app.conf.update(
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    worker_prefetch_multiplier=1,
)
if os.environ.get("TOPO_CELERY_QUORUM"):
    app.conf.task_default_queue_type = "quorum"


@app.task(name="add")
def add(x, y):
    return x + y
"""

# A client that sends one task, prints its result, and holds its connection (and so its rpc://
# result queue) until its standard input is closed.
CELERY_CLIENT = """
import sys

from celeryapp import app

result = app.send_task("add", (2, 3))
print(result.get(timeout=30), flush=True)
sys.stdin.read()
"""


def amqp_url(broker: Any, vhost: str) -> str:
    port = broker.node.amqp_port if broker.node is not None else int(os.environ.get("TOPO_TEST_AMQP_PORT", "5672"))
    host = urlsplit(broker.url).hostname or "127.0.0.1"
    return (
        f"amqp://{quote(broker.user, safe='')}:{quote(broker.password, safe='')}@{host}:{port}/{quote(vhost, safe='')}"
    )


@dataclass
class Celery:
    """A Celery project directory: the app module, the worker process, and one-shot commands."""

    directory: Path
    url: str
    quorum: bool = False  # task_default_queue_type = "quorum" (and native delayed delivery)
    processes: list[subprocess.Popen[str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        (self.directory / "celeryapp.py").write_text(textwrap.dedent(CELERY_APP), encoding="utf-8")
        (self.directory / "celeryclient.py").write_text(textwrap.dedent(CELERY_CLIENT), encoding="utf-8")

    @property
    def env(self) -> dict[str, str]:
        env = {**os.environ, "TOPO_CELERY_BROKER": self.url, "PYTHONPATH": str(self.directory)}
        return {**env, "TOPO_CELERY_QUORUM": "1"} if self.quorum else env

    def command(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "celery", "-A", "celeryapp", *args],
            cwd=self.directory,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def ping(self) -> str:
        """`celery inspect ping`: the replying workers' output ('' when none replied)."""
        done = self.command("inspect", "ping", "--timeout", "5")
        return done.stdout if done.returncode == 0 else ""

    def start_worker(self, name: str = "w1@topo") -> subprocess.Popen[str]:
        log = (self.directory / f"{name}.log").open("w", encoding="utf-8")
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "celeryapp",
                "worker",
                "--pool",
                "solo",
                "-n",
                name,
                "-E",
                "-l",
                "INFO",
            ],
            cwd=self.directory,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.processes.append(worker)
        deadline = time.monotonic() + 60
        while f"{name} ready." not in self.log(name):
            if worker.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the Celery worker did not start:\n{self.log(name)}")
            time.sleep(0.2)
        return worker

    def start_client(self) -> subprocess.Popen[str]:
        """A running client that has sent a task and got its result (5) through rpc://."""
        client = subprocess.Popen(
            [sys.executable, "celeryclient.py"],
            cwd=self.directory,
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.processes.append(client)
        assert client.stdout is not None
        line = client.stdout.readline().strip()
        if line != "5":
            client.kill()
            raise AssertionError(f"the Celery client got {line!r}: {client.communicate()[1][-2000:]}")
        return client

    def log(self, name: str = "w1@topo") -> str:
        path = self.directory / f"{name}.log"
        return path.read_text(encoding="utf-8")[-4000:] if path.exists() else ""

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is not None:
                continue
            if process.stdin is not None:
                with contextlib.suppress(OSError):
                    process.stdin.close()
            else:
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        self.processes.clear()


@contextlib.contextmanager
def celery_project(directory: Path, url: str, quorum: bool = False) -> Iterator[Celery]:
    project = Celery(directory, url, quorum)
    try:
        yield project
    finally:
        project.stop()


class PikaApp(threading.Thread):
    """A pika application on its own connection: `setup` declares what it needs on the channel and
    returns the queues to consume; it then consumes (acking) until stopped, counting deliveries."""

    def __init__(self, url: str, setup: Callable[[Any], list[str]]):
        super().__init__(daemon=True)
        self.url, self.setup = url, setup
        self.ready, self.stopping = threading.Event(), threading.Event()
        self.consumed = 0
        self.cancelled_by_broker = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            connection = pika.BlockingConnection(pika.URLParameters(self.url))
            channel = connection.channel()
            channel.add_on_cancel_callback(self._cancelled)
            for queue in self.setup(channel):
                channel.basic_consume(queue, self._deliver)
            self.ready.set()
            while not self.stopping.is_set():
                connection.process_data_events(time_limit=0.05)
            connection.close()
        except BaseException as exc:  # reported to the test through wait_ready/stop
            self.error = exc
            self.ready.set()

    def _deliver(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        self.consumed += 1
        channel.basic_ack(method.delivery_tag)

    def _cancelled(self, frame: Any) -> None:
        self.cancelled_by_broker += 1

    def start_and_wait(self) -> PikaApp:
        self.start()
        assert self.ready.wait(30), "the pika application did not start"
        if self.error is not None:
            raise AssertionError(f"the pika application failed: {self.error!r}")
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.join(30)
        if self.error is not None:
            raise AssertionError(f"the pika application failed: {self.error!r}")


class ConfirmingPublisher(threading.Thread):
    """Publishes persistent messages with publisher confirms and the mandatory flag until stopped.

    sent = confirmed + returned (unroutable, mandatory) + nacked; pika's blocking channel waits for
    each confirm, so every count is exact when the thread ends.
    """

    def __init__(self, url: str, exchange: str, routing_key: str):
        super().__init__(daemon=True)
        self.url, self.exchange, self.routing_key = url, exchange, routing_key
        self.stopping, self.running = threading.Event(), threading.Event()
        self.sent = self.confirmed = self.returned = self.nacked = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            connection = pika.BlockingConnection(pika.URLParameters(self.url))
            channel = connection.channel()
            channel.confirm_delivery()
            properties = pika.BasicProperties(delivery_mode=2)
            while not self.stopping.is_set():
                self.sent += 1
                try:
                    channel.basic_publish(
                        self.exchange, self.routing_key, b"m%d" % self.sent, properties, mandatory=True
                    )
                    self.confirmed += 1
                except pika.exceptions.UnroutableError:
                    self.returned += 1
                except pika.exceptions.NackError:
                    self.nacked += 1
                self.running.set()
            connection.close()
        except BaseException as exc:
            self.error = exc
            self.running.set()

    def start_and_wait(self) -> ConfirmingPublisher:
        self.start()
        assert self.running.wait(30), "the publisher did not start"
        return self

    def stop(self) -> dict[str, int]:
        self.stopping.set()
        self.join(30)
        if self.error is not None:
            raise AssertionError(f"the publisher failed: {self.error!r}")
        return {"sent": self.sent, "confirmed": self.confirmed, "returned": self.returned, "nacked": self.nacked}


def wait_for(condition: Callable[[], bool], timeout: float = 20, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
