"""What a replace must put back is kept on the broker, not only in topo's memory.

Replacing a queue or exchange deletes it, and with it every binding that touches it, including bindings
the files do not declare (an application's own). topo re-creates them from the plan; but a topo killed
between the delete and the re-create would lose them for good, and so would a concurrent apply that
replaced the same object in between. So before the delete, topo copies those bindings onto *holds*:
internal exchanges named `topo.hold.<random>` whose arguments name the object they hold for and which
side of its bindings they stand in for. S -> queue Q becomes S -> hold; for an exchange X, S -> X
becomes S -> its "in" hold and X -> D becomes its "out" hold -> D (X -> X: out hold -> in hold). A hold
never routes a message on: nothing can publish to an internal exchange, an "in" hold (or a queue's)
has no outgoing bindings, and an "out" hold receives from nothing but itself. So a hold left behind
duplicates no delivery, and what reaches one goes nowhere, as it would at the deleted object.

Every diff takes holds out of the broker's state (they are never shown, pruned, listed or exported as
objects: ownership.py counts them out of scope too) and plans the bindings they record that the object
lacks, as creates. A hold is deleted only once what it records is back on its object, as the
verification read after an apply shows, and only by the apply that made it or planned with it; holds
it did not see are left alone (another apply may be under way). It needs nothing a user who may
replace objects on a vhost lacks: configure, write and read permissions there, no administrator tag.

Topic permissions name an exchange, and RabbitMQ 4.x deletes them with it (3.10 keeps them): an
exchange's "in" hold also records, in its arguments, the topic permissions on it when the replace
starts (read only if topo's user may: an administrator's listing; one who may not could not write them
back either). The apply writes them again once the exchange is back (`put_back`); after a kill, the
next plan restores what the broker lacks, like the bindings. Holds are read whatever the files manage,
so the reading adds the current state of the topic permissions they record (`read_recorded`).
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from topo.apipath import api_path
from topo.errors import BrokerError
from topo.kinds.binding import from_fields
from topo.kinds.topic_permission import topic_permission_obj
from topo.normalize import HOLD_PREFIX
from topo.ownership import out_of_scope
from topo.state import Actual, Desired, Key, Kind, Obj

if TYPE_CHECKING:
    from topo.client import ManagementClient
    from topo.diff import Change

PREFIX = HOLD_PREFIX
HOLDS = "x-topo-holds"  # exchange argument: "queue", "exchange" (its incoming side) or "exchange-out"
OUT = "exchange-out"
NAME = "x-topo-name"  # exchange argument: the name of the object held for
TOPIC = "x-topo-topic-permissions"  # "in" hold argument: [{user, write, read}] on the held exchange
REASON = "restored from topo's record of an interrupted replace"


@dataclass(frozen=True, slots=True)
class Hold:
    vhost: str
    name: str  # the hold exchange's own name
    kind: Kind  # QUEUE or EXCHANGE: what it holds bindings for
    target: str
    side: str  # "in": bindings to the target; "out": bindings from it (exchanges only)
    bindings: tuple[Obj, ...] = field(default=())  # as they are to be restored on the target
    topic_permissions: tuple[Obj, ...] = field(default=())  # on the held exchange, as they were


def is_hold(name: str) -> bool:
    return name.startswith(PREFIX)


def needs_hold(change: Change) -> bool:
    """A replace of an object that bindings touch: its delete drops them."""
    return change.action.value == "replace" and change.kind in (Kind.QUEUE, Kind.EXCHANGE)


def split(actual: Actual) -> tuple[Actual, tuple[Hold, ...]]:
    """The broker's state without holds (and their bindings), and the holds with what they record."""
    found: dict[tuple[str, str], tuple[Kind, str, str]] = {}
    topic: dict[tuple[str, str], tuple[Obj, ...]] = {}
    for key, obj in actual.objects.items():
        if key.kind is Kind.EXCHANGE and is_hold(key.name):
            arguments = obj.attrs.get("arguments") or {}
            side = "out" if arguments.get(HOLDS) == OUT else "in"
            kind = Kind.QUEUE if arguments.get(HOLDS) == "queue" else Kind.EXCHANGE
            found[(key.vhost, key.name)] = (kind, str(arguments.get(NAME, "")), side)
            if kind is Kind.EXCHANGE and side == "in":
                topic[(key.vhost, key.name)] = _recorded_topic(key.vhost, str(arguments.get(NAME, "")), arguments)
    if not found:
        return actual, ()
    recorded: dict[tuple[str, str], list[Obj]] = {where: [] for where in found}
    kept: dict[Key, Obj] = {}
    for key, obj in actual.objects.items():
        if key.kind is Kind.EXCHANGE and (key.vhost, key.name) in found:
            continue
        if key.kind is Kind.BINDING:
            attrs = obj.attrs
            source = found.get((key.vhost, attrs["source"]))
            destination = (
                found.get((key.vhost, attrs["destination"])) if attrs["destination_type"] == "exchange" else None
            )
            if source or destination:
                restored = _restored(key.vhost, attrs, source, destination)
                if restored is not None:
                    where = attrs["destination"] if destination else attrs["source"]
                    recorded[(key.vhost, where)].append(restored)
                continue
        kept[key] = obj
    holds = tuple(
        Hold(
            vhost,
            name,
            kind,
            target,
            side,
            tuple(sorted(recorded[(vhost, name)], key=lambda o: o.key)),
            topic.get((vhost, name), ()),
        )
        for (vhost, name), (kind, target, side) in sorted(found.items())
        if target
    )
    return dataclasses.replace(actual, objects=kept), holds


def _recorded_topic(vhost: str, exchange: str, arguments: Mapping[str, Any]) -> tuple[Obj, ...]:
    entries = arguments.get(TOPIC)
    if not exchange or not isinstance(entries, list):
        return ()
    out = []
    for entry in entries:
        if isinstance(entry, dict) and all(isinstance(entry.get(f), str) for f in ("user", "write", "read")):
            out.append(topic_permission_obj(vhost, entry["user"], exchange, entry["write"], entry["read"]))
    return tuple(sorted(out, key=lambda o: o.key))


def read_recorded(client: ManagementClient, actual: Actual) -> None:
    """Adds to `actual` the topic permissions now on the broker that holds in it record, when the reading
    did not list them (the files manage no access): what restores() compares against. An administrator's
    listing; without it, nothing is added (and restoring would need it too)."""
    _, holds = split(actual)
    vhosts = sorted({h.vhost for h in holds if h.topic_permissions})
    for vhost in vhosts:
        listing = _topic_listing(client, vhost, f"read the topic permissions topo's records in vhost {vhost!r} name")
        recorded = {
            (o.attrs["user"], o.attrs["exchange"]) for h in holds if h.vhost == vhost for o in h.topic_permissions
        }
        for item in listing or []:
            if (item.get("user"), item.get("exchange")) in recorded:
                obj = topic_permission_obj(vhost, item["user"], item["exchange"], item["write"], item["read"])
                actual.objects.setdefault(obj.key, obj)


def _topic_listing(client: ManagementClient, vhost: str, what: str) -> list[Any] | None:
    try:
        return client.get_or_none(api_path("vhosts", vhost, "topic-permissions"), what=what)
    except BrokerError as exc:
        if exc.status in (401, 403):
            return None  # not an administrator: it could neither see nor write topic permissions
        raise


def _restored(
    vhost: str, attrs: dict[str, Any], source: tuple[Kind, str, str] | None, destination: tuple[Kind, str, str] | None
) -> Obj | None:
    """The binding a hold's binding stands for, on the held object itself (None: not a record)."""
    if source is not None and (source[2] != "out" or not source[1]):
        return None  # only an "out" hold's bindings stand for bindings from its object
    if destination is not None and (destination[2] != "in" or not destination[1]):
        return None
    from_name = source[1] if source else attrs["source"]
    if destination is not None:
        to_type, to_name = destination[0].value, destination[1]
    else:
        to_type, to_name = attrs["destination_type"], attrs["destination"]
    return from_fields(vhost, from_name, to_type, to_name, attrs["routing_key"], attrs["arguments"])


def _wanted(binding: Obj, desired: Desired, actual: Actual) -> bool:
    """A recorded binding (or topic permission) is restored unless the files say it should go (absent,
    or pruned)."""
    key = binding.key
    if key in desired.absent:
        return False
    if key in desired.objects or not desired.prune.get(key.vhost, False):
        return True
    if key.kind is Kind.TOPIC_PERMISSION:  # pruned only where the files manage the vhost's access
        return (key.kind, key.vhost) not in desired.access or binding.attrs["user"] == actual.me
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
        for binding in (*item.bindings, *item.topic_permissions):
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
    recorded = (*hold.bindings, *hold.topic_permissions)
    return all(b.key in actual.objects or not _wanted(b, desired, actual) for b in recorded)


def hold(client: ManagementClient, kind: Kind, vhost: str, name: str, topic: list[Obj] | None = None) -> list[str]:
    """Copies every binding now touching the queue or exchange onto new holds; returns their names. An
    exchange's topic permissions are recorded too, and added to `topic` (for put_back).

    Read from the broker right before the delete, not from the plan: a concurrent apply may have added
    some since.
    """
    what = f"record the bindings of {kind.value} {name!r} in vhost {vhost!r} before replacing it"
    entries: list[dict[str, str]] = []
    if kind is Kind.EXCHANGE:
        listing = _topic_listing(client, vhost, f"record the topic permissions on exchange {name!r} in vhost {vhost!r}")
        entries = [
            {"user": item["user"], "write": item["write"], "read": item["read"]}
            for item in listing or []
            if item.get("exchange") == name
        ]
        if topic is not None:
            topic.extend(topic_permission_obj(vhost, e["user"], name, e["write"], e["read"]) for e in entries)
    into = _declare(client, vhost, kind.value, name, what, {TOPIC: entries} if entries else {})
    if kind is Kind.QUEUE:
        listing = client.get_or_none(api_path("queues", vhost, name, "bindings"), what=what) or []
        for binding in listing:
            if binding.get("source"):  # not the default exchange's implicit binding
                _bind(client, vhost, binding["source"], "exchange", into, binding, what)
        return [into]
    out = _declare(client, vhost, OUT, name, what)
    incoming = client.get_or_none(api_path("exchanges", vhost, name, "bindings", "destination"), what=what) or []
    outgoing = client.get_or_none(api_path("exchanges", vhost, name, "bindings", "source"), what=what) or []
    for binding in incoming:
        source = out if binding["source"] == name else binding["source"]  # X -> X: out hold -> in hold
        _bind(client, vhost, source, "exchange", into, binding, what)
    for binding in outgoing:
        if binding["destination"] == name and binding.get("destination_type") == "exchange":
            continue  # X -> X: recorded with the incoming ones
        _bind(client, vhost, out, binding.get("destination_type", "queue"), binding["destination"], binding, what)
    return [into, out]


def _declare(
    client: ManagementClient, vhost: str, holds: str, name: str, what: str, extra: Mapping[str, Any] | None = None
) -> str:
    hold_name = PREFIX + secrets.token_hex(8)
    body = {
        "type": "fanout",
        "durable": True,
        "auto_delete": False,
        "internal": True,
        "arguments": {HOLDS: holds, NAME: name, **(extra or {})},
    }
    client.put(api_path("exchanges", vhost, hold_name), body, what=what)
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


def put_back(client: ManagementClient, topic: Iterable[Obj], skip: set[Key]) -> None:
    """Writes again the topic permissions recorded before their exchange's replace, once it is back
    (RabbitMQ 4.x deleted them with it; on 3.10 an identical PUT). Those the plan writes or deletes
    itself (`skip`) are left to it."""
    for obj in topic:
        if obj.key in skip:
            continue
        attrs = obj.attrs
        client.put(
            api_path("topic-permissions", obj.key.vhost, attrs["user"]),
            {"exchange": attrs["exchange"], "write": attrs["write"], "read": attrs["read"]},
            what=f"restore the topic permission of {attrs['user']!r} on exchange {attrs['exchange']!r} "
            f"in vhost {obj.key.vhost!r} after replacing it",
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
