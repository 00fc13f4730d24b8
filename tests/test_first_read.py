"""The definitions request sent before topo imports requests and its models (topo.first_read): on a
real broker it answers what the ManagementClient answers, and everything but a complete 200 is left to
the client, which asks again and reports as it always does."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
import requests

from topo.client import ManagementClient
from topo.connection import Connection
from topo.first_read import EarlyDefinitions

pytestmark = pytest.mark.broker


def _connection(broker: Any, **changes: Any) -> Connection:
    return Connection(**{"url": broker.url, "user": broker.user, "password": broker.password, **changes})


@pytest.fixture
def populated(broker: Any, vhost_name: str) -> str:
    base, auth = broker.url, broker.auth
    vhost = quote(vhost_name, safe="")
    requests.put(f"{base}/api/vhosts/{vhost}", auth=auth, timeout=30).raise_for_status()
    definitions = {
        "queues": [{"name": f"q{i}", "durable": True, "auto_delete": False, "arguments": {}} for i in range(50)],
        "exchanges": [{"name": "ex", "type": "topic", "durable": True, "auto_delete": False, "arguments": {}}],
        "bindings": [
            {
                "source": "ex",
                "destination": f"q{i}",
                "destination_type": "queue",
                "routing_key": f"k.{i}",
                "arguments": {},
            }
            for i in range(50)
        ],
    }
    requests.post(f"{base}/api/definitions/{vhost}", json=definitions, auth=auth, timeout=60).raise_for_status()
    return vhost_name


def test_the_early_answer_is_the_clients_answer(broker: Any, populated: str) -> None:
    early = EarlyDefinitions(_connection(broker), [populated])
    client = ManagementClient(_connection(broker))
    answer = early.answer(client)
    assert early._body is not None, "the early request was not the one answered"
    expected = client.get(f"/api/definitions/{quote(populated, safe='')}", what="read")
    assert answer is not None and answer.status_code == 200
    assert answer.json() == expected  # gzip-compressed on the wire (83 KB for 2.3 MB at 21,000 objects)
    assert len(answer.json()["queues"]) == 50


def test_a_vhost_not_there_yet_is_left_to_the_client(broker: Any, vhost_name: str) -> None:
    early = EarlyDefinitions(_connection(broker), [vhost_name])
    answer = early.answer(ManagementClient(_connection(broker)))
    assert early._body is None
    assert answer is not None and answer.status_code in (400, 404)  # as read_broker expects it


def test_a_refused_login_is_answered_by_the_client(broker: Any, populated: str) -> None:
    """401 is an answer read_broker handles itself (a non-administrator's, then its listings), from the client."""
    wrong = _connection(broker, password="not-the-password")
    early = EarlyDefinitions(wrong, [populated])
    answer = early.answer(ManagementClient(wrong))
    assert early._body is None
    assert answer is not None and answer.status_code == 401


def test_a_proxy_in_the_environment_leaves_the_request_to_requests(
    broker: Any, populated: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The standard library's client would ignore the proxy; requests honours it (and NO_PROXY here).
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    early = EarlyDefinitions(_connection(broker), [populated])
    assert early._thread is None
    answer = early.answer(ManagementClient(_connection(broker)))
    assert answer is not None and len(answer.json()["queues"]) == 50


def test_nothing_is_sent_for_no_vhost(broker: Any) -> None:
    early = EarlyDefinitions(_connection(broker), [])
    assert early._thread is None
    assert early.answer(ManagementClient(_connection(broker))) is None
