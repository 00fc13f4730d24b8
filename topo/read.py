"""Broker -> actual state, with as few requests as possible.

One GET of definitions (per vhost when only one is managed), plus /api/vhosts for metadata that
definitions lack, plus limits and operator policies, which definitions do not carry. Message counts are
fetched later, only for queues the plan would destroy.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from topo.client import ManagementClient, api_path
from topo.normalize import (
    binding_from_broker,
    exchange_from_broker,
    limit_obj,
    policy_from_broker,
    queue_from_broker,
    vhost_from_broker,
)
from topo.state import Actual, Kind, Obj


def read_overview(client: ManagementClient) -> dict[str, Any]:
    return client.get(
        "/api/overview",
        what="read broker overview",
        params={"columns": "rabbitmq_version,exchange_types,management_version,cluster_name"},
    )


def read_actual(client: ManagementClient, vhosts: Iterable[str]) -> Actual:
    """Everything topo compares, for the given vhosts (those that exist)."""
    wanted = list(dict.fromkeys(vhosts))
    actual = Actual()
    overview = read_overview(client)
    actual.version = str(overview.get("rabbitmq_version", ""))
    actual.exchange_types = {t["name"] for t in overview.get("exchange_types", []) if "name" in t}
    for item in client.get("/api/vhosts", what="list vhosts", params={"disable_stats": "true"}):
        actual.vhosts.add(item["name"])
        if item["name"] in wanted:
            _add(actual, vhost_from_broker(item))
    present = [v for v in wanted if v in actual.vhosts]
    if not present:
        return actual
    if len(present) == 1:
        definitions = client.get(api_path("definitions", present[0]), what=f"read definitions of vhost {present[0]!r}")
        add_definitions(actual, definitions, default_vhost=present[0], keep=set(present))
    else:
        definitions = client.get("/api/definitions", what="read definitions")
        add_definitions(actual, definitions, default_vhost=None, keep=set(present))
    keep = set(present)
    for item in client.get("/api/operator-policies", what="list operator policies"):
        if item.get("vhost") in keep:
            _add(actual, policy_from_broker(Kind.OPERATOR_POLICY, item["vhost"], item))
    for item in client.get("/api/vhost-limits", what="list vhost limits"):
        if item.get("vhost") in keep:
            for name, value in (item.get("value") or {}).items():
                _add(actual, limit_obj(item["vhost"], name, value))
    return actual


def _add(actual: Actual, obj: Obj | None) -> None:
    if obj is not None:
        actual.objects[obj.key] = obj


def add_definitions(actual: Actual, definitions: dict[str, Any], default_vhost: str | None, keep: set[str]) -> None:
    """Adds the objects of a definitions export (whole broker or one vhost) in the `keep` vhosts."""

    def items(section: str) -> Iterable[tuple[str, dict[str, Any]]]:
        for item in definitions.get(section) or []:
            vhost = item.get("vhost", default_vhost)
            if vhost in keep:
                yield vhost, item

    for vhost, item in items("exchanges"):
        _add(actual, exchange_from_broker(vhost, item))
    for vhost, item in items("queues"):
        _add(actual, queue_from_broker(vhost, item))
    exported_queues = {(vhost, item["name"]) for vhost, item in items("queues")}
    for vhost, item in items("bindings"):
        # Definitions leave out exclusive queues but not their bindings: a binding to a queue that is not
        # listed belongs to a connected client's exclusive queue, which topo never touches.
        if item.get("destination_type") == "queue" and (vhost, item["destination"]) not in exported_queues:
            continue
        _add(actual, binding_from_broker(vhost, item))
    for vhost, item in items("policies"):
        _add(actual, policy_from_broker(Kind.POLICY, vhost, item))


def message_counts(client: ManagementClient, vhost: str, names: set[str] | None = None) -> dict[str, int | None]:
    """Messages per queue in a vhost (of `names`, or all), None where the broker cannot say.

    The totals-only listing is cheap but leaves streams out (no `messages` key) and lags a few seconds
    for quorum queues; streams are therefore asked one by one, with stats, which does count them.
    """
    queues = client.get(
        api_path("queues", vhost),
        what=f"count messages in vhost {vhost!r}",
        params={"disable_stats": "true", "enable_queue_totals": "true", "columns": "name,messages"},
    )
    counts: dict[str, int | None] = {}
    for queue in queues:
        name = queue["name"]
        if names is not None and name not in names:
            continue
        count = queue.get("messages")
        if count is None:
            detail = client.get_or_none(api_path("queues", vhost, name), what=f"count messages in queue {name!r}")
            count = (detail or {}).get("messages")
        counts[name] = int(count) if count is not None else None
    return counts
