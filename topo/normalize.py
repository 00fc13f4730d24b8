"""Quirks of the broker that several kinds share: which objects are the broker's or a plugin's, tags
as a list or a comma-separated string, limits kept at -1 after removal, credentials inside values.

Each kind turns both sides (files and broker) into the same canonical attributes in its own module
(topo/kinds/<kind>.py), using these.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

# Declared by plugins, not by people: the MQTT plugin's session queues, and the federation plugin's
# queue and internal exchange on the upstream side of each link ("federation: events -> node:vhost:events").
PLUGIN_PREFIX = "federation: "
TRANSIENT_QUEUE_PREFIXES = ("amq.gen-", "mqtt-subscription-", PLUGIN_PREFIX)
# The queue `topo apply` holds as its lock (see lock.py): never planned, pruned or exported.
LOCK_QUEUE = "topo.lock"
# topo's records of the bindings a replace must restore (holding.py): internal exchanges, out of scope.
HOLD_PREFIX = "topo.hold."
# The temporary exchanges and queues of a migration (migrate.py): out of scope like holds.
MIGRATE_PREFIX = "topo.migrate."


def is_builtin_exchange(name: str) -> bool:
    """Exchanges topo never manages: the broker's own and those the federation plugin declares."""
    return name == "" or name.startswith(("amq.", PLUGIN_PREFIX))


def is_transient_queue(name: str, exclusive: bool = False) -> bool:
    return exclusive or name == LOCK_QUEUE or name.startswith(TRANSIENT_QUEUE_PREFIXES) or name.startswith("amq.")


def tags_of(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        value = value.split(",")
    return sorted({str(tag).strip() for tag in value if str(tag).strip()})


def set_limits(limits: Any) -> list[tuple[str, Any]]:
    """The limits a broker's record really sets: it keeps -1 ("no limit") after a limit is removed."""
    if not isinstance(limits, dict):
        return []
    return [(name, value) for name, value in limits.items() if not (type(value) is int and value < 0)]


def strings_in(value: Any) -> Iterator[str]:
    """Every string inside a JSON value (to find the URIs, and so the credentials, in a parameter)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)
