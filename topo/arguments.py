"""What RabbitMQ accepts as queue, exchange and binding arguments, per queue type.

One table, so the model can reject what the broker would reject (or silently misread, like a TTL
written as a string) before any request is sent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

QUEUE_TYPES = ("classic", "quorum", "stream")


@dataclass(frozen=True, slots=True)
class ArgumentRule:
    value: str  # "int", "str", "bool"
    queue_types: frozenset[str]
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    pattern: str | None = None

    def describe(self) -> str:
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.pattern:
            return "a duration such as 7D, 12h, 30m (units Y M D h m s)"
        text = {"int": "an integer", "str": "a string", "bool": "true or false"}[self.value]
        if self.minimum is not None and self.maximum is not None:
            return f"{text} from {self.minimum} to {self.maximum}"
        if self.minimum is not None:
            return f"{text} >= {self.minimum}"
        return text


def _rule(value: str, types: str, **kwargs: Any) -> ArgumentRule:
    return ArgumentRule(value, frozenset(types.split()), **kwargs)


QUEUE_ARGUMENTS: dict[str, ArgumentRule] = {
    "x-message-ttl": _rule("int", "classic quorum", minimum=0),
    "x-expires": _rule("int", "classic quorum", minimum=1),
    "x-max-length": _rule("int", "classic quorum", minimum=0),
    "x-max-length-bytes": _rule("int", "classic quorum stream", minimum=0),
    "x-overflow": _rule("str", "classic quorum", choices=("drop-head", "reject-publish", "reject-publish-dlx")),
    "x-dead-letter-exchange": _rule("str", "classic quorum"),
    "x-dead-letter-routing-key": _rule("str", "classic quorum"),
    "x-dead-letter-strategy": _rule("str", "quorum", choices=("at-most-once", "at-least-once")),
    "x-single-active-consumer": _rule("bool", "classic quorum"),
    "x-max-priority": _rule("int", "classic", minimum=1, maximum=255),
    "x-queue-mode": _rule("str", "classic", choices=("default", "lazy")),
    "x-queue-version": _rule("int", "classic", minimum=1, maximum=2),
    "x-queue-master-locator": _rule("str", "classic", choices=("min-masters", "client-local", "random")),
    "x-delivery-limit": _rule("int", "quorum", minimum=0),
    "x-quorum-initial-group-size": _rule("int", "quorum", minimum=1),
    "x-max-in-memory-length": _rule("int", "quorum", minimum=0),
    "x-max-in-memory-bytes": _rule("int", "quorum", minimum=0),
    "x-queue-leader-locator": _rule("str", "quorum stream", choices=("client-local", "balanced", "random")),
    "x-max-age": _rule("str", "stream", pattern=r"^[0-9]+[YMDhms]$"),
    "x-stream-max-segment-size-bytes": _rule("int", "stream", minimum=1),
    "x-initial-cluster-size": _rule("int", "stream", minimum=1),
}

EXCHANGE_ARGUMENTS: dict[str, ArgumentRule] = {
    "alternate-exchange": _rule("str", ""),
    "x-delayed-type": _rule("str", "", choices=("direct", "fanout", "topic", "headers")),
}

BUILTIN_EXCHANGE_TYPES = ("direct", "fanout", "topic", "headers")
HEADERS_MATCH = ("all", "any", "all-with-x", "any-with-x")


def _type_ok(rule: ArgumentRule, value: Any) -> bool:
    # bool is a subclass of int in Python, but not to RabbitMQ: check the exact type.
    expected = {"int": int, "str": str, "bool": bool}[rule.value]
    return type(value) is expected


def check_argument(name: str, value: Any, rule: ArgumentRule) -> str | None:
    """None when `value` is acceptable for argument `name`, else the reason."""
    if not _type_ok(rule, value):
        return f"must be {rule.describe()}, got {type(value).__name__} {value!r}"
    if rule.choices and value not in rule.choices:
        return f"must be {rule.describe()}, got {value!r}"
    if rule.pattern and not re.match(rule.pattern, value):
        return f"must be {rule.describe()}, got {value!r}"
    if rule.minimum is not None and value < rule.minimum:
        return f"must be {rule.describe()}, got {value}"
    if rule.maximum is not None and value > rule.maximum:
        return f"must be {rule.describe()}, got {value}"
    return None


INT64 = (-(2**63), 2**63 - 1)


def value_problem(value: Any) -> str | None:
    """What no AMQP table can carry: null, infinities/NaN, integers beyond 64 bits."""
    if value is None:
        return "has no value (null); write a value, or remove the key"
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return f"must be a finite number, got {value}"
    if type(value) is int and not INT64[0] <= value <= INT64[1]:
        return "is out of range for a 64-bit integer"
    if isinstance(value, list):
        return next((p for p in map(value_problem, value) if p), None)
    if isinstance(value, dict):
        return next((p for p in map(value_problem, value.values()) if p), None)
    return None


def generic_argument_problems(arguments: dict[str, Any]) -> list[tuple[str, str]]:
    return [(name, problem) for name, value in arguments.items() if (problem := value_problem(value))]


def queue_argument_problems(queue_type: str, arguments: dict[str, Any]) -> list[tuple[str, str]]:
    """(argument name, reason) for every argument the broker would reject or misread."""
    problems = generic_argument_problems(arguments)
    allowed = sorted(n for n, r in QUEUE_ARGUMENTS.items() if queue_type in r.queue_types)
    for name, value in arguments.items():
        if value_problem(value):
            continue
        if name == "x-queue-type":
            problems.append((name, "set the queue type with the `type` key, not as an argument"))
            continue
        rule = QUEUE_ARGUMENTS.get(name)
        if rule is None:
            # Classic queues keep unknown arguments (plugins read them); the other types reject them.
            if queue_type != "classic":
                problems.append((name, f"not supported by {queue_type} queues; allowed: {', '.join(allowed)}"))
            continue
        if queue_type not in rule.queue_types:
            problems.append((name, f"not supported by {queue_type} queues; allowed: {', '.join(allowed)}"))
            continue
        if queue_type == "quorum" and name == "x-overflow" and value == "reject-publish-dlx":
            problems.append((name, "quorum queues support drop-head and reject-publish only"))
            continue
        reason = check_argument(name, value, rule)
        if reason:
            problems.append((name, reason))
    return problems


def exchange_argument_problems(arguments: dict[str, Any]) -> list[tuple[str, str]]:
    problems = generic_argument_problems(arguments)
    for name, value in arguments.items():
        rule = EXCHANGE_ARGUMENTS.get(name)
        if rule is not None and not value_problem(value):
            reason = check_argument(name, value, rule)
            if reason:
                problems.append((name, reason))
    return problems
