"""What every kind module declares, with the defaults most kinds share.

A kind module defines one subclass of `KindDef` and exports an instance as `DEFINITION`. Everything
topo does with objects of that kind goes through it: where they sit in the files and in a definitions
export, how they are compared (immutable: replace; identity: only created or deleted), what they depend
on (which fixes the apply order), the tag needed to change them, how they are named, written and exported.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar

from topo.capabilities import Capabilities
from topo.errors import StepRefused
from topo.kinds import Kind
from topo.state import Key, Obj

if TYPE_CHECKING:
    from topo.client import ManagementClient
    from topo.diff import Change
    from topo.emit import Placeholder


# What version- and plugin-dependent decisions ask about the broker: read once (topo/capabilities.py).
Broker = Capabilities


class Scope(StrEnum):
    VHOST = "vhost"  # declared inside a vhost; deleted with it
    GLOBAL = "global"  # broker-wide (Key.vhost is ""): users, their limits, global parameters


class Phase(StrEnum):
    """The two requests a change can make: a replace is a delete followed by a write."""

    WRITE = "write"  # create or update
    DELETE = "delete"


# (vhost, item) pairs of one section of a definitions export, already limited to the vhosts in scope.
Items = Callable[[str], Iterable[tuple[str, dict[str, Any]]]]


@dataclass(slots=True)
class Declared:
    """One object (or, for external and absent ones, one key) that a file declares."""

    obj: Obj
    path: tuple[Any, ...]  # where, below the vhost (or the top level for global kinds)
    absent: bool = False
    external: bool = False
    migrate: bool = False  # a queue's replace keeps its messages (migrate.py)
    # Legal but probably wrong: (path below the object's, message), shown with the file and line.
    warnings: list[tuple[tuple[Any, ...], str]] = field(default_factory=list)


@dataclass(slots=True)
class ExportContext:
    """What a kind's export may need beyond its own objects."""

    vhost: str
    manage_access: bool
    new_variable: Callable[[str, str, str | None], Placeholder]
    keep_hashes: bool = False
    # Attributes of the vhost being exported (queues are written without the vhost's default type).
    vhost_attrs: dict[str, Any] = field(default_factory=dict)
    # Every object of the same scope by kind (users are written with their limits).
    objects: dict[Kind, list[Obj]] = field(default_factory=dict)
    # What the export leaves out on purpose, for the person running it (shown on stderr).
    notes: list[str] = field(default_factory=list)
    # The source broker's (or definitions file's): what its values mean (4.x stores defaults nobody set).
    capabilities: Capabilities = field(default_factory=Capabilities)


class KindDef:
    kind: ClassVar[Kind]
    scope: ClassVar[Scope] = Scope.VHOST
    # Key of the section in the topology file (in the vhost, or at the top level for global kinds).
    section: ClassVar[str] = ""
    # A difference in any attribute means delete and re-create: RabbitMQ cannot change one in place.
    immutable: ClassVar[bool] = False
    # Identified by all its attributes: only ever created or deleted.
    identity: ClassVar[bool] = False
    # Access entries: managed per vhost only where the files have the section (see diff._manages).
    access: ClassVar[bool] = False
    # Deleting it destroys messages (counted for the plan, refused without --allow-data-loss).
    holds_messages: ClassVar[bool] = False
    # Kinds that must exist before this one is written, and be deleted after it.
    depends_on: ClassVar[tuple[Kind, ...]] = ()
    # The user tag RabbitMQ requires to change it (None: permissions on the vhost are enough).
    required_tag: ClassVar[str | None] = None
    # Section of a definitions import that can create it in bulk (None: one request each).
    bulk_section: ClassVar[str | None] = None
    # Sections of a definitions export that from_definitions reads (a section no kind reads is left out
    # of a definitions file's export, and named).
    reads: ClassVar[tuple[str, ...]] = ()
    # Broker-wide kinds: the listing that has them (per-vhost definitions do not), in the shape of `reads`.
    listing: ClassVar[str | None] = None

    # ---- naming ----------------------------------------------------------------------------------------

    def display(self, key: Key, attrs: dict[str, Any] | None) -> str:
        """How an object is named to people."""
        return json.dumps(key.name, ensure_ascii=False)

    # ---- desired side: the files -------------------------------------------------------------------------

    def declarations(self, spec: Any, vhost: str) -> Iterator[Declared]:
        """The objects of this kind that `spec` declares: a VhostSpec, or the Topology for global kinds."""
        return iter(())

    def name_problem(self, name: str) -> str | None:
        """Why RabbitMQ would refuse this name (None: it would not)."""
        return None

    def manages(self, spec: Any) -> bool:
        """Access kinds: whether the vhost's spec has the section (then undeclared entries are drift)."""
        return False

    # ---- actual side: the broker and definitions files -----------------------------------------------------

    def from_definitions(self, items: Items) -> Iterator[Obj]:
        """The objects in a definitions export (the broker's, or a file's)."""
        return iter(())

    def check(self, obj: Obj) -> None:
        """Raises pydantic's ValidationError where topo's models refuse what a definitions file holds."""

    # ---- this broker ------------------------------------------------------------------------------------

    def broker_problems(self, obj: Obj, broker: Broker) -> list[tuple[str, str]]:
        """(path, reason) for what this broker would refuse in a declared object: checked before planning."""
        return []

    def adapt(self, obj: Obj, broker: Broker) -> tuple[Obj, str | None]:
        """The object as this broker can store it (so it is not planned forever), and a warning if changed."""
        return obj, None

    # ---- writing ------------------------------------------------------------------------------------------

    def path(self, key: Key, attrs: dict[str, Any], phase: Phase) -> str:
        raise NotImplementedError(f"{self.kind}: path")

    def body(self, key: Key, attrs: dict[str, Any]) -> Any:
        return attrs

    def write(
        self,
        client: ManagementClient,
        change: Change,
        phase: Phase,
        what: str,
        allow_data_loss: bool,
        allow_disruption: bool = False,
    ) -> None:
        """One request (or a few): the phase of `change` on the broker."""
        attrs = change.after if change.after is not None else change.before
        path = self.path(change.key, attrs or {}, phase)
        if phase is Phase.DELETE:
            client.delete(path, what=what)
        else:
            client.put(path, self.body(change.key, change.after or {}), what=what)

    def serial_group(self, key: Key, attrs: dict[str, Any]) -> object | None:
        """Steps of one stage with the same group run one after another (None: concurrently)."""
        return None

    def bulk_definition(self, key: Key, attrs: dict[str, Any]) -> dict[str, Any]:
        """The object as an entry of `bulk_section` in a definitions import."""
        raise NotImplementedError(f"{self.kind}: bulk")

    # ---- export ---------------------------------------------------------------------------------------------

    def exported(self, obj: Obj) -> bool:
        """Whether an export writes `obj` (False: left out on purpose; `export` says so in a note)."""
        return True

    def export(self, objects: list[Obj], context: ExportContext) -> dict[str, Any]:
        """Sections of the topology document for `objects` (sorted by key), merged into the vhost or the top."""
        return {}


def refuse_if_messages_arrived(client: ManagementClient, change: Change, what: str) -> None:
    """Counts again just before a delete the broker cannot make conditional (quorum, stream, vhost)."""
    from topo.read import message_counts

    names = None if change.kind is Kind.VHOST else {change.key.name}
    counts = message_counts(client, change.key.vhost, names)
    if any(count is None or count > 0 for count in counts.values()):
        held = sum(count or 0 for count in counts.values())
        raise StepRefused(what, f"it now holds messages ({held} counted) that the plan did not; --allow-data-loss")


def refuse_if_consumers_arrived(client: ManagementClient, change: Change, what: str) -> None:
    """Counts consumers again just before a delete the broker cannot make conditional on them."""
    from topo.read import consumer_counts

    names = None if change.kind is Kind.VHOST else {change.key.name}
    count = sum(c or 0 for c in consumer_counts(client, change.key.vhost, names).values())
    if count:
        raise StepRefused(what, consumers_refusal(count))


def consumers_refusal(count: int) -> str:
    # The broker lists consumers only after its next statistics round (5 s by default): maybe none yet.
    found = f"{count} consumer{'' if count == 1 else 's'}" if count else "consumers (not listed yet)"
    return f"it now has {found} that the plan did not; --allow-disruption lets the broker cancel them"


def deep_sorted(value: Any) -> Any:
    """Mappings at every depth in key order: an export must not depend on the order of its input."""
    if isinstance(value, dict):
        return {key: deep_sorted(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [deep_sorted(item) for item in value]
    return value


def by_name(items: dict[str, Any]) -> dict[str, Any]:
    return dict(sorted(items.items()))
