"""What RabbitMQ accepts as queue, exchange and binding arguments, per queue type and version.

One table, so the model can reject what the broker would reject (or silently misread, like a TTL
written as a string) before any request is sent. Each queue argument's rule carries the versions that
accept it: the queue types that take it on the oldest supported version (3.10, what the files are
checked against offline) and from which later version other types take it, the values a version
accepts where they changed, and the value a queue gets without it. compat.rules_for(version) answers
"what does this version accept" from these rules, beside the policy keys; what a version deprecates or
removes (with the replacement) is compat.CHANGES. Facts from rabbitmq-server's source (each queue
type's capabilities() queue_arguments, rabbit_amqqueue:declare_args/0) as compat.py says.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

QUEUE_TYPES = ("classic", "quorum", "stream")

Version = tuple[int, int, int]  # (major, minor, patch), as compat.parse_version reads it


def _at(steps: tuple[tuple[Version, Any], ...], version: Version, before: Any) -> Any:
    """The value of the last step at or before `version`; `before` when there is none."""
    found = before
    for since, value in steps:
        if since <= version:
            found = value
    return found


@dataclass(frozen=True, slots=True)
class ArgumentRule:
    value: str  # "int", "str", "bool"
    queue_types: frozenset[str]  # the types that take it on 3.10 (offline checks use these)
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    pattern: str | None = None
    # From a later version on: (since, the queue types that take it from then), in version order.
    types_from: tuple[tuple[Version, frozenset[str]], ...] = ()
    # Where the accepted values changed: (since, the values; None once the version no longer checks them).
    values_from: tuple[tuple[Version, tuple[Any, ...] | None], ...] = ()
    # The value a queue gets without the argument (nor a policy setting it): (since, value).
    default_from: tuple[tuple[Version, Any], ...] = ()

    def types_at(self, version: Version) -> frozenset[str]:
        """The queue types a broker of `version` accepts the argument for."""
        return _at(self.types_from, version, self.queue_types)

    def values_at(self, version: Version) -> tuple[Any, ...] | None:
        """The values `version` accepts where they changed between versions; None: not restricted so."""
        return _at(self.values_from, version, None)

    def default_at(self, version: Version) -> Any:
        """What a queue of `version` has without the argument; None: the argument's effect is off."""
        return _at(self.default_from, version, None)

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


def _rule(value: str, types: str, since: tuple[tuple[Version, str], ...] = (), **kwargs: Any) -> ArgumentRule:
    """`types` on 3.10; `since`: (version, the types from then on) for later versions."""
    steps = tuple((version, frozenset(later.split())) for version, later in since)
    return ArgumentRule(value, frozenset(types.split()), types_from=steps, **kwargs)


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
    # No effect since 3.12; 4.3 stopped checking the value (commit a67de22527). compat.CHANGES: x-queue-mode.
    "x-queue-mode": _rule(
        "str",
        "classic",
        choices=("default", "lazy"),
        values_from=(((3, 10, 0), ("default", "lazy")), ((4, 3, 0), None)),
    ),
    # Storage v1 is ignored from 4.0 and refused from 4.3 ("unsupported queue version '1'").
    "x-queue-version": _rule(
        "int", "classic", minimum=1, maximum=2, values_from=(((3, 10, 0), (1, 2)), ((4, 3, 0), (2,)))
    ),
    # Deprecated from 4.0, denied by default from 4.3 (compat.CHANGES: x-queue-master-locator).
    "x-queue-master-locator": _rule("str", "classic", choices=("min-masters", "client-local", "random")),
    # From 4.0 a quorum queue without one gets 20 (rabbit_quorum_queue.erl: DEFAULT_DELIVERY_LIMIT).
    "x-delivery-limit": _rule("int", "quorum", minimum=0, default_from=(((4, 0, 0), 20),)),
    "x-quorum-initial-group-size": _rule("int", "quorum", minimum=1),
    "x-max-in-memory-length": _rule("int", "quorum", minimum=0),
    "x-max-in-memory-bytes": _rule("int", "quorum", minimum=0),
    # Classic queues take it from 4.0 (once the rabbitmq_4.0.0 feature flag is enabled).
    "x-queue-leader-locator": _rule(
        "str",
        "quorum stream",
        since=(((4, 0, 0), "classic quorum stream"),),
        choices=("client-local", "balanced", "random"),
    ),
    "x-max-age": _rule("str", "stream", pattern=r"^[0-9]+[YMDhms]$"),
    "x-stream-max-segment-size-bytes": _rule("int", "stream", minimum=1),
    "x-initial-cluster-size": _rule("int", "stream", minimum=1),
    # Newer than 3.10: no type takes them there (offline, the files are checked as for 3.10, so these count
    # as unknown arguments; their values are not checked).
    "x-stream-filter-size-bytes": _rule("int", "", since=(((4, 2, 0), "stream"),)),
    "x-consumer-disconnected-timeout": _rule("int", "", since=(((4, 3, 0), "quorum"),)),
    "x-delayed-retry-type": _rule("str", "", since=(((4, 3, 0), "quorum"),)),
    "x-delayed-retry-min": _rule("int", "", since=(((4, 3, 0), "quorum"),)),
    "x-delayed-retry-max": _rule("int", "", since=(((4, 3, 0), "quorum"),)),
    "x-consumer-timeout": _rule("int", "", since=(((4, 3, 2), "quorum"),)),
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
        if rule is None or not rule.queue_types:
            # Classic queues keep unknown arguments (plugins read them); the other types reject them.
            # Arguments newer than 3.10 count as unknown here: plan judges them for the broker's version.
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
