"""The effective configuration of one queue or exchange: policies that win, merged keys, bindings, dead letters.

Pure: works on a Topology (route.py) built from the files or from the broker.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from topo.compat import release_of
from topo.policy import Effective, Match, Policy, effective, merge_operator
from topo.route import Binding, Message, RouteError, Topology, dead_letter
from topo.state import Key, Kind, Obj


@dataclass(slots=True)
class Explanation:
    kind: Kind
    name: str
    vhost: str
    type: str
    arguments: dict[str, Any]
    effective: Effective
    bindings_in: list[Binding] = field(default_factory=list)
    bindings_out: list[Binding] = field(default_factory=list)
    dead_letters: Any = None  # DeadLetterResult for queues
    alternate_of: list[str] = field(default_factory=list)  # exchanges whose alternate exchange this is
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        def policy(match: Match) -> dict[str, Any] | None:
            if match.winner is None:
                return None
            return {
                "name": match.winner.name,
                "priority": match.winner.priority,
                "definition": match.winner.definition,
                "tied_with": [p.name for p in match.tied],
                "overridden": [p.name for p in match.candidates[1:] if p not in match.tied],
            }

        out: dict[str, Any] = {
            "kind": self.kind.value,
            "name": self.name,
            "vhost": self.vhost,
            "type": self.type,
            "arguments": self.arguments,
            "policy": policy(self.effective.policy),
            "operator_policy": policy(self.effective.operator_policy),
            "effective": {
                key: {"value": value, "source": source} for key, (value, source) in self.effective.keys.items()
            },
            "refused": {**self.effective.policy.refused, **self.effective.operator_policy.refused},
            "bindings_in": [_binding_json(b) for b in self.bindings_in],
            "notes": self.notes,
        }
        if self.kind is Kind.EXCHANGE:
            out["bindings_out"] = [_binding_json(b) for b in self.bindings_out]
            out["alternate_exchange_of"] = self.alternate_of
        else:
            out["dead_letters"] = self.dead_letters.to_json() if self.dead_letters is not None else None
        return out


def _binding_json(binding: Binding) -> dict[str, Any]:
    return {
        "source": binding.source,
        "destination": binding.destination,
        "destination_type": binding.destination_type,
        "routing_key": binding.routing_key,
        "arguments": binding.arguments,
    }


def explain(topology: Topology, name: str) -> list[Explanation]:
    """The queue and/or the exchange called `name` (RabbitMQ allows one of each)."""
    found = []
    queue = topology.queues.get(name)
    if queue is not None:
        result = Explanation(
            Kind.QUEUE,
            name,
            topology.vhost,
            queue.type,
            queue.arguments,
            effective(topology.policies, Kind.QUEUE, name, queue.arguments, queue.type, topology.version),
        )
        result.bindings_in = [
            b
            for bs in topology.bindings.values()
            for b in bs
            if b.destination_type == "queue" and b.destination == name
        ]
        result.dead_letters = dead_letter(topology, name, Message(("",), {}))
        _tie_notes(result)
        found.append(result)
    exchange = topology.exchanges.get(name)
    if exchange is not None and not exchange.external:
        result = Explanation(
            Kind.EXCHANGE,
            name,
            topology.vhost,
            exchange.type,
            exchange.arguments,
            effective(topology.policies, Kind.EXCHANGE, name, exchange.arguments),
        )
        result.bindings_in = [
            b
            for bs in topology.bindings.values()
            for b in bs
            if b.destination_type == "exchange" and b.destination == name
        ]
        result.bindings_out = list(topology.bound(name))
        result.alternate_of = sorted(
            other.name
            for other in topology.exchanges.values()
            if other.name != name and (topology.alternate_exchange(other) or ("", ""))[0] == name
        )
        if exchange.internal:
            result.notes.append("internal: publishers cannot publish to it; only exchange-to-exchange bindings feed it")
        alternate = result.effective.keys.get("alternate-exchange")
        if alternate is not None and alternate[0] not in topology.exchanges:
            result.notes.append(
                f"its alternate exchange {alternate[0]!r} does not exist: unroutable messages are dropped"
            )
        _tie_notes(result)
        found.append(result)
    if not found:
        raise RouteError(f"no queue or exchange named {name!r} in vhost {topology.vhost!r}")
    return found


def _tie_notes(result: Explanation) -> None:
    for label, match in (
        ("policies", result.effective.policy),
        ("operator policies", result.effective.operator_policy),
    ):
        if match.tied:
            names = ", ".join(repr(p.name) for p in [match.winner, *match.tied] if p is not None)
            result.notes.append(
                f"{label} {names} match with the same priority {match.winner.priority if match.winner else ''}: "
                "RabbitMQ applies one of them, and which one is not defined; give them different priorities"
            )


def _q(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _policy_lines(label: str, match: Match) -> list[str]:
    if match.winner is None:
        return [f"  {label}: none"]
    lines = [
        f"  {label}: {_q(match.winner.name)} (priority {match.winner.priority}, pattern {_q(match.winner.pattern)})"
    ]
    for other in match.candidates[1:]:
        why = "same priority: a tie" if other in match.tied else f"lower priority {other.priority}"
        lines.append(f"    also matches: {_q(other.name)} ({why})")
    return lines


def explanation_text(result: Explanation) -> str:
    what = "queue" if result.kind is Kind.QUEUE else "exchange"
    lines = [f"{what} {_q(result.name)} in vhost {_q(result.vhost)} (type {result.type}):"]
    lines.extend(_policy_lines("policy", result.effective.policy))
    lines.extend(_policy_lines("operator policy", result.effective.operator_policy))
    if result.effective.keys:
        lines.append("  effective:")
        for key, (value, source) in result.effective.keys.items():
            lines.append(f"    {key} = {json.dumps(value, ensure_ascii=False)}  ({source})")
    else:
        lines.append("  effective: nothing set (no arguments, no policy keys)")
    for match in (result.effective.policy, result.effective.operator_policy):
        for name, keys in match.refused.items():
            lines.append(
                f"  not applied: {_q(name)} matches the name but sets {', '.join(keys)}, which {result.type} queues "
                "do not support: RabbitMQ applies none of its keys"
            )
    if result.kind is Kind.QUEUE:
        lines.append("  bindings into it:")
        lines.append(f"    (default exchange) routing key {_q(result.name)}")
        lines.extend(f"    {_q(b.source)} {b.describe()}" for b in result.bindings_in)
        lines.extend(_dead_letter_lines(result.dead_letters))
    else:
        lines.append("  bindings into it:" if result.bindings_in else "  bindings into it: none")
        lines.extend(f"    {_q(b.source)} {b.describe()}" for b in result.bindings_in)
        lines.append("  bindings out of it:" if result.bindings_out else "  bindings out of it: none (routes nowhere)")
        lines.extend(f"    {b.describe()} → {b.destination_type} {_q(b.destination)}" for b in result.bindings_out)
        if result.alternate_of:
            lines.append(f"  alternate exchange of: {', '.join(map(_q, result.alternate_of))}")
    lines.extend(f"  note: {note}" for note in result.notes)
    return "\n".join(lines) + "\n"


def _dead_letter_lines(dead: Any) -> list[str]:
    if dead is None or dead.exchange is None:
        return ["  dead letters: dropped (no dead-letter exchange)"]
    target = "the default exchange" if dead.exchange == "" else f"exchange {_q(dead.exchange)}"
    lines = [f"  dead letters: to {target} ({dead.exchange_source})"]
    if dead.routing_key is not None:
        lines.append(f"    with routing key {_q(dead.routing_key)} ({dead.routing_key_source})")
        if dead.route is not None:
            reached = ", ".join(map(_q, dead.route.queues)) or "no queue (dropped)"
            lines.append(f"    reaching: {reached}")
    else:
        lines.append("    with the routing keys they were published with")
    lines.extend(f"    note: {note}" for note in dead.notes if "routing key" not in note)
    return lines


def policy_of_new_queue(policies: list[Policy], queue: Obj, version: tuple[int, ...] | None = None) -> str | None:
    """One line for the plan: the policy and operator policy a created queue will get, with their keys.
    `policies`: those of the queue's vhost."""
    attrs = queue.attrs
    found = effective(policies, Kind.QUEUE, queue.key.name, attrs.get("arguments") or {}, attrs.get("type"), version)
    merged = merge_operator(
        found.policy.winner.definition if found.policy.winner else {},
        found.operator_policy.winner.definition if found.operator_policy.winner else {},
    )
    parts = []
    for label, match in (("policy", found.policy), ("operator policy", found.operator_policy)):
        if match.winner is None:
            continue
        keys = []
        for key, (value, source) in merged.items():
            if source != label:
                continue
            text = f"{key}={json.dumps(value, ensure_ascii=False)}"
            final = found.keys.get(key)
            if final is not None and final[1].startswith("argument"):
                text += f" (the queue's argument {json.dumps(final[0], ensure_ascii=False)} applies)"
            keys.append(text)
        tie = " (tied with " + ", ".join(_q(p.name) for p in match.tied) + ")" if match.tied else ""
        parts.append(f"{label} {_q(match.winner.name)}{tie}" + (f": {', '.join(keys)}" if keys else ""))
    return "; ".join(parts) or None


def policies_after(desired: Any, actual: Any, changes: list[Any]) -> dict[Key, str]:
    """For each queue a plan creates: the policies that will apply once the plan is applied.

    The policies then in force are the files' plus those on the broker the plan leaves in place.
    """
    created = [
        c for c in changes if c.kind is Kind.QUEUE and c.after is not None and c.action.value in ("create", "replace")
    ]
    if not created:
        return {}
    deleted = {c.key for c in changes if c.after is None}
    kinds = (Kind.POLICY, Kind.OPERATOR_POLICY)
    policies = {k: o for k, o in actual.objects.items() if k.kind in kinds and k not in deleted}
    policies.update({k: o for k, o in desired.objects.items() if k.kind in kinds})
    by_vhost: dict[str, list[Policy]] = {}
    for obj in policies.values():
        by_vhost.setdefault(obj.key.vhost, []).append(Policy.of(obj))
    version = release_of(actual.version) if actual.version else None
    # The note depends on the queue's name only through which policies select it: queues selected by the
    # same policies, with the same type and arguments, share it (10,000 queues under one policy: 130 ms
    # of each plan that creates them, computed one by one).
    shared: dict[tuple[Any, ...], str | None] = {}
    notes = {}
    for change in created:
        vhost_policies = by_vhost.get(change.key.vhost, [])
        if not vhost_policies:
            continue
        queue = Obj(change.key, change.after)
        note = _shared_note(shared, vhost_policies, queue, version)
        if note:
            notes[change.key] = note
    return notes


def _shared_note(
    shared: dict[tuple[Any, ...], str | None], policies: list[Policy], queue: Obj, version: tuple[int, ...] | None
) -> str | None:
    name, attrs = queue.key.name, queue.attrs
    queue_type = attrs.get("type")
    selecting = tuple(i for i, policy in enumerate(policies) if policy.names(Kind.QUEUE, name, queue_type))
    if not selecting:
        return None
    arguments = attrs.get("arguments") or {}
    try:
        # With each value's type: 1, 1.0 and true hash alike but are shown apart.
        key = (queue.key.vhost, selecting, queue_type, frozenset((k, type(v), v) for k, v in arguments.items()))
    except TypeError:  # an argument whose value is a list or a table: worked out for this queue alone
        return policy_of_new_queue(policies, queue, version)
    if key not in shared:
        shared[key] = policy_of_new_queue(policies, queue, version)
    return shared[key]
