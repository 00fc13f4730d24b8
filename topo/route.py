"""Where a message goes: RabbitMQ's routing, simulated over a topology state. Pure: no I/O.

The rules are the broker's (see rabbit_exchange:route/3 and the exchange type modules):
- direct: the binding key equals a routing key; fanout: every binding; topic: words split on `.`
  (the empty key is zero words, `a..b` has an empty middle word), `*` one word, `#` zero or more;
  headers: `x-match` all (the default) / any / all-with-x / any-with-x, a null binding value checks
  presence only, values compare as Erlang's `==` on 3.x (numbers by value: 2 matches 2.0) and exactly
  on 4.x (an integer never matches a float: measured on 4.3.6 by tests/test_route_property.py);
  booleans only ever match booleans.
- A message may carry several routing keys (CC/BCC); each queue receives one copy.
- Exchange-to-exchange bindings are followed; every exchange is visited at most once (cycles end).
- An exchange whose own bindings match nothing hands the message to its alternate exchange (the
  `alternate-exchange` argument, else the key of the policy in force); this applies at every hop.
- An internal exchange refuses a direct publish but routes as a destination. The default exchange
  ("") delivers to the queue named by each routing key, with no alternate exchange.
- Hash and random types (x-consistent-hash, x-modulus-hash, x-random, x-local-random) pick one of
  their bound destinations: the result says "one of …" instead of guessing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from topo.policy import Policy, effective, policies_in
from topo.state import Key, Kind, Obj

# Exchanges every vhost has; bindings may name them although no file declares them.
BUILTIN_EXCHANGES = {
    "amq.direct": "direct",
    "amq.fanout": "fanout",
    "amq.topic": "topic",
    "amq.headers": "headers",
    "amq.match": "headers",
    "amq.rabbitmq.trace": "topic",
}
ONE_OF_TYPES = frozenset({"x-consistent-hash", "x-modulus-hash", "x-random", "x-local-random"})
SIMULATED_TYPES = frozenset({"direct", "fanout", "topic", "headers"}) | ONE_OF_TYPES
X_MATCH = frozenset({"all", "any", "all-with-x", "any-with-x"})


class RouteError(ValueError):
    """The publish itself would fail (unknown or internal exchange): the broker closes the channel."""


@dataclass(frozen=True, slots=True)
class Exchange:
    name: str
    type: str
    internal: bool = False
    arguments: dict[str, Any] = field(default_factory=dict)
    external: bool = False  # exists, but the files do not say what it is bound to


@dataclass(frozen=True, slots=True)
class Queue:
    name: str
    type: str = "classic"
    arguments: dict[str, Any] = field(default_factory=dict)
    external: bool = False


@dataclass(frozen=True, slots=True)
class Binding:
    source: str
    destination_type: str  # "queue" or "exchange"
    destination: str
    routing_key: str
    arguments: dict[str, Any]

    def describe(self) -> str:
        if self.arguments:
            shown = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in sorted(self.arguments.items()))
            return f"[{shown}]"
        return json.dumps(self.routing_key, ensure_ascii=False)


@dataclass(slots=True)
class Topology:
    """One vhost's exchanges, queues, bindings (indexed by source) and policies."""

    vhost: str
    exchanges: dict[str, Exchange] = field(default_factory=dict)
    queues: dict[str, Queue] = field(default_factory=dict)
    bindings: dict[str, list[Binding]] = field(default_factory=dict)
    policies: list[Policy] = field(default_factory=list)
    version: tuple[int, ...] | None = None  # the broker's, when known: policy rules differ in 3.x
    _direct_index: dict[str, dict[str, list[Binding]]] = field(default_factory=dict, repr=False)

    @classmethod
    def of(
        cls, objects: Mapping[Key, Obj], vhost: str, external: Iterable[Key] = (), version: str | None = None
    ) -> Topology:
        topology = cls(vhost, version=parse_version(version) if version else None)
        for name, kind in BUILTIN_EXCHANGES.items():
            topology.exchanges[name] = Exchange(name, kind, internal=name == "amq.rabbitmq.trace")
        for key in external:
            if key.vhost != vhost:
                continue
            if key.kind is Kind.EXCHANGE:
                topology.exchanges[key.name] = Exchange(key.name, "unknown", external=True)
            elif key.kind is Kind.QUEUE:
                topology.queues[key.name] = Queue(key.name, "unknown", external=True)
        for key, obj in objects.items():
            if key.vhost != vhost:
                continue
            attrs = obj.attrs
            if key.kind is Kind.EXCHANGE:
                topology.exchanges[key.name] = Exchange(
                    key.name,
                    attrs.get("type", "direct"),
                    bool(attrs.get("internal")),
                    dict(attrs.get("arguments") or {}),
                )
            elif key.kind is Kind.QUEUE:
                topology.queues[key.name] = Queue(
                    key.name, attrs.get("type", "classic"), dict(attrs.get("arguments") or {})
                )
            elif key.kind is Kind.BINDING:
                binding = Binding(
                    attrs["source"],
                    attrs.get("destination_type", "queue"),
                    attrs["destination"],
                    attrs.get("routing_key", ""),
                    dict(attrs.get("arguments") or {}),
                )
                topology.bindings.setdefault(binding.source, []).append(binding)
        topology.policies = policies_in(objects, vhost)
        for source in topology.bindings:
            topology.bindings[source].sort(key=lambda b: (b.destination_type, b.destination, b.routing_key))
        return topology

    def bound(self, source: str) -> list[Binding]:
        return self.bindings.get(source, [])

    def direct_matches(self, source: str, key: str) -> list[Binding]:
        index = self._direct_index.get(source)
        if index is None:
            index = {}
            for binding in self.bound(source):
                index.setdefault(binding.routing_key, []).append(binding)
            self._direct_index[source] = index
        return index.get(key, [])

    def alternate_exchange(self, exchange: Exchange) -> tuple[str, str] | None:
        """The alternate exchange and where it was set: the argument wins over the policy's key."""
        if "alternate-exchange" in exchange.arguments:
            return str(exchange.arguments["alternate-exchange"]), "argument alternate-exchange"
        found = effective(self.policies, Kind.EXCHANGE, exchange.name, {}).keys.get("alternate-exchange")
        if found is None:
            return None
        return str(found[0]), found[1]

    def dead_letter(self, queue: Queue) -> tuple[tuple[str, str] | None, tuple[str, str] | None]:
        """(exchange, source) and (routing key, source) of a queue's dead letters, policies included."""
        keys = effective(self.policies, Kind.QUEUE, queue.name, queue.arguments, queue.type, self.version).keys
        exchange = keys.get("dead-letter-exchange")
        routing_key = keys.get("dead-letter-routing-key")
        return (
            (str(exchange[0]), exchange[1]) if exchange else None,
            (str(routing_key[0]), routing_key[1]) if routing_key else None,
        )


def parse_version(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


@dataclass(frozen=True, slots=True)
class Message:
    routing_keys: tuple[str, ...] = ("",)
    headers: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Step:
    """One hop: how the message got from `source` to `target`."""

    source: str
    target: str
    target_type: str  # "queue" or "exchange"
    via: str  # "binding", "alternate-exchange", "default exchange"
    detail: str = ""  # the binding key or arguments, or where the alternate exchange is set

    def to_json(self) -> dict[str, str]:
        return {
            "from": self.source,
            "to": self.target,
            "to_type": self.target_type,
            "via": self.via,
            "detail": self.detail,
        }

    def __str__(self) -> str:
        if self.via == "binding":
            return f"{self.source} --{self.detail}--> {self.target_type} {self.target}"
        if self.via == "alternate-exchange":
            return f"{self.source} ==alternate-exchange ({self.detail})==> exchange {self.target}"
        return f"{self.source or '(default exchange)'} --{self.detail}--> queue {self.target}"


@dataclass(slots=True)
class OneOf:
    """A hash or random exchange: the message goes to exactly one of these destinations."""

    exchange: str
    type: str
    candidates: list[str]
    path: list[Step]

    def to_json(self) -> dict[str, Any]:
        return {
            "exchange": self.exchange,
            "type": self.type,
            "candidates": self.candidates,
            "path": [s.to_json() for s in self.path],
        }


@dataclass(slots=True)
class RouteResult:
    vhost: str
    exchange: str
    message: Message
    paths: dict[str, list[Step]] = field(default_factory=dict)  # queue -> the first path that reached it
    one_of: list[OneOf] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def queues(self) -> list[str]:
        return sorted(self.paths)

    @property
    def unroutable(self) -> bool:
        return not self.paths and not self.one_of

    def to_json(self) -> dict[str, Any]:
        return {
            "queues": self.queues,
            "unroutable": self.unroutable,
            "vhost": self.vhost,
            "exchange": self.exchange,
            "routing_keys": list(self.message.routing_keys),
            "headers": self.message.headers,
            "paths": {queue: [s.to_json() for s in self.paths[queue]] for queue in self.queues},
            "one_of": [o.to_json() for o in self.one_of],
            "notes": self.notes,
        }


def topic_matches(pattern: str, key: str) -> bool:
    """rabbit_db_topic_exchange: `*` is one word (possibly empty), `#` zero or more; "" is zero words."""
    words = key.split(".") if key else []
    parts = pattern.split(".") if pattern else []
    # positions[i] = the word positions reachable after matching the first i pattern parts
    reachable = {0}
    for part in parts:
        if part == "#":
            low = min(reachable)
            reachable = set(range(low, len(words) + 1))
        else:
            reachable = {j + 1 for j in reachable if j < len(words) and (part == "*" or words[j] == part)}
        if not reachable:
            return False
    return len(words) in reachable


def _erlang_equal(left: Any, right: Any, exact_numbers: bool = False) -> bool:
    """Erlang's == (3.x's headers exchange: 1 == 1.0) or, with exact_numbers, 4.x's exact match
    (1 and 1.0 differ). true is an atom, never a number, in both."""
    if isinstance(left, bool) or isinstance(right, bool):
        return type(left) is type(right) and left == right
    if isinstance(left, int | float) and isinstance(right, int | float):
        return left == right and (not exact_numbers or type(left) is type(right))
    if isinstance(left, str | bytes) and isinstance(right, str | bytes):
        as_bytes = [v.encode() if isinstance(v, str) else v for v in (left, right)]
        return as_bytes[0] == as_bytes[1]
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(_erlang_equal(left[k], right[k], exact_numbers) for k in left)
    if isinstance(left, list) and isinstance(right, list):
        pairs = zip(left, right, strict=False)
        return len(left) == len(right) and all(_erlang_equal(a, b, exact_numbers) for a, b in pairs)
    return type(left) is type(right) and left == right


def headers_match(arguments: Mapping[str, Any], headers: Mapping[str, Any], exact_numbers: bool = False) -> bool:
    """rabbit_exchange_type_headers:headers_match/2; exact_numbers for 4.x brokers."""
    mode = arguments.get("x-match", "all")
    if mode not in X_MATCH:
        mode = "all"  # the broker refuses such a binding; older brokers matched it as `all`
    with_x = mode.endswith("-with-x")
    usable = [
        (name, value)
        for name, value in arguments.items()
        if name != "x-match" and (with_x or not name.startswith("x-"))
    ]
    results = (
        name in headers and (value is None or _erlang_equal(value, headers[name], exact_numbers))
        for name, value in usable
    )
    return all(results) if mode.startswith("all") else any(results)


def _matching(topology: Topology, exchange: Exchange, message: Message) -> list[Binding]:
    if exchange.type == "fanout" or exchange.type in ONE_OF_TYPES:
        return list(topology.bound(exchange.name))
    if exchange.type == "direct":
        found: dict[int, Binding] = {}
        for key in dict.fromkeys(message.routing_keys):
            for binding in topology.direct_matches(exchange.name, key):
                found.setdefault(id(binding), binding)
        return list(found.values())
    if exchange.type == "topic":
        return [
            b
            for b in topology.bound(exchange.name)
            if any(topic_matches(b.routing_key, key) for key in message.routing_keys)
        ]
    if exchange.type == "headers":
        exact = topology.version is not None and topology.version >= (4,)
        return [b for b in topology.bound(exchange.name) if headers_match(b.arguments, message.headers, exact)]
    return []


def route(topology: Topology, exchange_name: str, message: Message) -> RouteResult:
    """The queues a message published to `exchange_name` reaches, with the first path to each."""
    result = RouteResult(topology.vhost, exchange_name, message)
    if exchange_name == "":
        for key in sorted(set(message.routing_keys)):
            if key in topology.queues:
                result.paths[key] = [Step("", key, "queue", "default exchange", f"routing key {key!r}")]
            else:
                result.notes.append(f"default exchange: no queue named {key!r}")
        return result
    start = topology.exchanges.get(exchange_name)
    if start is None:
        raise RouteError(f"exchange {exchange_name!r} does not exist in vhost {topology.vhost!r} (NOT_FOUND)")
    if start.internal:
        raise RouteError(
            f"exchange {exchange_name!r} in vhost {topology.vhost!r} is internal: the broker refuses publishes to it "
            "(ACCESS_REFUSED); it only receives messages through exchange-to-exchange bindings"
        )
    seen = {exchange_name}
    work: list[tuple[Exchange, list[Step]]] = [(start, [])]
    while work:
        exchange, path = work.pop()
        if exchange.external:
            result.notes.append(f"exchange {exchange.name!r} is external: the files do not say where it routes")
            continue
        if exchange.type not in SIMULATED_TYPES:
            result.notes.append(f"exchange {exchange.name!r} has type {exchange.type!r}, which topo does not simulate")
            continue
        matched = _matching(topology, exchange, message)
        if exchange.type in ONE_OF_TYPES and matched:
            candidates = sorted({f"{b.destination_type} {b.destination}" for b in matched})
            result.one_of.append(OneOf(exchange.name, exchange.type, candidates, path))
            continue
        if not matched:
            alternate = topology.alternate_exchange(exchange)
            if alternate is None:
                continue
            name, where = alternate
            target = topology.exchanges.get(name)
            if target is None:
                result.notes.append(f"alternate exchange {name!r} of {exchange.name!r} ({where}) does not exist")
            elif name not in seen:
                seen.add(name)
                work.append((target, [*path, Step(exchange.name, name, "exchange", "alternate-exchange", where)]))
            continue
        for binding in matched:
            step = Step(exchange.name, binding.destination, binding.destination_type, "binding", binding.describe())
            if binding.destination_type == "queue":
                if binding.destination not in result.paths:
                    result.paths[binding.destination] = [*path, step]
            elif binding.destination not in seen:
                seen.add(binding.destination)
                target = topology.exchanges.get(binding.destination)
                if target is not None:
                    work.append((target, [*path, step]))
    return result


@dataclass(slots=True)
class DeadLetterResult:
    queue: str
    exchange: str | None
    exchange_source: str | None
    routing_key: str | None
    routing_key_source: str | None
    route: RouteResult | None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        routed = self.route.to_json() if self.route else {"queues": [], "unroutable": True}
        return {
            **routed,
            "dead_letter_queue": self.queue,
            "dead_letter_exchange": self.exchange,
            "dead_letter_exchange_source": self.exchange_source,
            "dead_letter_routing_key": self.routing_key,
            "dead_letter_routing_key_source": self.routing_key_source,
            "notes": [*(self.route.notes if self.route else []), *self.notes],
        }


def dead_letter(topology: Topology, queue_name: str, message: Message) -> DeadLetterResult:
    """Where messages rejected or expired from a queue go (rabbit_dead_letter.erl)."""
    queue = topology.queues.get(queue_name)
    if queue is None:
        raise RouteError(f"queue {queue_name!r} does not exist in vhost {topology.vhost!r}")
    exchange, routing_key = topology.dead_letter(queue)
    if exchange is None:
        return DeadLetterResult(
            queue_name,
            None,
            None,
            None,
            None,
            None,
            ["no dead-letter exchange: rejected and expired messages are dropped"],
        )
    keys = (routing_key[0],) if routing_key else message.routing_keys
    result = DeadLetterResult(
        queue_name,
        exchange[0],
        exchange[1],
        routing_key[0] if routing_key else None,
        routing_key[1] if routing_key else None,
        None,
    )
    if routing_key is None:
        result.notes.append("no dead-letter routing key: dead letters keep the routing keys they were published with")
    if exchange[0] != "" and exchange[0] not in topology.exchanges:
        result.notes.append(f"dead-letter exchange {exchange[0]!r} does not exist: dead letters are dropped")
        return result
    target = topology.exchanges.get(exchange[0])
    if target is not None and target.internal:
        # Dead-lettering routes through the exchange directly, so internal exchanges work as DLX.
        target = Exchange(target.name, target.type, False, target.arguments, target.external)
        topology = Topology(
            topology.vhost,
            {**topology.exchanges, target.name: target},
            topology.queues,
            topology.bindings,
            topology.policies,
            topology.version,
        )
    result.route = route(topology, exchange[0], Message(keys, message.headers))
    if queue_name in result.route.paths:
        result.notes.append(
            f"a dead-letter cycle: {queue_name!r} receives its own dead letters; RabbitMQ drops them when they "
            "expired (or hit a length limit) and delivers them only when a consumer rejected them"
        )
    return result
