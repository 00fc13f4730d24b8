"""What a replace must put back is kept on the broker, not only in topo's memory.

Replacing a queue or exchange deletes it, and with it every binding that touches it, including bindings
the files do not declare (an application's own). topo re-creates them from the plan; but a topo killed
between the delete and the re-create would lose them for good, and so would a concurrent apply that
replaced the same object in between. So before the delete, topo copies those bindings onto a *hold*:
an internal exchange named `topo.hold.<random>` whose arguments name the object it holds for, bound
exactly as the object was (S -> queue Q becomes S -> hold; for an exchange X, X -> D becomes hold -> D
and S -> X becomes S -> hold). Nothing can publish to an internal exchange, and messages routed to it
go nowhere, as they would to the deleted object.

Every diff takes holds out of the broker's state (they are never shown, pruned, listed or exported as
objects: ownership.py counts them out of scope too) and plans the bindings they record that the object
lacks, as creates. A hold is deleted only once what it records is back on its object, as the
verification read after an apply shows, and only by the apply that made it or planned with it; holds
it did not see are left alone (another apply may be under way). It needs nothing a user who may
replace objects on a vhost lacks: configure, write and read permissions there, no administrator tag.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from topo.client import api_path
from topo.kinds.binding import from_fields
from topo.normalize import HOLD_PREFIX
from topo.ownership import out_of_scope
from topo.state import Actual, Desired, Key, Kind, Obj

if TYPE_CHECKING:
    from topo.client import ManagementClient
    from topo.diff import Change

PREFIX = HOLD_PREFIX
HOLDS = "x-topo-holds"  # exchange argument: "queue" or "exchange"
NAME = "x-topo-name"  # exchange argument: the name of the object held for
REASON = "restored from topo's record of an interrupted replace"


@dataclass(frozen=True, slots=True)
class Hold:
    vhost: str
    name: str  # the hold exchange's own name
    kind: Kind  # QUEUE or EXCHANGE: what it holds bindings for
    target: str
    bindings: tuple[Obj, ...] = field(default=())  # as they are to be restored on the target


def is_hold(name: str) -> bool:
    return name.startswith(PREFIX)


def needs_hold(change: Change) -> bool:
    """A replace of an object that bindings touch: its delete drops them."""
    return change.action.value == "replace" and change.kind in (Kind.QUEUE, Kind.EXCHANGE)


def split(actual: Actual) -> tuple[Actual, tuple[Hold, ...]]:
    """The broker's state without holds (and their bindings), and the holds with what they record."""
    found: dict[tuple[str, str], tuple[Kind, str]] = {}
    for key, obj in actual.objects.items():
        if key.kind is Kind.EXCHANGE and is_hold(key.name):
            arguments = obj.attrs.get("arguments") or {}
            kind = Kind.EXCHANGE if arguments.get(HOLDS) == "exchange" else Kind.QUEUE
            found[(key.vhost, key.name)] = (kind, str(arguments.get(NAME, "")))
    if not found:
        return actual, ()
    recorded: dict[tuple[str, str], list[Obj]] = {where: [] for where in found}
    kept: dict[Key, Obj] = {}
    for key, obj in actual.objects.items():
        if key.kind is Kind.EXCHANGE and (key.vhost, key.name) in found:
            continue
        if key.kind is Kind.BINDING:
            attrs = obj.attrs
            from_hold = (key.vhost, attrs["source"]) in found
            to_hold = attrs["destination_type"] == "exchange" and (key.vhost, attrs["destination"]) in found
            if from_hold or to_hold:
                where = (key.vhost, attrs["source"] if from_hold else attrs["destination"])
                kind, target = found[where]
                restored = _restored(key.vhost, kind, target, attrs, from_hold, to_hold)
                if restored is not None and target:
                    recorded[where].append(restored)
                continue
        kept[key] = obj
    holds = tuple(
        Hold(vhost, name, kind, target, tuple(sorted(recorded[(vhost, name)], key=lambda o: o.key)))
        for (vhost, name), (kind, target) in sorted(found.items())
        if target
    )
    return dataclasses.replace(actual, objects=kept), holds


def _restored(vhost: str, kind: Kind, target: str, attrs: dict[str, Any], from_hold: bool, to_hold: bool) -> Obj | None:
    key, arguments = attrs["routing_key"], attrs["arguments"]
    if kind is Kind.QUEUE:
        return from_fields(vhost, attrs["source"], "queue", target, key, arguments) if to_hold else None
    source = target if from_hold else attrs["source"]
    destination_type, destination = attrs["destination_type"], attrs["destination"]
    if to_hold:
        destination_type, destination = "exchange", target
    return from_fields(vhost, source, destination_type, destination, key, arguments)


def _wanted(binding: Obj, desired: Desired, actual: Actual) -> bool:
    """A recorded binding is restored unless the files say it should go (absent, or pruned)."""
    key = binding.key
    if key in desired.absent:
        return False
    if key in desired.objects or not desired.prune.get(key.vhost, False):
        return True
    return out_of_scope(binding, actual.objects, desired.ignore.get(key.vhost, ())) is not None


def restores(holds: Iterable[Hold], desired: Desired, actual: Actual, planned: set[Key]) -> list[Obj]:
    """The recorded bindings the broker lacks, onto objects that exist or are declared (a hold for an
    object gone and no longer declared has nothing to restore onto, and stays: the files may declare it
    again)."""
    out: dict[Key, Obj] = {}
    for item in holds:
        target = Key(item.kind, item.vhost, item.target)
        if target not in actual.objects and target not in desired.objects:
            continue
        for binding in item.bindings:
            if binding.key in actual.objects or binding.key in planned or binding.key in out:
                continue
            if _wanted(binding, desired, actual):
                out[binding.key] = binding
    return list(out.values())


def satisfied(hold: Hold, desired: Desired, actual: Actual) -> bool:
    """Everything `hold` records is back (or the files no longer want it): it may go."""
    target = Key(hold.kind, hold.vhost, hold.target)
    if target not in actual.objects:
        return False
    return all(b.key in actual.objects or not _wanted(b, desired, actual) for b in hold.bindings)


def hold(client: ManagementClient, kind: Kind, vhost: str, name: str) -> str:
    """Copies every binding now touching the queue or exchange onto a new hold; returns its name.

    Read from the broker right before the delete, not from the plan: a concurrent apply may have added
    some since.
    """
    hold_name = PREFIX + secrets.token_hex(8)
    what = f"record the bindings of {kind.value} {name!r} in vhost {vhost!r} before replacing it"
    body = {
        "type": "fanout",
        "durable": True,
        "auto_delete": False,
        "internal": True,
        "arguments": {HOLDS: kind.value, NAME: name},
    }
    client.put(api_path("exchanges", vhost, hold_name), body, what=what)
    if kind is Kind.QUEUE:
        listing = client.get_or_none(api_path("queues", vhost, name, "bindings"), what=what) or []
        incoming, outgoing = [b for b in listing if b.get("source")], []
    else:
        incoming = client.get_or_none(api_path("exchanges", vhost, name, "bindings", "destination"), what=what)
        outgoing = client.get_or_none(api_path("exchanges", vhost, name, "bindings", "source"), what=what)
        incoming, outgoing = incoming or [], outgoing or []
    for binding in incoming:
        source = hold_name if binding["source"] == name and kind is Kind.EXCHANGE else binding["source"]
        _bind(client, vhost, source, "exchange", hold_name, binding, what)
    for binding in outgoing:
        if binding["destination"] == name and binding.get("destination_type") == "exchange":
            continue  # X -> X: recorded with the incoming ones as hold -> hold
        _bind(client, vhost, hold_name, binding.get("destination_type", "queue"), binding["destination"], binding, what)
    return hold_name


def _bind(
    client: ManagementClient,
    vhost: str,
    source: str,
    destination_type: str,
    destination: str,
    binding: Mapping[str, Any],
    what: str,
) -> None:
    short = "q" if destination_type == "queue" else "e"
    body = {"routing_key": binding.get("routing_key", ""), "arguments": binding.get("arguments") or {}}
    client.request(
        "POST", api_path("bindings", vhost, "e", source, short, destination), what=what, body=body, idempotent=True
    )


def release(
    client: ManagementClient, names: Iterable[tuple[str, str]], desired: Desired, verified: Actual
) -> list[str]:
    """Deletes the holds named (vhost, name) whose records the verified state shows back; returns the
    names of those kept (something they record is still missing)."""
    wanted = set(names)
    _, holds = split(verified)
    present = {(h.vhost, h.name): h for h in holds}
    kept = []
    for vhost, name in sorted(wanted):
        item = present.get((vhost, name))
        if item is None:
            continue  # already gone (another apply released it)
        if not satisfied(item, desired, verified):
            kept.append(name)
            continue
        client.delete(api_path("exchanges", vhost, name), what=f"delete topo's record {name!r} in vhost {vhost!r}")
    return kept
