"""What an object relies on without being it: used by saved plans (whose dependencies must not change
under them) and by targeting (which plans the targets and what they need)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from topo.diff import Change
from topo.state import Key, Kind


def needs(key: Key, attrs: dict[str, Any] | None) -> set[Key]:
    """The vhost, a binding's ends, a queue's or exchange's dead-letter and alternate exchanges, a
    permission's or user limit's user, a topic permission's exchange. The broker's own exchanges (the
    default one, amq.*) are left out: no plan changes them."""
    attrs = attrs or {}
    needed: set[Key] = set()
    if key.kind not in (Kind.USER, Kind.USER_LIMIT, Kind.VHOST) and key.vhost:
        needed.add(Key(Kind.VHOST, key.vhost, key.vhost))
    if key.kind is Kind.BINDING:
        needed.add(Key(Kind.EXCHANGE, key.vhost, attrs["source"]))
        needed.add(Key(Kind(attrs["destination_type"]), key.vhost, attrs["destination"]))
    elif key.kind in (Kind.QUEUE, Kind.EXCHANGE):
        arguments = attrs.get("arguments") or {}
        for argument in ("x-dead-letter-exchange", "alternate-exchange"):
            if isinstance(arguments.get(argument), str) and arguments[argument]:
                needed.add(Key(Kind.EXCHANGE, key.vhost, arguments[argument]))
    elif key.kind in (Kind.PERMISSION, Kind.TOPIC_PERMISSION, Kind.USER_LIMIT):
        user = key.name if key.kind is Kind.PERMISSION else attrs.get("user", "")
        needed.add(Key(Kind.USER, "", user))
        if key.kind is Kind.TOPIC_PERMISSION:
            needed.add(Key(Kind.EXCHANGE, key.vhost, attrs["exchange"]))
    return {k for k in needed if not (k.kind is Kind.EXCHANGE and (k.name == "" or k.name.startswith("amq.")))}


def dependencies(changes: Iterable[Change]) -> set[Key]:
    """What the changes rely on and do not change themselves."""
    changes = list(changes)
    needed: set[Key] = set()
    for change in changes:
        needed |= needs(change.key, change.after if change.after is not None else change.before)
    return needed - {change.key for change in changes}
