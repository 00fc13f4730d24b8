"""Which policy applies to a queue or exchange, and what its keys become: RabbitMQ's rules, offline.

From rabbit_policy.erl: a policy matches an object when its vhost is the object's, its `apply-to`
covers the object's kind (queues / exchanges / all, or the queue's own type: classic_queues,
quorum_queues, streams), the queue type accepts it (streams refuse a whole policy that sets
message-ttl, max-priority, queue-mode, single-active-consumer, ha-* or queue-master-locator) and
its pattern (a PCRE, unanchored) finds a match in the name. Of the matches, the highest priority wins;
RabbitMQ sorts stably over its parameter store, so which of two equal-priority policies wins is not
something a user controls: we report it as a tie. Policies and operator policies are matched
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

# Policy keys each queue type ignores (the `unsupported_policies` of its capabilities()).
UNSUPPORTED = {
    "classic": frozenset(
        {
            "max-age",
            "stream-max-segment-size-bytes",
            "initial-cluster-size",
            "delivery-limit",
            "dead-letter-strategy",
            "max-in-memory-length",
            "max-in-memory-bytes",
            "target-group-size",
            "filter-field-names",
        }
    ),
    "quorum": frozenset(
        {
            "max-priority",
            "queue-mode",
            "ha-mode",
            "ha-params",
            "ha-sync-mode",
            "ha-promote-on-shutdown",
            "ha-promote-on-failure",
            "queue-master-locator",
            "max-age",
            "stream-max-segment-size-bytes",
            "initial-cluster-size",
        }
    ),
}
# A stream is not matched at all by a policy that sets one of these (rabbit_stream_queue:is_policy_applicable).
STREAM_REFUSES = frozenset(
    {
        "message-ttl",
        "max-priority",
        "queue-mode",
        "single-active-consumer",
        "ha-mode",
        "ha-params",
        "ha-sync-mode",
        "ha-promote-on-shutdown",
        "ha-promote-on-failure",
        "queue-master-locator",
    }
)


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

    def applies_to(self, kind: Kind, name: str, queue_type: str | None = None) -> bool:
        if kind is Kind.EXCHANGE:
            if self.apply_to not in ("all", "exchanges"):
                return False
        elif self.apply_to not in ("all", "queues") and self.apply_to != APPLY_TO_TYPE.get(queue_type or "classic"):
            return False
        if kind is Kind.QUEUE and queue_type == "stream" and STREAM_REFUSES & set(self.definition):
            return False
        compiled = _compiled(self.pattern)
        return compiled is not None and compiled.search(name) is not None


@dataclass(slots=True)
class Match:
    """The policy that applies (or None), the other candidates, and an equal-priority tie if any."""

    winner: Policy | None = None
    candidates: list[Policy] = field(default_factory=list)  # every match, highest priority first
    tied: list[Policy] = field(default_factory=list)  # others with the winner's priority


def policies_in(objects: Mapping[Key, Obj] | Iterable[Obj], vhost: str) -> list[Policy]:
    values = objects.values() if isinstance(objects, Mapping) else objects
    return [
        Policy.of(obj) for obj in values if obj.kind in (Kind.POLICY, Kind.OPERATOR_POLICY) and obj.key.vhost == vhost
    ]


def match(policies: Iterable[Policy], kind: Kind, name: str, queue_type: str | None = None) -> Match:
    found = sorted(
        (p for p in policies if p.applies_to(kind, name, queue_type)),
        key=lambda p: (-p.priority, p.name),
    )
    if not found:
        return Match()
    winner = found[0]
    return Match(winner, found, [p for p in found[1:] if p.priority == winner.priority])


@dataclass(slots=True)
class Effective:
    """What applies to one object: both matches, and each key with its value and where it came from."""

    policy: Match
    operator_policy: Match
    keys: dict[str, tuple[Any, str]] = field(default_factory=dict)  # key -> (value, source)
    ignored: dict[str, str] = field(default_factory=dict)  # key -> why it has no effect


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
    policies: Iterable[Policy], kind: Kind, name: str, arguments: Mapping[str, Any], queue_type: str | None = None
) -> Effective:
    """The keys in force on a queue or exchange: its arguments merged with the winning policies."""
    policies = list(policies)
    regular = match([p for p in policies if not p.operator], kind, name, queue_type)
    operator = match([p for p in policies if p.operator], kind, name, queue_type)
    result = Effective(regular, operator)
    merged = merge_operator(
        regular.winner.definition if regular.winner else {}, operator.winner.definition if operator.winner else {}
    )
    labels = {
        "policy": f"policy {regular.winner.name!r}" if regular.winner else "",
        "operator policy": f"operator policy {operator.winner.name!r}" if operator.winner else "",
    }
    unsupported = UNSUPPORTED.get(queue_type or "classic", frozenset()) if kind is Kind.QUEUE else frozenset()
    for key, (value, source) in merged.items():
        if key in unsupported:
            result.ignored[key] = f"set by {labels[source]}, not used by {queue_type} queues"
            continue
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
