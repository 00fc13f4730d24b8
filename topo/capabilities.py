"""What the broker is and can do, read once: every version- or plugin-dependent decision asks here.

Built from the overview (version, exchange types) and, where the connected user may read them, the
node's enabled plugins, the feature flags and (4.x) the deprecated features in use. A listing the user
may not read is None (unknown), never an empty set: "no plugins" and "cannot tell" differ.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from topo import compat
from topo.arguments import BUILTIN_EXCHANGE_TYPES

if TYPE_CHECKING:  # only annotations here: `topo validate` reaches this module and needs no HTTP client
    from topo.client import ManagementClient

OVERVIEW_COLUMNS = "rabbitmq_version,exchange_types,management_version,cluster_name"


@dataclass(frozen=True, slots=True)
class Capabilities:
    version: str = ""  # as the broker reports it; "" when unknown (e.g. a definitions file without one)
    exchange_types: frozenset[str] = frozenset()
    plugins: frozenset[str] | None = None  # enabled plugins; None when the user may not read them
    feature_flags: frozenset[str] | None = None  # enabled feature flags; None when unreadable
    # /api/deprecated-features/used (3.13+), as the broker lists them; None when unreadable or older.
    deprecated_features_used: tuple[dict[str, Any], ...] | None = None

    @property
    def deprecated_feature_names(self) -> tuple[str, ...] | None:
        used = self.deprecated_features_used
        return None if used is None else tuple(sorted(str(f.get("name", "")) for f in used))

    @property
    def release(self) -> compat.Version:
        """(major, minor, patch) by compat.parse_version, the one version parser; (0, 0, 0) when unknown."""
        return compat.release_of(self.version) or (0, 0, 0)

    def at_least(self, major: int, minor: int, patch: int = 0) -> bool:
        """True when the broker is known to be this version or newer."""
        return bool(self.version) and self.release >= (major, minor, patch)

    def older_than(self, major: int, minor: int, patch: int = 0) -> bool:
        """True when the broker is known to be older (an unknown version is neither)."""
        return bool(self.version) and self.release < (major, minor, patch)

    # -- what follows from the version ---------------------------------------------------------

    @property
    def stores_default_queue_type(self) -> bool:
        return not self.older_than(3, 11)

    @property
    def policy_apply_to_queue_types(self) -> bool:
        """apply-to classic_queues, quorum_queues, streams (3.12+)."""
        return not self.older_than(3, 12)

    @property
    def always_default_queue_type(self) -> bool:
        """4.x stores a default_queue_type on every vhost (classic when it was never set)."""
        return self.at_least(4, 0)

    @property
    def builtin_exchange_types(self) -> frozenset[str]:
        """Exchange types the broker has without any plugin (x-local-random is built in from 4.0)."""
        types = set(BUILTIN_EXCHANGE_TYPES)
        if self.at_least(4, 0):
            types.add("x-local-random")
        return frozenset(types)

    @property
    def definitions_omit_internal_exchanges(self) -> bool:
        """4.x's GET /api/definitions may leave out internal exchanges (4.3 does): list them instead."""
        return self.at_least(4, 0)

    @property
    def deletion_protection(self) -> bool:
        """Vhosts protected from deletion (POST/DELETE /api/vhosts/{vhost}/deletion/protection)."""
        return self.at_least(4, 0, 6)

    @property
    def protected_users(self) -> bool:
        """Users tagged `protected` cannot be changed or deleted through the HTTP API (4.2+)."""
        return self.at_least(4, 2)

    @property
    def protected_queues(self) -> bool:
        """Queues owned by the broker's internal components refuse deletion (4.1+)."""
        return self.at_least(4, 1)

    @property
    def topic_permission_needs_exchange(self) -> bool:
        """A topic permission on a missing exchange is refused (4.x), not stored (3.x); unknown: not refused."""
        return bool(self.version) and compat.rules_for(self.release).topic_permission_needs_exchange

    def refusals(self, where: compat.Where, items: dict[str, Any]) -> list[tuple[str, str]]:
        """(key, reason with the replacement) for each policy key or queue argument this broker refuses."""
        if not self.version:
            return []
        return compat.refusals(where, items, self.release)

    def queue_argument_refusals(self, queue_type: str, arguments: dict[str, Any]) -> list[tuple[str, str]]:
        """(argument, reason) for each queue argument this broker refuses for a queue of `queue_type`: what its
        version removed or denies, and what only other queue types take on it ("invalid arg ... of queue
        type rabbit_classic_queue" on 4.3 for x-consumer-timeout, which 4.3.2 gives quorum queues)."""
        if not self.version:
            return []
        # Thousands of queues share a few argument sets: each set is judged once (0.1 s of a plan of 10,000).
        frozen = tuple((name, type(value), value) for name, value in arguments.items())
        try:
            return list(_cached_queue_argument_refusals(self.version, queue_type, frozen))
        except TypeError:  # a list or table value is not hashable: judged each time
            return _queue_argument_refusals(self.version, queue_type, arguments)

    def policy_problems(self, operator: bool, definition: dict[str, Any]) -> list[tuple[str, str]]:
        """(key, reason) for each part of a policy definition this broker refuses (topo.policies)."""
        from topo.policies import definition_problems

        return definition_problems(definition, operator, self.release if self.version else None, self._plugins())

    def _plugins(self) -> frozenset[str] | None:
        """The enabled plugins; when they cannot be read, federation's exchange type still tells."""
        if self.plugins is not None or not self.exchange_types:
            return self.plugins
        known = set(compat.PLUGIN_POLICY_KEYS.values())
        if "x-federation-upstream" not in self.exchange_types:
            known.discard("rabbitmq_federation")
        return frozenset(known)


def from_overview(info: dict[str, Any], extra: dict[str, Any] | None = None) -> Capabilities:
    extra = extra or {}
    return Capabilities(
        version=str(info.get("rabbitmq_version", "")),
        exchange_types=frozenset(t["name"] for t in info.get("exchange_types", []) if "name" in t),
        plugins=extra.get("plugins"),
        feature_flags=extra.get("feature_flags"),
        deprecated_features_used=extra.get("deprecated_features_used"),
    )


# Without statistics, the overview is the broker's description only: the same four columns, but not the
# message and queue totals the broker otherwise adds up over every queue first (measured on 3.10.8 with
# 105,002 objects: 0.34 s, and 1.4 s during an import, against 0.003 s; the columns alone do not spare it).
OVERVIEW_PARAMS = {"disable_stats": "true"}


def read_overview(client: ManagementClient) -> dict[str, Any]:
    params = {**OVERVIEW_PARAMS, "columns": OVERVIEW_COLUMNS}
    return client.get("/api/overview", what="read broker overview", params=params)


# Listings some users may not read (401), and older brokers do not have (404): unknown then.
_OPTIONAL = (401, 403, 404)


def _optional(client: ManagementClient, path: str, what: str, params: dict[str, str] | None = None) -> Any:
    response = client.request("GET", path, what=what, params=params, ok=_OPTIONAL)
    return response.json() if response.status_code == 200 else None


SHOVEL_PLUGIN = "rabbitmq_shovel"


def read_shovel_plugin(
    client: ManagementClient, capabilities: Capabilities, vhost: str, probe_name: str
) -> bool | None:
    """Whether the shovel plugin runs: True, False, or None when this user cannot tell (no policymaker tag).

    The node listing's enabled_plugins is readable by administrators and monitoring users only, and even
    they do not get it on a node that has not sent its first statistics (measured: 4.3.6 lists nodes
    without enabled_plugins right after boot); no listing a policymaker may read differs with the plugin
    (GET /api/parameters/shovel/{vhost} answers [] either way, /api/shovels needs shovel_management,
    /api/extensions lists only management extensions). What answers on 3.10 and 4.3, for administrators
    and policymakers alike, is the runtime-parameter component itself: a shovel parameter that can never
    be valid (no destination) is refused with "component shovel not found" without the plugin, and with
    the shovel's own validation errors with it. Nothing is stored either way."""
    if capabilities.plugins is not None and SHOVEL_PLUGIN in capabilities.plugins:
        return True
    from topo.apipath import api_path

    path = api_path("parameters", "shovel", vhost, probe_name)
    body = {"value": {"src-queue": probe_name}}  # no dest-uri: refused by the shovel's validation
    response = client.request(
        "PUT", path, what="check that the shovel plugin is enabled", body=body, ok=(400, 401, 403, 404)
    )
    if response.status_code < 300:  # never seen; should a broker store it, it must not stay
        client.delete(path, what="remove the shovel plugin check")
        return True
    if response.status_code != 400:
        return None
    return "component shovel not found" not in response.text


def read_capabilities(client: ManagementClient, concurrently: Callable[..., list[Any]] | None = None) -> Capabilities:
    """One read of everything below; `concurrently` runs the requests at once (see read._concurrently)."""
    calls: list[Callable[[], Any]] = [
        lambda: read_overview(client),
        lambda: _optional(client, "/api/nodes", "list nodes", {"columns": "name,enabled_plugins"}),
        lambda: _optional(client, "/api/feature-flags", "list feature flags"),
        lambda: _optional(client, "/api/deprecated-features/used", "list deprecated features in use"),
    ]
    info, nodes, flags, used = concurrently(*calls) if concurrently else [call() for call in calls]
    extra: dict[str, Any] = {}
    if isinstance(nodes, list):
        extra["plugins"] = frozenset(p for node in nodes for p in node.get("enabled_plugins") or [])
    if isinstance(flags, list):
        extra["feature_flags"] = frozenset(f["name"] for f in flags if f.get("state") == "enabled")
    if isinstance(used, list):
        extra["deprecated_features_used"] = tuple(f for f in used if isinstance(f, dict))
    return from_overview(info, extra)


@functools.lru_cache(maxsize=4096)
def _cached_queue_argument_refusals(
    version: str, queue_type: str, frozen: tuple[tuple[str, type, Any], ...]
) -> tuple[tuple[str, str], ...]:
    # The value's type is in the key: True and 1 are equal (and hash alike) but not the same argument.
    return tuple(_queue_argument_refusals(version, queue_type, {name: value for name, _type, value in frozen}))


def _queue_argument_refusals(version: str, queue_type: str, arguments: dict[str, Any]) -> list[tuple[str, str]]:
    release = compat.release_of(version) or (0, 0, 0)
    found = dict(compat.refusals("queue_argument", arguments, release))
    rules = compat.rules_for(release)
    for name in rules.refused_queue_arguments(queue_type, arguments):
        takers = sorted(t for t, names in rules.queue_arguments.items() if name in names)
        found.setdefault(
            name,
            f"RabbitMQ {version} takes {name} for {' and '.join(takers)} queues only, not for {queue_type} "
            "queues (it refuses the declaration)",
        )
    return [(name, found[name]) for name in arguments if name in found]
