"""What each RabbitMQ version removed, denies or deprecates, and what to use instead.

One table of rules, consulted by the plan-time check (engine.check_against_broker, through
capabilities.Capabilities) so that nothing the target broker refuses is discovered halfway through an
apply. Each rule names where the thing is written (a policy key, a queue argument, or one value of
it), the first version that refuses it, and the replacement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Where = Literal["policy", "operator_policy", "queue_argument"]
Status = Literal["removed", "denied", "deprecated"]

_MIRRORING = (
    "classic queue mirroring is gone: use quorum queues (type: quorum) for replicated queues, or streams, "
    "and drop the ha-* keys"
)


@dataclass(frozen=True, slots=True)
class Rule:
    where: frozenset[Where]
    key: str  # the policy key or argument name; a trailing * matches every key with that prefix
    since: tuple[int, int]  # the first version that refuses (or deprecates) it
    status: Status
    replacement: str
    value: Any = None  # only this value is refused (None: any value)

    def matches(self, key: str, value: Any) -> bool:
        named = key.startswith(self.key[:-1]) if self.key.endswith("*") else key == self.key
        return named and (self.value is None or (type(value) is type(self.value) and value == self.value))

    def describe(self, key: str, value: Any) -> str:
        what = f"{key}: {value!r}" if self.value is not None else key
        verb = {"removed": "was removed in", "denied": "is denied by default from", "deprecated": "is deprecated in"}
        return f"{what} {verb[self.status]} RabbitMQ {self.since[0]}.{self.since[1]}; {self.replacement}"


_POLICIES: frozenset[Where] = frozenset({"policy", "operator_policy"})
_OPERATOR: frozenset[Where] = frozenset({"operator_policy"})
_ARGUMENT: frozenset[Where] = frozenset({"queue_argument"})

RULES: tuple[Rule, ...] = (
    Rule(_POLICIES, "ha-*", (4, 0), "removed", _MIRRORING),
    Rule(
        _POLICIES,
        "queue-master-locator",
        (4, 0),
        "denied",
        "use queue-leader-locator (client-local or balanced) instead",
    ),
    # Lazy mode is gone (classic queues v2 page to disk by themselves): 4.x refuses the key in operator
    # policies and ignores it in policies and queue arguments.
    Rule(_OPERATOR, "queue-mode", (4, 0), "removed", "remove it: classic queues (version 2) are always lazy"),
    Rule(
        _ARGUMENT,
        "x-queue-version",
        (4, 0),
        "removed",
        "classic queue version 1 is gone: use x-queue-version: 2 or leave it out",
        value=1,
    ),
    Rule(
        _ARGUMENT,
        "x-queue-master-locator",
        (4, 0),
        "denied",
        "use x-queue-leader-locator (client-local or balanced) instead",
    ),
)


def refusals(where: Where, items: dict[str, Any], version: tuple[int, ...]) -> list[tuple[str, str]]:
    """(key, reason) for each key of `items` that a broker of `version` refuses."""
    found = []
    for key, value in items.items():
        for rule in RULES:
            if where in rule.where and rule.status != "deprecated" and version[:2] >= rule.since and rule.matches(
                key, value
            ):
                found.append((key, rule.describe(key, value)))
                break
    return found
