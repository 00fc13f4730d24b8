"""Upgrade rules: what the target RabbitMQ version removed, denies by default or deprecates.

The facts come from topo.compat (one table, cited from RabbitMQ's source); these rules only find
where a state uses them. Removed and denied-by-default features are errors (the target broker refuses
them); deprecated ones are warnings.
"""

from __future__ import annotations

from collections.abc import Iterator

from topo.compat import (
    DEPRECATED_FEATURES,
    REFUSED,
    Problem,
    Severity,
    default_delivery_limit,
    deprecated_feature_stage,
)
from topo.lint.core import Finding, Level, LintInput, rule
from topo.policy import Match, Policy, match, policies_in
from topo.state import Kind

_LEVELS = {Severity.REMOVED: Level.ERROR, Severity.DENIED: Level.ERROR, Severity.DEPRECATED: Level.WARNING}


def _level(problem: Problem) -> Level:
    return _LEVELS[problem.severity]


def _message(problem: Problem, lint: LintInput) -> str:
    return f"{problem.message()}; {problem.consequence(lint.target_text)}"


@rule("policy-keys", "removed, denied and deprecated keys in policies and operator policies")
def policy_keys(lint: LintInput) -> Iterator[Finding]:
    for policy in lint.of_kind(Kind.POLICY, Kind.OPERATOR_POLICY):
        definition = policy.attrs.get("definition") or {}
        operator = policy.kind is Kind.OPERATOR_POLICY
        what = "operator policy" if operator else "policy"
        unknown = set(lint.compat.unknown_policy_keys(definition, operator=operator))
        problems = {problem.key: problem for problem in lint.compat.policy_problems(definition)}
        for key in definition:
            problem = problems.get(key)
            if problem is not None and (problem.refused or key not in unknown):
                yield lint.finding(
                    _level(problem),
                    problem.change.id,
                    policy,
                    _message(problem, lint),
                    problem.change.replacement,
                    "definition",
                    key,
                )
            elif key in unknown:
                # No validator for it on the target at all: 400 "not recognised policy settings".
                message = f"{what} key {key} is not recognised by RabbitMQ {lint.target_text}"
                if problem is not None:  # e.g. queue-mode in an operator policy: never valid there
                    message += f" (and it {problem.change.what})"
                yield lint.finding(
                    Level.ERROR,
                    "unknown-policy-key",
                    policy,
                    message,
                    f"remove {key}, or check its spelling against the {what} keys RabbitMQ {lint.target_text} knows",
                    "definition",
                    key,
                )


@rule("policy-values", "policy and operator-policy values the target version refuses")
def policy_values(lint: LintInput) -> Iterator[Finding]:
    for policy in lint.of_kind(Kind.POLICY, Kind.OPERATOR_POLICY):
        what = "operator policy" if policy.kind is Kind.OPERATOR_POLICY else "policy"
        for key, reason in lint.compat.policy_value_problems(policy.attrs.get("definition") or {}):
            yield lint.finding(
                Level.ERROR,
                "policy-value",
                policy,
                f"{what} key {key} {reason}; RabbitMQ {lint.target_text} refuses it",
                f"give {key} a value RabbitMQ {lint.target_text} accepts",
                "definition",
                key,
            )


@rule("queue-arguments", "removed, denied and deprecated queue arguments")
def queue_arguments(lint: LintInput) -> Iterator[Finding]:
    for queue in lint.of_kind(Kind.QUEUE):
        for problem in lint.compat.queue_argument_problems(queue.attrs.get("arguments") or {}):
            yield lint.finding(
                _level(problem),
                problem.change.id,
                queue,
                _message(problem, lint),
                problem.change.replacement,
                "arguments",
                problem.key,
            )


@rule("transient-queues", "transient (non-durable) queues that are not exclusive")
def transient_queues(lint: LintInput) -> Iterator[Finding]:
    # Exclusive queues belong to a connection and are never in the state (see normalize.is_transient_queue).
    for queue in lint.of_kind(Kind.QUEUE):
        if queue.attrs.get("type", "classic") != "classic":
            continue
        for problem in lint.compat.queue_shape_problems(durable=bool(queue.attrs.get("durable", True))):
            yield lint.finding(
                _level(problem),
                problem.change.id,
                queue,
                _message(problem, lint),
                problem.change.replacement,
                "durable",
            )


def _sets(found: Match, key: str) -> bool:
    """Whether every policy that may be the effective one sets `key` (a tie may go either way)."""
    top = [found.winner, *found.tied] if found.winner else []
    return bool(top) and all(key in policy.definition for policy in top)


@rule("quorum-delivery-limit", "quorum queues that would drop messages at 4.0's default delivery limit")
def quorum_delivery_limit(lint: LintInput) -> Iterator[Finding]:
    limit = default_delivery_limit(lint.target)
    if limit is None:
        return
    per_vhost: dict[str, tuple[list[Policy], list[Policy]]] = {}
    for queue in lint.of_kind(Kind.QUEUE):
        if queue.attrs.get("type") != "quorum":
            continue
        vhost = queue.key.vhost
        if vhost not in per_vhost:
            found = policies_in(lint.objects, vhost)
            per_vhost[vhost] = ([p for p in found if not p.operator], [p for p in found if p.operator])
        policies, operator = per_vhost[vhost]
        name = queue.key.name
        policy = match(policies, Kind.QUEUE, name, "quorum", lint.target)
        operator_policy = match(operator, Kind.QUEUE, name, "quorum", lint.target)
        arguments = queue.attrs.get("arguments") or {}
        explicit = (
            "x-delivery-limit" in arguments
            or _sets(policy, "delivery-limit")
            or _sets(operator_policy, "delivery-limit")
        )
        dead_letter = "x-dead-letter-exchange" in arguments or _sets(policy, "dead-letter-exchange")
        if explicit or dead_letter:
            continue
        yield lint.finding(
            Level.WARNING,
            "quorum-delivery-limit",
            queue,
            f"quorum queue without a dead-letter exchange or a delivery limit: from RabbitMQ 4.0 quorum queues "
            f"have a default delivery limit of {limit}, so a message redelivered more than {limit} times "
            "(a consumer that keeps rejecting or crashing) is dropped",
            "set x-dead-letter-exchange (or a dead-letter-exchange policy) to keep such messages, or set "
            "x-delivery-limit (or a delivery-limit policy; -1 means unlimited) to choose the limit yourself",
            "arguments",
        )


@rule("deprecated-features-used", "what the live broker reports in /api/deprecated-features/used", live_only=True)
def deprecated_features_used(lint: LintInput) -> Iterator[Finding]:
    for item in lint.deprecated_used or []:
        name = str(item.get("name", ""))
        phase = str(item.get("deprecation_phase", ""))
        stage = deprecated_feature_stage(name, lint.target)
        known = DEPRECATED_FEATURES.get(name)
        if stage is not None:
            refused = stage.severity in REFUSED
            state = stage.severity.value
        else:  # a feature topo's table does not know: the broker's own phase decides
            refused = phase in ("denied_by_default", "disconnected", "removed")
            state = phase.replace("_", " ") or "deprecated"
        description = str(item.get("desc") or "").strip()
        message = f"the broker uses deprecated feature {name} ({state} on RabbitMQ {lint.target_text})"
        if description:
            message += f": {description}"
        fix = known.replacement if known else "see " + str(item.get("doc_url") or "RabbitMQ's deprecated features list")
        yield lint.finding(Level.ERROR if refused else Level.WARNING, "deprecated-features-used", None, message, fix)
