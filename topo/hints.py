"""Advice that prevents outages: a replace that a policy would have made unnecessary says so.

Queue arguments are immutable, so changing one means deleting the queue under its consumers. Many of
them are also policy keys, and a policy changes a live queue in place. Which keys each queue type
accepts from a policy is RabbitMQ's (3.10): the policy validators of rabbit_policies minus each queue
type's `unsupported_policies` (rabbit_classic_queue, rabbit_quorum_queue, rabbit_stream_queue).
Keys that only matter when a queue is created (leader locators, initial sizes) are left out: a policy
would not change a live queue for them.
"""

from __future__ import annotations

import json
from typing import Any

from topo.diff import Action, Change
from topo.state import Kind, same_value

_COMMON = {
    "x-message-ttl": "message-ttl",
    "x-expires": "expires",
    "x-max-length": "max-length",
    "x-max-length-bytes": "max-length-bytes",
    "x-overflow": "overflow",
    "x-dead-letter-exchange": "dead-letter-exchange",
    "x-dead-letter-routing-key": "dead-letter-routing-key",
}

# Queue argument -> the policy key that sets the same thing, per queue type.
POLICY_KEYS: dict[str, dict[str, str]] = {
    "classic": {**_COMMON, "x-queue-mode": "queue-mode", "x-queue-version": "queue-version"},
    "quorum": {
        **_COMMON,
        "x-dead-letter-strategy": "dead-letter-strategy",
        "x-delivery-limit": "delivery-limit",
        "x-max-in-memory-length": "max-in-memory-length",
        "x-max-in-memory-bytes": "max-in-memory-bytes",
    },
    "stream": {
        "x-max-length-bytes": "max-length-bytes",
        "x-max-age": "max-age",
        "x-stream-max-segment-size-bytes": "stream-max-segment-size-bytes",
    },
}
EXCHANGE_POLICY_KEYS = {"alternate-exchange": "alternate-exchange"}


def policy_key(kind: Kind, argument: str, queue_type: str | None = None) -> str | None:
    """The policy key that can set `argument` on a live object, if there is one."""
    if kind is Kind.EXCHANGE:
        return EXCHANGE_POLICY_KEYS.get(argument)
    return POLICY_KEYS.get(queue_type or "classic", {}).get(argument)


def _changed_arguments(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    old, new = before.get("arguments") or {}, after.get("arguments") or {}
    return sorted(name for name in set(old) | set(new) if not same_value(old.get(name), new.get(name)))


def replace_hint(change: Change) -> str | None:
    """For a queue or exchange replace caused (at least partly) by policy-settable arguments: say which."""
    if change.action is not Action.REPLACE or change.kind not in (Kind.QUEUE, Kind.EXCHANGE):
        return None
    before, after = change.before or {}, change.after or {}
    queue_type = after.get("type") if change.kind is Kind.QUEUE else None
    if change.kind is Kind.QUEUE and before.get("type") != queue_type:
        return None  # a new queue type is a new queue whatever else changes
    keys = {name: policy_key(change.kind, name, queue_type) for name in _changed_arguments(before, after)}
    settable = {name: key for name, key in keys.items() if key}
    if not settable:
        return None
    arguments = ", ".join(settable)
    plural = "s" if len(settable) > 1 else ""
    policy_keys = ", ".join(json.dumps(key) for key in settable.values())
    others = [f for f in change.changed_fields() if f != "arguments"] or [n for n, k in keys.items() if not k]
    rest = " (the other differences still need this replace)" if others else ""
    pronoun = "them" if plural else "it"
    return (
        f"a policy can change {arguments} in place (policy key{plural} {policy_keys}); declared without the "
        f"argument{plural} and set by a policy, the {change.kind.value} is never replaced for {pronoun} again{rest}"
    )
