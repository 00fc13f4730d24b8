"""Routing rules: dead letters that go nowhere, objects nothing reaches, and policies that fight.

They judge one vhost at a time through the router's own model (route.Topology) and the one policy
matcher (topo.policy), so lint, `topo route` and `topo explain` agree about what applies.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from topo.lint.core import Finding, Level, LintInput, rule
from topo.policy import Policy, effective, match
from topo.route import BUILTIN_EXCHANGES, Topology
from topo.state import Key, Kind, Obj


def _topologies(lint: LintInput) -> dict[str, Topology]:
    vhosts = sorted({key.vhost for key in lint.objects if key.vhost is not None})
    topologies = {}
    for vhost in vhosts:
        topology = Topology.of(lint.objects, vhost, lint.external)
        topology.version = lint.target  # which policies a queue type accepts differs between 3.x and 4.x
        topologies[vhost] = topology
    return topologies


def _queues(lint: LintInput, topologies: dict[str, Topology]) -> Iterator[tuple[Obj, Topology]]:
    for queue in lint.of_kind(Kind.QUEUE):
        topology = topologies.get(queue.key.vhost)
        if topology is not None:
            yield queue, topology


def _arguments(obj: Obj) -> dict[str, Any]:
    return dict(obj.attrs.get("arguments") or {})


def _where(source: str) -> tuple[str, ...]:
    """The path inside a queue's declaration for a key that comes from `source` (an argument, or a policy)."""
    if source.startswith("argument "):
        return ("arguments", source.split()[1])
    return ("arguments",)


@rule("dead-letter-exchange", "dead-letter exchanges (queue argument or policy key) that are not declared")
def dead_letter_exchange(lint: LintInput) -> Iterator[Finding]:
    topologies = _topologies(lint)
    for queue, topology in _queues(lint, topologies):
        exchange, _ = topology.dead_letter(topology.queues[queue.key.name])
        if exchange is None:
            continue
        name, source = exchange
        if name == "" or name in topology.exchanges:
            continue
        yield lint.finding(
            Level.ERROR,
            "dead-letter-exchange-missing",
            queue,
            f"dead-letter exchange {name!r} (from {source}) is not declared in vhost {queue.key.vhost!r}: RabbitMQ "
            "drops every message this queue dead-letters (rejected, expired or over its length limit)",
            f"declare exchange {name!r} (or mark it external: true if something else declares it), or correct the name",
            *_where(source),
        )


@rule("dead-letter-strategy", "x-dead-letter-strategy at-least-once that falls back to at-most-once")
def dead_letter_strategy(lint: LintInput) -> Iterator[Finding]:
    topologies = _topologies(lint)
    for queue, topology in _queues(lint, topologies):
        model = topology.queues[queue.key.name]
        keys = effective(topology.policies, Kind.QUEUE, model.name, model.arguments, model.type, lint.target).keys
        strategy = keys.get("dead-letter-strategy")
        if strategy is None or strategy[0] != "at-least-once":
            continue
        where = _where(strategy[1])
        if model.type != "quorum":
            # Only quorum queues implement it; the model refuses the argument on other types, and those
            # types refuse a whole policy that sets it (topo.policy.unsupported).
            continue
        overflow = keys.get("overflow")
        if overflow is not None and overflow[0] == "reject-publish":
            continue
        current = f"overflow is {overflow[0]!r} (from {overflow[1]})" if overflow else "overflow is not set (drop-head)"
        yield lint.finding(
            Level.WARNING,
            "dead-letter-strategy-overflow",
            queue,
            f"dead-letter-strategy at-least-once (from {strategy[1]}) needs overflow reject-publish, but {current}: "
            "RabbitMQ falls back to at-most-once, and a dead letter can be lost",
            "set x-overflow: reject-publish (or overflow: reject-publish in the queue's policy)",
            *where,
        )


def _alternate_targets(topology: Topology) -> set[str]:
    targets = set()
    for exchange in topology.exchanges.values():
        found = topology.alternate_exchange(exchange)
        if found is not None:
            targets.add(found[0])
    return targets


def _dead_letter_targets(topology: Topology) -> tuple[set[str], set[str]]:
    """Exchanges that queues dead-letter to, and queues reached by dead-lettering to the default exchange
    with a fixed routing key (the queue's name)."""
    exchanges, queues = set(), set()
    for queue in topology.queues.values():
        exchange, routing_key = topology.dead_letter(queue)
        if exchange is None:
            continue
        exchanges.add(exchange[0])
        if exchange[0] == "" and routing_key is not None:
            queues.add(routing_key[0])
    return exchanges, queues


@rule("reachability", "queues no binding reaches, internal exchanges nothing feeds, exchanges that route nowhere")
def reachability(lint: LintInput) -> Iterator[Finding]:
    topologies = _topologies(lint)
    for vhost, topology in topologies.items():
        alternates = _alternate_targets(topology)
        dead_letters, dead_lettered_queues = _dead_letter_targets(topology)
        into: dict[str, list[str]] = {}  # destination "queue x" / "exchange x" -> sources
        for source, bindings in topology.bindings.items():
            for binding in bindings:
                into.setdefault(f"{binding.destination_type} {binding.destination}", []).append(source)
        for name, exchange in sorted(topology.exchanges.items()):
            obj = lint.objects.get(Key(Kind.EXCHANGE, vhost, name))
            if obj is None or name == "" or name in BUILTIN_EXCHANGES or name.startswith("amq."):
                continue
            if not topology.bound(name) and topology.alternate_exchange(exchange) is None:
                yield lint.finding(
                    Level.WARNING,
                    "exchange-routes-nowhere",
                    obj,
                    "no binding out of this exchange and no alternate exchange: every message published to it "
                    "is dropped (or returned to a publisher that sets mandatory)",
                    "bind a queue or exchange to it, give it an alternate-exchange, or remove it",
                )
            if exchange.internal and not into.get(f"exchange {name}") and name not in alternates | dead_letters:
                yield lint.finding(
                    Level.WARNING,
                    "internal-exchange-unreachable",
                    obj,
                    "internal exchange that no exchange-to-exchange binding, alternate exchange or dead-letter "
                    "exchange setting feeds: the broker refuses publishes to it, so nothing ever reaches it",
                    "bind an exchange to it, name it as an alternate or dead-letter exchange, or make it "
                    "internal: false",
                    "internal",
                )
        for name in sorted(topology.queues):
            obj = lint.objects.get(Key(Kind.QUEUE, vhost, name))
            if obj is None or into.get(f"queue {name}") or name in dead_lettered_queues:
                continue
            # Every queue is bound to the default exchange by its name, and who publishes there is not in
            # the topology: a queue without bindings is a work queue as often as a mistake. Info, not a warning.
            yield lint.finding(
                Level.INFO,
                "queue-unbound",
                obj,
                f"no binding routes to this queue: only messages published to the default exchange with routing "
                f"key {name!r} reach it",
                "nothing, if producers publish to it by name; else bind it to the exchange its messages come from",
            )


def _policy_obj(lint: LintInput, vhost: str, policy: Policy) -> Obj | None:
    kind = Kind.OPERATOR_POLICY if policy.operator else Kind.POLICY
    return lint.objects.get(Key(kind, vhost, policy.name))


@rule("policy-tie", "two policies of equal priority that match the same queue or exchange")
def policy_tie(lint: LintInput) -> Iterator[Finding]:
    topologies = _topologies(lint)
    for vhost, topology in topologies.items():
        # One finding per set of tied policies, naming the objects they fight over.
        ties: dict[tuple[bool, tuple[str, ...]], list[str]] = {}
        objects = [(Kind.QUEUE, q.name, q.type) for q in topology.queues.values() if not q.external]
        objects += [
            (Kind.EXCHANGE, x.name, None)
            for x in topology.exchanges.values()
            if Key(Kind.EXCHANGE, vhost, x.name) in lint.objects
        ]
        for operator in (False, True):
            policies = [p for p in topology.policies if p.operator is operator]
            if len(policies) < 2:
                continue
            for kind, name, queue_type in objects:
                found = match(policies, kind, name, queue_type, lint.target)
                if found.winner is None or not found.tied:
                    continue
                names = tuple(sorted(p.name for p in [found.winner, *found.tied]))
                ties.setdefault((operator, names), []).append(f"{kind.value} {name!r}")
        for (operator, names), over in sorted(ties.items()):
            what = "operator policies" if operator else "policies"
            first = next(p for p in topology.policies if p.name == names[0] and p.operator is operator)
            obj = _policy_obj(lint, vhost, first)
            shown = ", ".join(over[:5]) + (f" and {len(over) - 5} more" if len(over) > 5 else "")
            yield lint.finding(
                Level.WARNING,
                "policy-tie",
                obj,
                f"{what} {', '.join(repr(n) for n in names)} have the same priority {first.priority} and all match "
                f"{shown}: RabbitMQ applies only one of them, and which one is not defined (it follows the order "
                "of the broker's parameter store, not the names), so the keys in force may change after a restart "
                "or re-import",
                "give them different priorities, or narrow their patterns or apply-to so that they do not overlap",
                "priority",
            )


@rule("argument-policy-conflict", "queue arguments that a matching policy sets to another value")
def argument_policy_conflict(lint: LintInput) -> Iterator[Finding]:
    topologies = _topologies(lint)
    for queue, topology in _queues(lint, topologies):
        model = topology.queues[queue.key.name]
        from_policies = effective(topology.policies, Kind.QUEUE, model.name, {}, model.type, lint.target).keys
        in_force = effective(topology.policies, Kind.QUEUE, model.name, model.arguments, model.type, lint.target).keys
        for argument, value in sorted(model.arguments.items()):
            key = argument[2:] if argument.startswith("x-") else argument
            if key not in from_policies:
                continue
            policy_value, source = from_policies[key]
            if policy_value == value and type(policy_value) is type(value):
                continue
            result, why = in_force[key]
            yield lint.finding(
                Level.WARNING,
                "argument-policy-conflict",
                queue,
                f"argument {argument}={value!r} and {key}={policy_value!r} from {source} disagree; in effect: "
                f"{result!r}, from {why} (RabbitMQ takes the smaller value for numeric limits and the queue's "
                "argument for every other key)",
                f"set {key} in one place only: drop {argument} to let policies manage it, or exclude the queue "
                "from the policy's pattern",
                "arguments",
                argument,
            )
