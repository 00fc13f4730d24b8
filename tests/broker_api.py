"""Raw management API access for tests: changing the broker behind topo's back and checking results."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import requests


class Api:
    """Raw management API access, for changing the broker behind topo's back and checking results."""

    def __init__(self, broker: Any):
        self.base = broker.url
        self.auth = (broker.user, broker.password)

    def _url(self, *segments: str) -> str:
        return self.base + "/api/" + "/".join(quote(s, safe="") for s in segments)

    def get(self, *segments: str) -> Any:
        response = requests.get(self._url(*segments), auth=self.auth, timeout=30)
        response.raise_for_status()
        return response.json()

    def put(self, body: dict[str, Any], *segments: str) -> None:
        requests.put(self._url(*segments), json=body, auth=self.auth, timeout=30).raise_for_status()

    def delete(self, *segments: str) -> None:
        requests.delete(self._url(*segments), auth=self.auth, timeout=30).raise_for_status()

    def publish(self, vhost: str, queue: str, count: int = 1) -> None:
        for n in range(count):
            body = {"properties": {}, "routing_key": queue, "payload": f"m{n}", "payload_encoding": "string"}
            response = requests.post(
                self._url("exchanges", vhost, "amq.default", "publish"), json=body, auth=self.auth, timeout=30
            )
            assert response.json() == {"routed": True}

    def messages(self, vhost: str, queue: str) -> int:
        response = requests.get(
            self._url("queues", vhost),
            params={"disable_stats": "true", "enable_queue_totals": "true", "columns": "name,messages"},
            auth=self.auth,
            timeout=30,
        )
        return next(int(q.get("messages") or 0) for q in response.json() if q["name"] == queue)

    def bindings(self, vhost: str) -> list[dict[str, Any]]:
        return [b for b in self.get("bindings", vhost) if b["source"] != ""]


def queue_with_policy(api: Api, vhost: str, queue: str) -> dict[str, Any]:
    # The management API fills in `policy` and friends from the queue's first statistics event.
    deadline = time.monotonic() + 30
    while True:
        found = api.get("queues", vhost, queue)
        if "effective_policy_definition" in found or time.monotonic() > deadline:
            return dict(found)
        time.sleep(0.5)
