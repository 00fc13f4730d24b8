"""Which policy applies to a queue or exchange, and what its keys become: RabbitMQ's rules, offline.

From rabbit_policy.erl: a policy matches an object when its vhost is the object's, its `apply-to`
covers the object's kind (queues / exchanges / all, or the queue's own type: classic_queues,
quorum_queues, streams), the queue type accepts it (a type refuses a whole policy that sets a key
it does not support, e.g. delivery-limit on a classic queue) and its pattern (a PCRE, unanchored)
finds a match in the name. Of the matches, the highest priority wins; RabbitMQ sorts stably over
its parameter store, so which of two equal-priority policies wins is not something a user
controls: we report it as a tie. Policies and operator policies are matched
separately; where both set a key, the operator's value wins for booleans and the smaller one for
the numeric limits (rabbit_policies:merge_policy_value). The queue's own x-arguments then meet the
merged definition: numeric limits take the smaller value, every other key takes the argument
(rabbit_amqqueue_process:process_args_policy, rabbit_quorum_queue).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from topo.state import Key, Kind, Obj

# Keys whose operator-policy and argument conflicts resolve to the smaller value.
NUMERIC_LIMITS = frozenset(
    {
        "message-ttl",
        "max-length",
        "max-length-bytes",
        "max-in-memory-length",
        "max-in-memory-bytes",
        "expires",
        "delivery-limit",
    }
)

APPLY_TO_TYPE = {"classic": "classic_queues", "quorum": "quorum_queues", "stream": "streams"}

_HA = ("ha-mode", "ha-params", "ha-sync-mode", "ha-promote-on-shutdown", "ha-promote-on-failure")
_STREAM_KEYS = ("max-age", "stream-max-segment-size-bytes", "initial-cluster-size")
# A queue type is not matched AT ALL by a policy that sets a key it does not support
# (rabbit_queue_type:is_policy_applicable over the type's unsupported_policies). RabbitMQ 4.x lists,
# from each type's capabilities():
UNSUPPORTED_4 = {
    "classic": frozenset(
        {
            *_STREAM_KEYS,
            "delivery-limit",
            "dead-letter-strategy",
            "max-in-memory-length",
            "max-in-memory-bytes",
            "target-group-size",
            "filter-field-names",
        }
    ),
    "quorum": frozenset({*_STREAM_KEYS, *_HA, "max-priority", "queue-mode", "queue-master-locator"}),
}
# RabbitMQ 3.x, measured on 3.10.8 (one policy per key against a queue of each type):
UNSUPPORTED_3 = {
    "classic": frozenset({*_STREAM_KEYS, "delivery-limit", "dead-letter-strategy", "queue-leader-locator"}),
    "quorum": frozenset({*_STREAM_KEYS, *_HA, "max-priority", "queue-mode", "queue-master-locator"}),
    "stream": frozenset(
        {
            *_HA,
            "message-ttl",
            "expires",
            "max-length",
            "overflow",
            "max-in-memory-length",
            "max-in-memory-bytes",
            "dead-letter-exchange",
            "dead-letter-routing-key",
            "dead-letter-strategy",
            "delivery-limit",
            "max-priority",
            "queue-mode",
            "queue-master-locator",
            "single-active-consumer",
        }
    ),
}
UNSUPPORTED_4["stream"] = UNSUPPORTED_3["stream"]


def unsupported(queue_type: str | None, version: tuple[int, ...] | None = None) -> frozenset[str]:
    """Policy keys that keep a whole policy off queues of this type; 4.x rules unless the broker is older."""
    table = UNSUPPORTED_3 if version and version < (4,) else UNSUPPORTED_4
    return table.get(queue_type or "classic", frozenset())


@lru_cache(maxsize=4096)
def _compiled(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern)
    except re.error:
        return None


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    pattern: str
    apply_to: str
    priority: int
    definition: dict[str, Any]
    operator: bool = False

    @classmethod
    def of(cls, obj: Obj) -> Policy:
        attrs = obj.attrs
        return cls(
            obj.key.name,
            attrs["pattern"],
            attrs.get("apply-to", "all"),
            int(attrs.get("priority", 0)),
            dict(attrs.get("definition") or {}),
            obj.kind is Kind.OPERATOR_POLICY,
        )

    def names(self, kind: Kind, name: str, queue_type: str | None = None) -> bool:
        """Its apply-to and pattern select this object (the queue type may still refuse it)."""
        if kind is Kind.EXCHANGE:
            if self.apply_to not in ("all", "exchanges"):
                return False
        elif self.apply_to not in ("all", "queues") and self.apply_to != APPLY_TO_TYPE.get(queue_type or "classic"):
            return False
        compiled = _compiled(self.pattern)
        return compiled is not None and compiled.search(name) is not None

    def refused_keys(self, kind: Kind, queue_type: str | None, version: tuple[int, ...] | None) -> list[str]:
        if kind is not Kind.QUEUE:
            return []
        return sorted(set(self.definition) & unsupported(queue_type, version))


@dataclass(slots=True)
class Match:
    """The policy that applies (or None), the other candidates, and an equal-priority tie if any."""

    winner: Policy | None = None
    candidates: list[Policy] = field(default_factory=list)  # every match, highest priority first
    tied: list[Policy] = field(default_factory=list)  # others with the winner's priority
    refused: dict[str, list[str]] = field(default_factory=dict)  # name matches, type refuses: policy -> keys


def policies_in(objects: Mapping[Key, Obj] | Iterable[Obj], vhost: str) -> list[Policy]:
    values = objects.values() if isinstance(objects, Mapping) else objects
    return [
        Policy.of(obj) for obj in values if obj.kind in (Kind.POLICY, Kind.OPERATOR_POLICY) and obj.key.vhost == vhost
    ]


def match(
    policies: Iterable[Policy],
    kind: Kind,
    name: str,
    queue_type: str | None = None,
    version: tuple[int, ...] | None = None,
) -> Match:
    found, refused = [], {}
    for policy in policies:
        if policy.names(kind, name, queue_type):
            keys = policy.refused_keys(kind, queue_type, version)
            if keys:
                refused[policy.name] = keys
            else:
                found.append(policy)
    found.sort(key=lambda p: (-p.priority, p.name))
    if not found:
        return Match(refused=refused)
    winner = found[0]
    return Match(winner, found, [p for p in found[1:] if p.priority == winner.priority], refused)


@dataclass(slots=True)
class Effective:
    """What applies to one object: both matches, and each key with its value and where it came from."""

    policy: Match
    operator_policy: Match
    keys: dict[str, tuple[Any, str]] = field(default_factory=dict)  # key -> (value, source)


def merge_operator(definition: dict[str, Any], operator: dict[str, Any]) -> dict[str, tuple[Any, str]]:
    """rabbit_policy:merge_operator_definitions, labelled: key -> (value, 'policy' | 'operator policy')."""
    merged: dict[str, tuple[Any, str]] = {}
    for key in sorted(set(definition) | set(operator)):
        if key not in operator:
            merged[key] = (definition[key], "policy")
        elif key not in definition:
            merged[key] = (operator[key], "operator policy")
        else:
            mine, theirs = definition[key], operator[key]
            if key in NUMERIC_LIMITS and _number(mine) and _number(theirs):
                merged[key] = (mine, "policy") if mine < theirs else (theirs, "operator policy")
            else:
                merged[key] = (theirs, "operator policy")
    return merged


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def effective(
    policies: Iterable[Policy],
    kind: Kind,
    name: str,
    arguments: Mapping[str, Any],
    queue_type: str | None = None,
    version: tuple[int, ...] | None = None,
) -> Effective:
    """The keys in force on a queue or exchange: its arguments merged with the winning policies."""
    policies = list(policies)
    regular = match([p for p in policies if not p.operator], kind, name, queue_type, version)
    operator = match([p for p in policies if p.operator], kind, name, queue_type, version)
    result = Effective(regular, operator)
    merged = merge_operator(
        regular.winner.definition if regular.winner else {}, operator.winner.definition if operator.winner else {}
    )
    labels = {
        "policy": f"policy {regular.winner.name!r}" if regular.winner else "",
        "operator policy": f"operator policy {operator.winner.name!r}" if operator.winner else "",
    }
    for key, (value, source) in merged.items():
        result.keys[key] = (value, labels[source])
    for argument, value in arguments.items():
        key = argument[2:] if argument.startswith("x-") else argument
        if key not in result.keys:
            result.keys[key] = (value, f"argument {argument}")
            continue
        current, source = result.keys[key]
        if key in NUMERIC_LIMITS and _number(value) and _number(current):
            if value <= current:
                result.keys[key] = (value, f"argument {argument} (smaller than {source}'s {current})")
            else:
                result.keys[key] = (current, f"{source} (smaller than argument {argument}'s {value})")
        else:
            result.keys[key] = (value, f"argument {argument} (wins over {source}'s {current!r})")
    result.keys = dict(sorted(result.keys.items()))
    return result
