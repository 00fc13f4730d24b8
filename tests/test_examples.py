"""The example topologies in examples/ stay valid, apply cleanly to a real broker, and converge.

Every examples/*/topology.yaml is picked up automatically: a new example is tested without
touching this file. Offline, each must pass `topo validate`. Against the test node, each is
applied, must then plan "No changes", and a second apply must change nothing; finally all
examples are applied together, which their distinct vhosts are meant to allow. The vhosts they
create are deleted before (leftovers of an interrupted run) and after each test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from cli_runner import Result, broker_env, run_topo
from rabbitmq_node import Broker
from topo.load import load_topology
from topo.state import Kind

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
EXAMPLES = sorted(EXAMPLES_DIR.glob("*/topology.yaml"))

# The examples read these variables; they must not leak in from a developer's shell. With
# CLOUDAMQP_URL set, a hosted example whose broker: section was uncommented would otherwise
# reach a real hosted broker, and CLOUDAMQP_VHOST would rename the vhost the test cleans up.
EXAMPLE_VARIABLES = ("CLOUDAMQP_URL", "CLOUDAMQP_VHOST", "JOBS_MAX_LENGTH", "CELERY_VHOST")


def example_id(path: Path) -> str:
    return path.parent.name


def vhosts_of(*paths: Path) -> list[str]:
    """The vhosts the example files manage, resolved with the variables' defaults."""
    return list(load_topology([str(p) for p in paths], env={}).desired.vhosts)


def queues_of(path: Path) -> set[tuple[str, str]]:
    desired = load_topology([str(path)], env={}).desired
    return {(key.vhost, key.name) for key in desired.objects if key.kind is Kind.QUEUE}


def topo(broker: Broker, *args: str) -> Result:
    return run_topo(*args, env={**broker_env(broker), **dict.fromkeys(EXAMPLE_VARIABLES)})


def files(*paths: Path) -> list[str]:
    return [arg for path in paths for arg in ("-f", str(path))]


def delete_vhosts(broker: Broker, vhosts: list[str]) -> None:
    for vhost in vhosts:
        response = requests.delete(f"{broker.url}/api/vhosts/{quote(vhost, safe='')}", auth=broker.auth, timeout=60)
        assert response.status_code in (204, 404), f"deleting vhost {vhost!r}: HTTP {response.status_code}"


def broker_queues(broker: Broker, vhost: str) -> set[str]:
    response = requests.get(
        f"{broker.url}/api/queues/{quote(vhost, safe='')}",
        params={"disable_stats": "true", "columns": "name"},
        auth=broker.auth,
        timeout=30,
    )
    response.raise_for_status()
    return {queue["name"] for queue in response.json()}


OwnVhosts = Callable[[list[str]], None]


@pytest.fixture
def own_vhosts(broker: Broker) -> Iterator[OwnVhosts]:
    """Call it with the vhosts a test is about to create: they are deleted now and after the test."""
    created: list[str] = []

    def own(vhosts: list[str]) -> None:
        delete_vhosts(broker, vhosts)  # leftovers of an interrupted run would make the plans differ
        created.extend(vhosts)

    yield own
    delete_vhosts(broker, created)


def test_examples_exist() -> None:
    names = {example_id(p) for p in EXAMPLES}
    assert {"orders", "notifications", "sensors", "hosted", "celery"} <= names, f"found only {sorted(names)}"


def test_example_vhosts_are_distinct() -> None:
    """Each example owns its vhosts, so that all of them can be applied to one broker together."""
    seen: dict[str, str] = {}
    for path in EXAMPLES:
        for vhost in vhosts_of(path):
            assert vhost not in seen, f"vhost {vhost!r} is used by both {seen[vhost]} and {example_id(path)}"
            seen[vhost] = example_id(path)


@pytest.mark.parametrize("path", EXAMPLES, ids=example_id)
def test_example_validates(path: Path) -> None:
    result = run_topo("validate", "-f", str(path), env=dict.fromkeys(EXAMPLE_VARIABLES))
    assert result.code == 0, result.output
    assert result.stdout.startswith("Valid: 1 file(s)"), result.output


@pytest.mark.broker
@pytest.mark.parametrize("path", EXAMPLES, ids=example_id)
def test_example_applies_and_converges(broker: Broker, own_vhosts: OwnVhosts, path: Path) -> None:
    own_vhosts(vhosts_of(path))

    validated = topo(broker, "validate", *files(path))
    assert validated.code == 0, validated.output

    applied = topo(broker, "apply", "--auto-approve", *files(path))
    assert applied.code == 0, applied.output
    assert "Apply complete" in applied.stderr, applied.output
    assert "Verified: the broker matches the topology." in applied.stderr, applied.output

    # apply verifies on its own; this checks the declared queues really are there, by name.
    for vhost, queue in queues_of(path):
        assert queue in broker_queues(broker, vhost), f"queue {queue!r} missing in vhost {vhost!r}"

    planned = topo(broker, "plan", "--detailed-exitcode", *files(path))
    assert planned.code == 0, planned.output
    assert "No changes" in planned.stdout, planned.output

    again = topo(broker, "apply", "--auto-approve", *files(path))
    assert again.code == 0, again.output
    assert "No changes" in again.stdout, again.output
    assert "Apply complete" not in again.stderr, again.output


@pytest.mark.broker
def test_all_examples_apply_together(broker: Broker, own_vhosts: OwnVhosts) -> None:
    """One broker, every example at once: no object is declared twice, nothing collides."""
    own_vhosts(vhosts_of(*EXAMPLES))

    validated = topo(broker, "validate", *files(*EXAMPLES))
    assert validated.code == 0, validated.output
    assert validated.stdout.startswith(f"Valid: {len(EXAMPLES)} file(s)"), validated.output

    applied = topo(broker, "apply", "--auto-approve", *files(*EXAMPLES))
    assert applied.code == 0, applied.output

    planned = topo(broker, "plan", "--detailed-exitcode", *files(*EXAMPLES))
    assert planned.code == 0, planned.output
    assert "No changes" in planned.stdout, planned.output
