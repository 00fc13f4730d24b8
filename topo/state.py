"""One representation for both sides: desired (from the files) and actual (from the broker).

Both sides are turned into `Obj`s with the same canonical attributes (each kind's module does it, see
topo/kinds/), so comparing them is plain equality and set arithmetic.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from topo.capabilities import Capabilities
from topo.kinds import Kind
from topo.passwords import Password
from topo.yamlload import line_of


@dataclass(frozen=True, slots=True, order=True)
class Key:
    kind: Kind
    vhost: str
    name: str


@dataclass(slots=True)
class Obj:
    key: Key
    attrs: dict[str, Any]

    @property
    def kind(self) -> Kind:
        return self.key.kind


# One encoder for every call: json.dumps with options builds a new one each time (a third of the cost of
# the 10,000 binding keys of a large read).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical(value: Any) -> str:
    """A comparison form that keeps what RabbitMQ distinguishes: 60000 != "60000", true != 1."""
    return _CANONICAL.encode(value)


def same_value(left: Any, right: Any) -> bool:
    """Equality as RabbitMQ sees it: 60000 != "60000", true != 1, 5 != 5.0; dict key order ignored."""
    kind = type(left)
    if kind is str or kind is bool or kind is int or kind is float:  # most values, first: cheapest test
        return kind is type(right) and left == right
    # Containers may be subclasses (parsers attach line numbers to them); scalars must match exactly.
    if isinstance(left, dict):
        return (
            isinstance(right, dict)
            and left.keys() == right.keys()
            and all(same_value(value, right[key]) for key, value in left.items())
        )
    if isinstance(left, list):
        return isinstance(right, list) and len(left) == len(right) and all(map(same_value, left, right))
    if type(left) is not type(right):
        return False
    if isinstance(left, Password):
        return left.same_as(right)
    return bool(left == right)


def binding_key(
    vhost: str, source: str, destination_type: str, destination: str, routing_key: str, arguments: dict[str, Any]
) -> Key:
    # A binding has no name: every field is part of its identity.
    identity = canonical([source, destination_type, destination, routing_key, arguments])
    return Key(Kind.BINDING, vhost, identity)


@dataclass(frozen=True, slots=True)
class Location:
    """Where something was declared; the line is looked up only when a message needs it."""

    file: str
    root: Any = field(default=None, repr=False, compare=False)
    path: tuple[Any, ...] = ()

    @property
    def line(self) -> int | None:
        return line_of(self.root, self.path) if self.root is not None else None

    def __str__(self) -> str:
        line = self.line
        return f"{self.file}:{line}" if line else self.file


@dataclass(slots=True)
class Desired:
    """What the files ask for."""

    objects: dict[Key, Obj] = field(default_factory=dict)
    absent: set[Key] = field(default_factory=set)
    # Objects that exist outside topo's control but that bindings may name.
    external: set[Key] = field(default_factory=set)
    vhosts: list[str] = field(default_factory=list)  # managed vhosts, in declaration order
    absent_vhosts: list[str] = field(default_factory=list)
    prune: dict[str, bool] = field(default_factory=dict)
    prune_non_durable: set[str] = field(default_factory=set)  # vhosts where pruning includes non-durable objects
    # Name patterns per vhost (top-level ones included) of objects topo never touches nor reports.
    ignore: dict[str, list[str]] = field(default_factory=dict)
    # Vhosts whose permissions / topic permissions the files manage (the key is present there).
    access: set[tuple[Kind, str]] = field(default_factory=set)
    locations: dict[Key, Location] = field(default_factory=dict)
    # Queues whose replace is a migration that keeps their messages (`migrate: true`, see migrate.py).
    migrate: set[Key] = field(default_factory=set)
    # Legal but probably wrong (RabbitMQ accepts them and then drops messages): shown, never fatal.
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Identity:
    """Who topo reads and writes as: its own access is guarded (see plan.lockouts), its tags decide
    what it may change (engine.check_privileges). A definitions file has no one connected: OFFLINE."""

    user: str
    tags: frozenset[str]


OFFLINE = Identity("", frozenset())


@dataclass(slots=True)
class Actual:
    """What the broker has, for the vhosts in scope."""

    identity: Identity  # required: a guessed identity would guess wrong about lock-outs and privileges
    objects: dict[Key, Obj] = field(default_factory=dict)
    vhosts: set[str] = field(default_factory=set)  # every vhost on the broker
    exchange_types: set[str] = field(default_factory=set)
    version: str = ""
    # What the broker is and can do (version, plugins, feature flags...): read once, asked by everything.
    capabilities: Capabilities = field(default_factory=Capabilities)
    # What the read had to do differently, and why (e.g. a vhost read from its listings): shown to the user.
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Built from a version alone (tests, definitions files): the capabilities that version implies.
        if not self.capabilities.version and self.version:
            self.capabilities = Capabilities(self.version, frozenset(self.exchange_types))

    @property
    def me(self) -> str:
        return self.identity.user

    @property
    def my_tags(self) -> frozenset[str]:
        return self.identity.tags
