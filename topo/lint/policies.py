"""Which policy and operator policy apply to a queue, by RabbitMQ's rules (rabbit_policy:match/2).

A policy applies when its pattern matches the queue's name and its apply-to covers the queue's type;
of those, the highest priority wins and only that one applies. Operator policies are chosen the same
way, separately. RabbitMQ does not define which of two equally high policies wins: `applying` returns
all of them, and a caller decides what a tie means for its question.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

from topo.state import Kind, Obj

# apply-to values that cover a queue of each type (3.12+ added the per-type values).
_APPLY_TO = {
    "classic": frozenset({"all", "queues", "classic_queues"}),
    "quorum": frozenset({"all", "queues", "quorum_queues"}),
    "stream": frozenset({"all", "queues", "streams"}),
}


@lru_cache(maxsize=4096)
def _compiled(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern)
    except re.error:
        return None  # the model refuses such patterns; a broker's own never fail in Erlang's re


def matches(policy: Obj, queue: Obj) -> bool:
    if policy.key.vhost != queue.key.vhost:
        return False
    if policy.attrs.get("apply-to", "all") not in _APPLY_TO.get(queue.attrs.get("type", "classic"), ()):
        return False
    compiled = _compiled(str(policy.attrs.get("pattern", "")))
    return compiled is not None and compiled.search(queue.key.name) is not None


def applying(policies: Iterable[Obj], queue: Obj) -> list[Obj]:
    """The policies of one kind that could be the queue's effective one: the highest-priority matches."""
    candidates = [policy for policy in policies if matches(policy, queue)]
    if not candidates:
        return []
    top = max(int(policy.attrs.get("priority", 0)) for policy in candidates)
    return sorted((p for p in candidates if int(p.attrs.get("priority", 0)) == top), key=lambda p: p.key.name)


def by_kind(objects: Iterable[Obj], vhost: str) -> tuple[list[Obj], list[Obj]]:
    """The policies and the operator policies of one vhost."""
    policies, operator = [], []
    for obj in objects:
        if obj.key.vhost != vhost:
            continue
        if obj.kind is Kind.POLICY:
            policies.append(obj)
        elif obj.kind is Kind.OPERATOR_POLICY:
            operator.append(obj)
    return policies, operator
