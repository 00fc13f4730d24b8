"""Which objects on the broker are topo's business: the one place that decides scope.

Applications declare objects for themselves while they run: reply and result queues, per-worker
control queues, event exchanges. Deleting them takes the application down, and adopting them in an
export makes a file that plans changes forever once the clients stop. So, unless a file declares
them, such objects are out of scope: never pruned, never listed as unmanaged, never exported.
Non-durable objects stay in scope but are pruned only where a vhost sets `prune_non_durable`, and
the files' `ignore` patterns take any other name out of scope.

Every rule here was seen on a live broker or read in the client's source (Celery/kombu 5.7; Amazon
MQ's documented broker defaults); exclusive and server-named queues never reach this module (read.py
drops them, see normalize.is_transient_queue).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase

from topo.normalize import HOLD_PREFIX, MIGRATE_PREFIX
from topo.state import Key, Kind, Obj

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)
# Celery's native delayed delivery (quorum queues): celery_delayed_0..27 and celery_delayed_delivery,
# optionally "<prefix>_" in front (kombu.transport.native_delayed_delivery).
_CELERY_DELAYED = re.compile(r"(^|_)celery_delayed_([0-9]+|delivery)$")

# Amazon MQ for RabbitMQ installs these on every broker it creates (its "broker defaults" pages).
_HOSTING_POLICIES = (("AWS-DEFAULT-*", "Amazon MQ's default policy"), ("*-AWS-OWNED-DO-NOT-DELETE", "Amazon MQ's"))
_HOSTING_OPERATOR_POLICIES = (("default_operator_policy_AWS_managed", "Amazon MQ's default operator policy"),)

INCLUDE_HINT = "--include-client-owned"


def _exchange_by_name(name: str) -> str | None:
    if name.startswith(HOLD_PREFIX):
        return "topo's own record of the bindings of an interrupted replace (see holding.py)"
    if name.startswith(MIGRATE_PREFIX):
        return "topo's own temporary exchange of a queue migration (see migrate.py)"
    if name == "celeryev":
        return "Celery's event exchange (celeryev)"
    if name.endswith(".pidbox"):
        # kombu's Mailbox: "<namespace>.pidbox" (fanout) and "reply.<namespace>.pidbox" (direct).
        return "Celery's remote-control exchange (kombu pidbox)"
    if _CELERY_DELAYED.search(name):
        return "Celery's delayed-delivery exchange"
    return None


def _queue_by_name(name: str) -> str | None:
    if name.startswith(MIGRATE_PREFIX):
        return "topo's own temporary queue of a queue migration (see migrate.py)"
    if name.endswith(".pidbox"):
        # "<worker>.celery.pidbox" per worker, "<uuid>.reply.celery.pidbox" per client.
        return "Celery's per-worker or reply control queue (kombu pidbox)"
    if name.startswith("celeryev."):
        return "Celery's per-worker event queue (celeryev.<uuid>)"
    if _CELERY_DELAYED.search(name):
        return "Celery's delayed-delivery queue"
    if _UUID.match(name):
        return "named by a UUID: a per-client reply or result queue (Celery's rpc:// backend, RPC clients)"
    return None


def _queue_by_attrs(attrs: Mapping[str, object]) -> str | None:
    if attrs.get("auto_delete"):
        return "auto-delete queue: the broker deletes it when its last consumer goes"
    arguments = attrs.get("arguments")
    if isinstance(arguments, Mapping) and "x-expires" in arguments:
        return f"x-expires queue: the broker deletes it after {arguments['x-expires']} ms unused"
    return None


def _match(name: str, rules: Iterable[tuple[str, str]]) -> str | None:
    return next((why for pattern, why in rules if fnmatchcase(name, pattern)), None)


def client_owned(obj: Obj, objects: Mapping[Key, Obj]) -> str | None:
    """Why `obj` belongs to the clients (or the hosting provider) rather than to topo; None if it does not.

    `objects` is the rest of the broker's state: a binding belongs to the clients when either end does.
    """
    kind, name, attrs = obj.kind, obj.key.name, obj.attrs
    if kind is Kind.QUEUE:
        return _queue_by_attrs(attrs) or _queue_by_name(name)
    if kind is Kind.EXCHANGE:
        if attrs.get("auto_delete"):
            return "auto-delete exchange: the broker deletes it when its last binding goes"
        return _exchange_by_name(name)
    if kind is Kind.POLICY:
        return _match(name, _HOSTING_POLICIES)
    if kind is Kind.OPERATOR_POLICY:
        return _match(name, _HOSTING_OPERATOR_POLICIES)
    if kind is Kind.BINDING:
        vhost = obj.key.vhost
        source = Key(Kind.EXCHANGE, vhost, attrs["source"])
        destination = Key(Kind(attrs["destination_type"]), vhost, attrs["destination"])
        for end in (destination, source):
            found = objects.get(end)
            why = client_owned(found, objects) if found is not None else _by_name(end)
            if why:
                return f"binds {end.kind.value} {end.name!r} ({why})"
    return None


def _by_name(key: Key) -> str | None:
    return _queue_by_name(key.name) if key.kind is Kind.QUEUE else _exchange_by_name(key.name)


def non_durable(obj: Obj, objects: Mapping[Key, Obj]) -> bool:
    """A non-durable queue or exchange, or a binding to or from one: pruned only with prune_non_durable."""
    if obj.kind is Kind.BINDING:
        vhost, attrs = obj.key.vhost, obj.attrs
        ends = (
            Key(Kind.EXCHANGE, vhost, attrs["source"]),
            Key(Kind(attrs["destination_type"]), vhost, attrs["destination"]),
        )
        return any(end in objects and non_durable(objects[end], objects) for end in ends)
    return obj.kind in (Kind.QUEUE, Kind.EXCHANGE) and obj.attrs.get("durable") is False


# ---- the files' own exclusions (`ignore:` patterns) -------------------------------------------------


def names_of(obj: Obj) -> list[str]:
    """The names an `ignore` pattern is matched against: a binding is ignored when either end is."""
    if obj.kind in (Kind.EXCHANGE, Kind.QUEUE, Kind.POLICY, Kind.OPERATOR_POLICY):
        return [obj.key.name]
    if obj.kind is Kind.PARAMETER:
        return [obj.attrs["name"]]
    if obj.kind is Kind.BINDING:
        return [obj.attrs["source"], obj.attrs["destination"]]
    return []


def ignored_by(obj: Obj, patterns: Iterable[str]) -> str | None:
    """The first pattern that takes `obj` out of scope, if any (shell-style: * ? [...], case-sensitive)."""
    names = names_of(obj)
    return next((p for p in patterns if any(fnmatchcase(name, p) for name in names)), None)


def out_of_scope(obj: Obj, objects: Mapping[Key, Obj], patterns: Iterable[str]) -> str | None:
    """Why topo leaves an undeclared object alone entirely (not even listed), or None."""
    pattern = ignored_by(obj, patterns)
    if pattern is not None:
        return f"matches ignore pattern {pattern!r}"
    return client_owned(obj, objects)


def set_aside(
    objects: dict[Key, Obj], patterns: Iterable[str], include_client_owned: bool = False
) -> tuple[list[tuple[Obj, str]], int]:
    """Removes from `objects` (for an export) what is out of topo's scope.

    Returns the client-owned objects left out, each with the reason, and how many objects the
    patterns took out. With `include_client_owned` only the patterns apply.
    """
    patterns = list(patterns)
    ignored = [key for key, obj in objects.items() if ignored_by(obj, patterns)]
    for key in ignored:
        del objects[key]
    if include_client_owned:
        return [], len(ignored)
    # Decided against the whole state before anything goes: a binding is judged by its ends.
    owned = [(obj, why) for obj in objects.values() if (why := client_owned(obj, objects))]
    for obj, _ in owned:
        del objects[obj.key]
    owned.sort(key=lambda item: item[0].key)
    return owned, len(ignored)
