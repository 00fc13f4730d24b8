"""The definitions request sent before topo imports requests and its models (topo.first_read): on a
real broker it answers what the ManagementClient answers; what the client would retry or report (another
status, a proxy, a network fault) is left to it, to ask again and report as it always does."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
import requests

from topo.client import ManagementClient
from topo.connection import Connection
from topo.errors import BrokerError
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
    assert early.kept == 200, "the early request was not the one answered"
    expected = client.get(f"/api/definitions/{quote(populated, safe='')}", what="read")
    assert answer is not None and answer.status_code == 200
    assert answer.json() == expected  # gzip-compressed on the wire (83 KB for 2.3 MB at 21,000 objects)
    assert len(answer.json()["queues"]) == 50


def _same_answer(early: Any, client: ManagementClient, path: str) -> requests.Response:
    """The early answer, checked against the client's own to the same request: status, reason and body."""
    answer = early.answer(client)
    expected = client.request("GET", path, what="read", ok=(400, 401, 404))
    assert answer is not None and early.kept == answer.status_code == expected.status_code
    assert (answer.reason, answer.json()) == (expected.reason, expected.json())
    return answer


def test_a_vhost_not_there_yet_is_answered_early(broker: Any, vhost_name: str) -> None:
    """A new vhost's 400 (vhost_not_found, on 3.10 and 4.x) is kept as read_broker expects it: one request."""
    early = EarlyDefinitions(_connection(broker), [vhost_name])
    client = ManagementClient(_connection(broker))
    answer = _same_answer(early, client, f"/api/definitions/{quote(vhost_name, safe='')}")
    assert answer.status_code == 400 and "not_found" in answer.text


def test_a_refused_read_is_answered_early(broker: Any, populated: str) -> None:
    """401 is an answer read_broker handles itself (a non-administrator's: then its listings), kept early:
    on CloudAMQP, where the user is no administrator, every plan saves a round trip."""
    wrong = _connection(broker, password="not-the-password")
    early = EarlyDefinitions(wrong, [populated])
    answer = _same_answer(early, ManagementClient(wrong), f"/api/definitions/{quote(populated, safe='')}")
    assert answer.status_code == 401


def test_a_404_is_left_to_the_client(broker: Any, populated: str) -> None:
    """A 404 may be a management API still starting, which the client finds out and waits for; here it is
    a base URL that is not the API's, which the client reports with its hint."""
    wrong = _connection(broker, url=broker.url + "/not-the-api")
    early = EarlyDefinitions(wrong, [populated])
    with pytest.raises(BrokerError) as raised:
        early.answer(ManagementClient(wrong))
    assert early.kept is None
    assert raised.value.status == 404 and "does not look like the management API" in str(raised.value)


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
