"""Shared fixtures: a real RabbitMQ broker for the integration tests.

By default one throwaway node (see ``rabbitmq_node.py``) is started for the
whole session. Set ``TOPO_TEST_URL`` (and ``TOPO_TEST_USER`` /
``TOPO_TEST_PASSWORD``, default guest/guest) to use an existing broker instead.
``TOPO_TEST_RABBITMQ`` (3.10 or 4.3, default 3.10) picks the version of the
nodes the suite starts itself; scripts/test.sh runs the broker tests on both.

A broker that cannot be started makes every test that needs it fail with the
node's log; it is never a skip, so a broken setup cannot pass as green.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

from broker_api import Api
from cli_runner import Result, broker_env, run_topo
from rabbitmq_node import VERSION_VAR, Broker, RabbitNode, selected_version
from roundtrip import EmptyBroker

# Tests using any of these get the `broker` marker, so `-m "not broker"`
# selects the tests that run without RabbitMQ.
BROKER_FIXTURES = frozenset({"broker", "broker_url", "vhost_name", "empty_broker"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        # An argument parametrized directly (e.g. a unit test's `broker` dict)
        # shadows the fixture of that name and needs no broker.
        callspec = getattr(item, "callspec", None)
        if callspec is not None:
            used -= set(callspec.params)
        if used & BROKER_FIXTURES:
            item.add_marker(pytest.mark.broker)


def pytest_configure(config: pytest.Config) -> None:
    # A test run stopped with SIGTERM (CI timeouts, `kill`) tears down like Ctrl-C: the nodes it started are
    # stopped by their fixtures instead of being left running. (Their mounts, for 4.3 nodes, never outlive
    # the node: see rabbitmq_node.py.)
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, interrupt)


def pytest_report_header() -> str:
    where = f"TOPO_TEST_URL={os.environ['TOPO_TEST_URL']}" if os.environ.get("TOPO_TEST_URL") else "own nodes"
    return f"RabbitMQ under test: {selected_version()} ({VERSION_VAR}; {where})"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    # A failure report names the broker version it ran on: scripts/test.sh runs
    # the same tests on two versions and the logs must say which one failed.
    outcome = yield
    report = outcome.get_result()
    if report.failed and item.get_closest_marker("broker") is not None:
        report.sections.append(("RabbitMQ version", f"RabbitMQ {selected_version()} ({VERSION_VAR})"))


@pytest.fixture(autouse=True)
def _broker_for_marked_tests(request: pytest.FixtureRequest) -> None:
    # A test marked `broker` without asking for a fixture still must not run
    # (or pass) without a live broker: requesting it fails the test if the
    # node cannot be started.
    if request.node.get_closest_marker("broker") is not None and "broker" not in request.fixturenames:
        request.getfixturevalue("broker")


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker]:
    """The broker for this session (external via TOPO_TEST_URL, else a local node)."""
    url = os.environ.get("TOPO_TEST_URL")
    if url:
        yield Broker(
            url=url.rstrip("/"),
            user=os.environ.get("TOPO_TEST_USER", "guest"),
            password=os.environ.get("TOPO_TEST_PASSWORD", "guest"),
            node=None,
        )
        return
    node = RabbitNode()
    # Raises (with the node's log) when the node cannot start; pytest caches
    # that error for the session, so each dependent test errors out at once
    # instead of waiting for another start attempt.
    node.start()
    try:
        yield Broker(url=node.url, user=node.user, password=node.password, node=node)
    finally:
        node.stop()


@pytest.fixture(scope="session")
def empty_broker() -> Iterator[EmptyBroker]:
    """A second node that round-trip tests empty between steps (always local: it is wiped)."""
    node = RabbitNode()
    node.start()
    try:
        broker = EmptyBroker(node)
        broker.create_admin()
        yield broker
    finally:
        node.stop()


@pytest.fixture(scope="session")
def rabbitmq_version(broker: Broker) -> tuple[int, int]:
    """(major, minor) of the broker under test, as it reports itself (also for TOPO_TEST_URL)."""
    resp = requests.get(f"{broker.url}/api/overview", auth=broker.auth, timeout=30)
    resp.raise_for_status()
    major, minor = resp.json()["rabbitmq_version"].split(".")[:2]
    return int(major), int(minor)


@pytest.fixture(scope="session")
def broker_url(broker: Broker) -> str:
    """Management API base URL, e.g. ``http://127.0.0.1:15672`` (no trailing slash)."""
    return broker.url


@pytest.fixture
def vhost_name(request: pytest.FixtureRequest, broker: Broker) -> Iterator[str]:
    """A vhost name unique to this test; the vhost is deleted after the test.

    The vhost is not created: creating it is usually what is under test.
    """
    # Readable in the management UI and logs, yet unique across tests,
    # parametrisations and reruns against a shared external broker.
    slug = re.sub(r"[^A-Za-z0-9_]+", "-", request.node.name).strip("-")[:40]
    name = f"t-{slug}-{secrets.token_hex(3)}"
    yield name
    resp = requests.delete(f"{broker.url}/api/vhosts/{quote(name, safe='')}", auth=broker.auth, timeout=30)
    # 404: the test never created it (or deleted it itself).
    if resp.status_code not in (204, 404):
        raise AssertionError(f"cleanup: DELETE vhost {name!r} gave HTTP {resp.status_code}: {resp.text[:300]}")


@pytest.fixture
def api(broker: Any) -> Api:
    return Api(broker)


@pytest.fixture
def topo(broker: Any, tmp_path: Path):
    """Runs topo against the test broker with the topology written to a temp file."""

    def run(*args: str, topology: str | None = None, env: dict[str, str | None] | None = None) -> Result:
        path = tmp_path / "topology.yaml"
        if topology is not None:
            path.write_text(textwrap.dedent(topology), encoding="utf-8")
        return run_topo(*args, "-f", str(path), env={**broker_env(broker), **(env or {})})

    return run
