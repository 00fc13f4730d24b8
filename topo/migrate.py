"""Zero-loss replace of a queue: move its messages out and back while routing never has a gap.

RabbitMQ cannot change a queue's type or arguments in place; a replace deletes and re-creates it.
A migration does that without losing a message or a publish, using temporary objects named
`topo.migrate.<hash of vhost/queue>.<role>` (each with the argument `x-topo-migrates: <queue>` and the
target definition in `x-topo-target`), so that everything topo must know to continue lives on the broker:

- "route": an internal fanout exchange whose alternate exchange is "spill";
- "spill": an internal fanout exchange bound to "incoming", a classic queue for what is published
  during the migration;
- "old": a classic queue for the messages the queue held.

Steps (each idempotent; which one comes next is read from the broker, never from memory):
1. declare the temporaries; bind route -> Q;
2. every binding S -> Q (but the default exchange's) becomes S -> route (added first, then removed):
   a publish routed both ways in between reaches Q once (the broker routes to a set of queues);
3. declare "old"; unbind route -> Q: new publishes fall through route's alternate exchange into
   "incoming" (atomically: a message routed through route reaches Q or incoming, never neither);
4. shovel Q -> old until Q is empty, then delete Q (only if empty);
5. declare Q with its new definition; shovel old -> Q until old is empty, delete old;
6. bind route -> Q; shovel incoming -> Q until incoming is empty, delete it;
7. every S -> route becomes S -> Q again; delete route and spill.

The broker's own dynamic shovels move the messages (ack-mode on-confirm: a message leaves its source
only once the destination confirmed it). topo, not the shovel, decides when a shovel is done: once the
source holds no message, neither ready nor delivered and unacknowledged (so every ack is settled), topo
deletes the shovel, then the source with if-empty (a quorum queue, which refuses if-empty, is first
checked empty with a get that requeues). A shovel keeps running when topo is killed; the next apply finds
it by its name and waits for it the same way.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from topo.apipath import api_path
from topo.errors import BrokerError, TopoError
from topo.normalize import MIGRATE_PREFIX
from topo.state import Actual, Desired, Key, Kind, same_value

if TYPE_CHECKING:
    from topo.client import ManagementClient
    from topo.diff import Change
    from topo.plan import Held, Plan

PREFIX = MIGRATE_PREFIX
MIGRATES = "x-topo-migrates"  # argument of every temporary: the queue it migrates
TARGET = "x-topo-target"  # argument of every temporary: the queue's new definition (JSON)
ROLES = ("route", "spill", "incoming", "old")
STEPS = (
    "declare topo.migrate.* route, spill and incoming; bind route -> {q}",
    "move the {n} binding(s) to {q} onto route (publishes keep reaching {q})",
    "declare old; unbind route -> {q} (publishes now wait in incoming)",
    "shovel {q} -> old ({m} message(s)); delete {q} once empty",
    "declare {q} as {t}; shovel old -> {q}; delete old once empty",
    "bind route -> {q}; shovel incoming -> {q} (what was published meanwhile, after the old messages)",
    "move the bindings back from route to {q}; delete route, spill",
)
# Messages per second one shovel moves: benchmarks/migrate_bench.py's raw shovel, N=10,000, 2-core machine
# (benchmarks/README.md): 35,000 into a quorum queue (3.10 and 4.3), 37,000-55,000 into a classic one. The
# slower: the estimate is for the move; a quorum source adds up to one tick (QUORUM_TICK, in seconds()).
RATE = 35_000.0
# The seven steps' requests and settle checks, without the moves: benchmarks/migrate_bench.py measured a
# whole apply of 10,000 messages at 1.7 s, 0.57 s of it the moves at RATE and 1.1 s topo's start, plan,
# verification and these steps.
STEPS_SECONDS = 0.5
SHOVEL_TIMEOUT = 3600.0
# A quorum queue publishes its message counts once per tick (quorum_tick_interval, default 5000 ms).
QUORUM_TICK = 5.0
# How long only unacknowledged messages may stay in a source before topo stops waiting: the shovel
# acks within milliseconds of each confirm, so these are an application consumer's.
HELD_TIMEOUT = 30.0
# How long a shovel may move nothing while its source holds ready messages before topo stops waiting:
# its destination takes no message (seen: a quorum queue declared just before a node crashed, whose
# Raft member 3.10 then never restarted; a quorum queue without a majority online does the same).
STALL_TIMEOUT = 60.0
Report = Callable[[str], None]


def _hash(vhost: str, queue: str) -> str:
    return hashlib.sha256(f"{vhost}/{queue}".encode()).hexdigest()[:12]


def name(vhost: str, queue: str, role: str) -> str:
    return f"{PREFIX}{_hash(vhost, queue)}.{role}"


def is_temporary(name_: str) -> bool:
    return name_.startswith(PREFIX)


@dataclass(frozen=True, slots=True)
class Migration:
    """A queue to migrate (or an interrupted migration to finish): what the plan shows and apply runs."""

    vhost: str
    queue: str
    before: dict[str, Any] | None  # the queue as it is (None: gone, midway through an interrupted migration)
    after: dict[str, Any]  # its new definition
    messages: int = 0  # in the queue and in the temporaries, when planned
    bindings: int = 0  # bindings to the queue (or to route) that the migration moves and puts back
    interrupted: tuple[str, ...] = field(default=())  # temporaries found on the broker: a migration to finish
    # An interrupted migration to another definition that had re-declared the queue already: finished first.
    finish: dict[str, Any] | None = None

    @property
    def key(self) -> Key:
        return Key(Kind.QUEUE, self.vhost, self.queue)

    def steps(self) -> list[str]:
        target = f"{self.after['type']} {json.dumps(self.after.get('arguments') or {}, sort_keys=True)}"
        values = {"q": self.queue, "n": self.bindings, "m": self.messages, "t": target}
        return [step.format(**values) for step in STEPS]

    def seconds(self) -> float:
        """Estimated duration: every message is moved twice, plus the steps' requests, plus a quorum tick
        when the source is a quorum queue (its counts, which tell that it is empty, lag a tick)."""
        quorum = self.before is not None and (self.before.get("type") or "classic") != "classic"
        return 2 * self.messages / RATE + STEPS_SECONDS + (QUORUM_TICK if quorum else 0.0)


def record(actual: Actual) -> dict[tuple[str, str], tuple[dict[str, Any] | None, tuple[str, ...]]]:
    """Interrupted migrations on the broker: (vhost, queue) -> (the target recorded, roles found)."""
    found: dict[tuple[str, str], tuple[dict[str, Any] | None, list[str]]] = {}
    for key, obj in actual.objects.items():
        if key.kind not in (Kind.QUEUE, Kind.EXCHANGE) or not is_temporary(key.name):
            continue
        arguments = obj.attrs.get("arguments") or {}
        queue = arguments.get(MIGRATES)
        if not isinstance(queue, str):
            continue
        target = _parse_target(arguments.get(TARGET))
        recorded, roles = found.setdefault((key.vhost, queue), (target, []))
        roles.append(key.name.rsplit(".", 1)[-1])
        if recorded is None and target is not None:
            found[(key.vhost, queue)] = (target, roles)
    return {where: (target, tuple(sorted(roles))) for where, (target, roles) in found.items()}


def _parse_target(text: Any) -> dict[str, Any] | None:
    if not isinstance(text, str):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def plan(
    desired: Desired,
    actual: Actual,
    changes: Iterable[Change],
    held: dict[Key, Held],
    counts: Callable[[str, set[str]], dict[str, int | None]],
    needs: Callable[[tuple[Migration, ...]], list[str]] | None = None,
) -> tuple[Migration, ...]:
    """The replaces of queues that become migrations (opted in per queue, or all with --migrate),
    and the interrupted migrations found on the broker (always finished). Refuses, before any change,
    what the broker or the user cannot do; `needs` tells what of that only the broker can answer (the
    shovel plugin, permissions: migrate_checks.py)."""
    from topo.diff import Action

    by_key = {c.key: c for c in changes}
    interrupted = record(actual)
    out: dict[Key, Migration] = {}
    for change in by_key.values():
        if change.kind is not Kind.QUEUE or change.action is not Action.REPLACE:
            continue
        if change.key not in desired.migrate and (change.key.vhost, change.key.name) not in interrupted:
            continue
        assert change.after is not None
        out[change.key] = Migration(
            change.key.vhost,
            change.key.name,
            change.before,
            change.after,
            held[change.key].messages if change.key in held else 0,
            _binding_count(actual, change.key),
        )
    for (vhost, queue), (target, roles) in sorted(interrupted.items()):
        key = Key(Kind.QUEUE, vhost, queue)
        declared = desired.objects.get(key)
        after = dict(declared.attrs) if declared is not None else target
        if after is None:
            raise TopoError(
                f"vhost {vhost!r}: an interrupted migration of queue {queue!r} left {', '.join(roles)} "
                "without a record of its target: declare the queue in the files to finish it"
            )
        have = actual.objects.get(key)
        finish = None
        if target is not None and have is not None and not _same(after, target) and _same(have.attrs, target):
            finish = target
        route = name(vhost, queue, "route")
        names = {queue, *(name(vhost, queue, role) for role in ("incoming", "old"))}
        moved = sum(v or 0 for v in counts(vhost, names).values())
        out[key] = Migration(
            vhost,
            queue,
            dict(have.attrs) if have is not None else None,
            after,
            moved,
            _binding_count(actual, key) + _binding_count(actual, Key(Kind.EXCHANGE, vhost, route)),
            roles,
            finish,
        )
    migrations = tuple(out[k] for k in sorted(out))
    _refuse(migrations, actual, needs)
    return migrations


def _same(have: dict[str, Any], want: dict[str, Any]) -> bool:
    return all(same_value(have.get(f), v) for f, v in want.items())


def without_temporaries(actual: Actual) -> Actual:
    """The broker's state without an interrupted migration's temporaries, their bindings and shovels:
    they are topo's own, which the migration makes and removes (never planned, listed or exported)."""

    def temporary(key: Key, attrs: dict[str, Any]) -> bool:
        if key.kind in (Kind.QUEUE, Kind.EXCHANGE):
            return is_temporary(key.name)
        if key.kind is Kind.BINDING:
            return is_temporary(attrs["source"]) or is_temporary(attrs["destination"])
        return key.kind is Kind.PARAMETER and attrs.get("component") == "shovel" and is_temporary(attrs["name"])

    if not any(temporary(key, obj.attrs) for key, obj in actual.objects.items()):
        return actual
    return replace(actual, objects={k: o for k, o in actual.objects.items() if not temporary(k, o.attrs)})


def without_moved_bindings(changes: list[Change], migrations: tuple[Migration, ...], actual: Actual) -> list[Change]:
    """The changes without the re-creates of bindings a migration moves away and back itself (a replace
    would drop them; a migration keeps them): listing them would show work that is not done."""
    migrated = {m.key for m in migrations}
    if not migrated:
        return changes
    from topo.diff import Action

    def moved(change: Change) -> bool:
        if change.kind is not Kind.BINDING or change.action is not Action.CREATE or change.key not in actual.objects:
            return False
        attrs = change.after or {}
        return (
            attrs.get("destination_type") == "queue"
            and Key(Kind.QUEUE, change.key.vhost, attrs.get("destination", "")) in migrated
        )

    return [c for c in changes if not moved(c)]


def shovel_sources(actual: Actual) -> dict[str, dict[str, int]]:
    """Per vhost and queue, how many of topo's migration shovels (left running by a killed apply) read it."""
    found: dict[str, dict[str, int]] = {}
    for key, obj in actual.objects.items():
        attrs = obj.attrs
        if key.kind is not Kind.PARAMETER or attrs.get("component") != "shovel" or not is_temporary(attrs["name"]):
            continue
        source = (attrs.get("value") or {}).get("src-queue")
        if isinstance(source, str):
            queues = found.setdefault(key.vhost, {})
            queues[source] = queues.get(source, 0) + 1
    return found


def _binding_count(actual: Actual, target: Key) -> int:
    return sum(
        1
        for key, obj in actual.objects.items()
        if key.kind is Kind.BINDING
        and key.vhost == target.vhost
        and obj.attrs["destination"] == target.name
        and obj.attrs["destination_type"] == target.kind.value
        and obj.attrs["source"]
        and not is_temporary(obj.attrs["source"])
    )


def _refuse(
    migrations: tuple[Migration, ...], actual: Actual, needs: Callable[[tuple[Migration, ...]], list[str]] | None
) -> None:
    if not migrations:
        return
    problems = []
    if not actual.my_tags & {"administrator", "policymaker"}:
        tags = ", ".join(sorted(actual.my_tags)) or "none"
        problems.append(
            f"user {actual.me!r} (tags: {tags}) may not create the dynamic shovels that move the messages: "
            "they need the policymaker or administrator tag"
        )
    for migration in migrations:
        if migration.before is not None and migration.before.get("type") == "stream":
            where = f"queue {migration.queue!r} in vhost {migration.vhost!r}"
            problems.append(f"{where} is a stream: topo cannot migrate one (a shovel cannot read a stream to its end)")
    if needs is not None:
        problems.extend(needs(migrations))
    if problems:
        raise TopoError("cannot migrate:\n" + "\n".join(f"  {p}" for p in problems))


def render_lines(plan_: Plan) -> list[str]:
    out = []
    for m in plan_.migrations:
        state = f" (interrupted: found {', '.join(m.interrupted)}; finishing it)" if m.interrupted else ""
        out.append("")
        out.append(
            f"Migration of queue {json.dumps(m.queue)} in vhost {json.dumps(m.vhost)}{state}: "
            f"{m.messages} message(s), about {m.seconds():.0f} s; nothing is lost, routing never stops:"
        )
        out.extend(f"    {number}. {step}" for number, step in enumerate(m.steps(), 1))
    return out


def to_json(m: Migration) -> dict[str, Any]:
    return {
        "vhost": m.vhost,
        "queue": m.queue,
        "messages": m.messages,
        "bindings": m.bindings,
        "estimated_seconds": round(m.seconds(), 1),
        "interrupted": list(m.interrupted),
        "steps": m.steps(),
    }


# --- apply ---------------------------------------------------------------------------------------


def split_changes(plan_: Plan) -> tuple[list[Change], list[Change]]:
    """The plan's changes to make before the migrations and after them. The migrated queues' own
    changes are the migrations' to make; bindings to them wait until they exist again."""
    keys = {m.key for m in plan_.migrations}
    before, after = [], []
    for change in plan_.changes:
        if change.key in keys:
            continue
        attrs = change.after or change.before or {}
        to_queue = change.kind is Kind.BINDING and attrs.get("destination_type") == "queue"
        if to_queue and Key(Kind.QUEUE, change.key.vhost, attrs["destination"]) in keys:
            after.append(change)
            continue
        before.append(change)
    return before, after


def apply(
    client: ManagementClient,
    plan_: Plan,
    run_changes: Callable[[Plan], int],
    allow_disruption: bool,
    report: Report | None = None,
) -> int:
    before, after = split_changes(plan_)
    count = run_changes(replace(plan_, changes=tuple(before), migrations=())) if before else 0
    for migration in plan_.migrations:
        run(client, migration, allow_disruption=allow_disruption, report=report)
        count += 1
    if after:
        count += run_changes(replace(plan_, changes=tuple(after), migrations=()))
    return count


def run(
    client: ManagementClient, m: Migration, *, allow_disruption: bool = False, report: Report | None = None
) -> None:
    """Runs (or continues) one migration to its end; safe to run again after a kill at any point."""
    if m.finish is not None:
        run(client, replace(m, after=m.finish, finish=None), allow_disruption=allow_disruption, report=report)
        m = replace(m, finish=None)
    say = report or (lambda _text: None)
    vhost, queue = m.vhost, m.queue
    n = {role: name(vhost, queue, role) for role in ROLES}
    what = f"migrate queue {queue!r} in vhost {vhost!r}"
    labels = {MIGRATES: queue, TARGET: json.dumps(m.after, sort_keys=True)}
    _declare_queue(client, vhost, n["incoming"], {"x-queue-type": "classic", **labels}, what)
    _declare_exchange(client, vhost, n["spill"], labels, what)
    _bind(client, vhost, n["spill"], "q", n["incoming"], "", {}, what)
    _declare_exchange(client, vhost, n["route"], {"alternate-exchange": n["spill"], **labels}, what)
    have = _queue(client, vhost, queue, what)
    old_exists = _queue(client, vhost, n["old"], what) is not None
    if have is not None and not _matches(vhost, have, m.after):
        if not old_exists:
            say(f"{queue}: step 1-2: bindings onto {n['route']}")
            _bind(client, vhost, n["route"], "q", queue, "", {}, what)
        _move_bindings(client, vhost, ("q", queue), ("e", n["route"]), what, skip=n["route"])
        if not old_exists:
            _declare_queue(client, vhost, n["old"], {"x-queue-type": "classic", **labels}, what)
        say(f"{queue}: step 3: publishes now wait in {n['incoming']}")
        _unbind_all(client, vhost, n["route"], "q", queue, what)
        # An application may have bound the queue meanwhile: those go onto route too.
        _move_bindings(client, vhost, ("q", queue), ("e", n["route"]), what, skip=n["route"])
        say(f"{queue}: step 4: shovel {queue} -> {n['old']}")
        _drain(client, vhost, queue, have, n["old"], what, allow_disruption)
        have = None
    if have is None:
        say(f"{queue}: step 5: declare {queue} as {m.after['type']}")
        from topo.kinds.queue import DEFINITION

        client.put(api_path("queues", vhost, queue), DEFINITION.body(m.key, m.after), what=what)
    if _queue(client, vhost, n["old"], what) is not None:
        say(f"{queue}: step 5: shovel {n['old']} -> {queue}")
        _drain(client, vhost, n["old"], None, queue, what, True)
    say(f"{queue}: step 6: shovel {n['incoming']} -> {queue}; bind route -> {queue}")
    # Most of what waits in incoming first, so that little published later overtakes it.
    _shovel(client, vhost, n["incoming"], queue, what)
    _wait_moved(client, vhost, n["incoming"], what)
    _bind(client, vhost, n["route"], "q", queue, "", {}, what)
    _drain(client, vhost, n["incoming"], None, queue, what, True)
    say(f"{queue}: step 7: bindings back onto {queue}")
    _move_bindings(client, vhost, ("e", n["route"]), ("q", queue), what, skip=None)
    client.delete(api_path("exchanges", vhost, n["route"]), what=what)
    client.delete(api_path("exchanges", vhost, n["spill"]), what=what)
    say(f"{queue}: migrated")


def _matches(vhost: str, item: dict[str, Any], target: dict[str, Any]) -> bool:
    from topo.kinds.queue import from_broker

    obj = from_broker(vhost, item)
    return obj is not None and _same(obj.attrs, target)


def _queue(client: ManagementClient, vhost: str, queue: str, what: str) -> dict[str, Any] | None:
    return client.get_or_none(api_path("queues", vhost, queue), what=what, params={"disable_stats": "true"})


def _declare_queue(client: ManagementClient, vhost: str, queue: str, arguments: dict[str, Any], what: str) -> None:
    """Declares a temporary unless it exists: one left by an interrupted migration may record another target."""
    if _queue(client, vhost, queue, what) is not None:
        return
    body = {"durable": True, "auto_delete": False, "arguments": arguments}
    client.put(api_path("queues", vhost, queue), body, what=what)


def _declare_exchange(
    client: ManagementClient, vhost: str, exchange: str, arguments: dict[str, Any], what: str
) -> None:
    path = api_path("exchanges", vhost, exchange)
    if client.get_or_none(path, what=what) is not None:
        return
    body = {"type": "fanout", "durable": True, "auto_delete": False, "internal": True, "arguments": arguments}
    client.put(path, body, what=what)


def _bind(
    client: ManagementClient,
    vhost: str,
    source: str,
    short: str,
    destination: str,
    routing_key: str,
    arguments: dict[str, Any],
    what: str,
) -> None:
    body = {"routing_key": routing_key, "arguments": arguments}
    client.request(
        "POST", api_path("bindings", vhost, "e", source, short, destination), what=what, body=body, idempotent=True
    )


def _bindings_to(client: ManagementClient, vhost: str, short: str, destination: str, what: str) -> list[dict[str, Any]]:
    if short == "q":
        path = api_path("queues", vhost, destination, "bindings")
    else:
        path = api_path("exchanges", vhost, destination, "bindings", "destination")
    return client.get_or_none(path, what=what) or []


def _unbind(client: ManagementClient, vhost: str, binding: dict[str, Any], what: str) -> None:
    short = "q" if binding.get("destination_type", "queue") == "queue" else "e"
    path = api_path("bindings", vhost, "e", binding["source"], short, binding["destination"], binding["properties_key"])
    client.delete(path, what=what)


def _unbind_all(client: ManagementClient, vhost: str, source: str, short: str, destination: str, what: str) -> None:
    for binding in _bindings_to(client, vhost, short, destination, what):
        if binding["source"] == source:
            _unbind(client, vhost, binding, what)


def _move_bindings(
    client: ManagementClient,
    vhost: str,
    from_: tuple[str, str],
    to: tuple[str, str],
    what: str,
    skip: str | None,
) -> None:
    """Each binding S -> from_ becomes S -> to: the new one first, so that routing never has a gap."""
    for binding in _bindings_to(client, vhost, from_[0], from_[1], what):
        source = binding["source"]
        if not source or source == skip or is_temporary(source):
            continue  # the default exchange's implicit binding; topo's own
        _bind(client, vhost, source, to[0], to[1], binding["routing_key"], binding.get("arguments") or {}, what)
        _unbind(client, vhost, binding, what)


def _drain(
    client: ManagementClient,
    vhost: str,
    source: str,
    source_item: dict[str, Any] | None,
    destination: str,
    what: str,
    allow_disruption: bool,
) -> None:
    """Shovels `source` into `destination` until every message of it is settled, stops the shovel, then
    deletes `source` (only if empty; if something arrived meanwhile, once more)."""
    quorum = source_item is not None and (source_item.get("type") or "classic") != "classic"
    began = time.monotonic()
    while True:
        _shovel(client, vhost, source, destination, what)
        _wait_settled(client, vhost, source, destination, quorum, what, began)
        # Nothing is delivered and unsettled now: stopping the shovel returns nothing to the source.
        client.delete(_shovel_path(vhost, source), what=what)
        if _delete_if_empty(client, vhost, source, quorum, allow_disruption, what):
            return


def _shovel_path(vhost: str, source: str) -> str:
    shovel = name(vhost, source, "shovel") if not is_temporary(source) else source + ".shovel"
    return api_path("parameters", "shovel", vhost, shovel)


def _shovel(client: ManagementClient, vhost: str, source: str, destination: str, what: str) -> None:
    """Starts a dynamic shovel `source` -> `destination` unless one is running (left by a killed topo).

    It runs until topo deletes it: no src-delete-after. A shovel that stops itself after queue-length
    messages (as topo's first versions did) exits as soon as its last confirms arrive, while its acks to a
    quorum source may not be settled yet: the quorum queue returns those messages, whose copies are
    already in the destination, and the next shovel moved them again (measured on 3.10 and 4.3, 2-3 runs
    in 5, 309-919 messages each; docs/migrate.md)."""
    path = _shovel_path(vhost, source)
    if client.get_or_none(path, what=what) is not None:
        return
    vhost_uri = "amqp:///" + quote(vhost, safe="")
    value = {
        "src-uri": vhost_uri,
        "src-queue": source,
        "dest-uri": vhost_uri,
        "dest-queue": destination,
        "ack-mode": "on-confirm",
    }
    client.put(path, {"value": value}, what=what)


def _counts(client: ManagementClient, vhost: str, queue: str, what: str) -> tuple[int, int] | None:
    """(ready, unacknowledged) of `queue`, None if it is gone. A classic queue answers from its process
    (exact at once); a quorum queue from its last tick (every QUORUM_TICK seconds)."""
    params = {
        "disable_stats": "true",
        "enable_queue_totals": "true",
        "columns": "name,messages_ready,messages_unacknowledged",
        "page": "1",
        "page_size": "100",
        "name": "^" + re.escape(queue) + "$",
        "use_regex": "true",
    }
    listing = client.get_or_none(api_path("queues", vhost), what=what, params=params) or {}
    for item in listing.get("items") or ():
        if item.get("name") == queue:
            return int(item.get("messages_ready") or 0), int(item.get("messages_unacknowledged") or 0)
    return None


def _wait_settled(
    client: ManagementClient, vhost: str, source: str, destination: str, quorum: bool, what: str, began: float
) -> None:
    """Waits until `source` holds no message, ready or delivered to the shovel and not yet acked (with
    on-confirm: acked once the destination confirmed it). Nothing new reaches the source meanwhile (or
    only what the if-empty delete then finds), so once true it stays true.

    A quorum queue's counts are those of its last tick: a zero read before its messages arrived could
    be stale. They are trusted once they changed since the first read (so they come from a later tick)
    or stayed zero for longer than a tick."""
    first: tuple[int, int] | None = None
    changed = False
    zero_since: float | None = None
    last: tuple[int, int] | None = None
    moved_at = 0.0  # when the counts last changed (the first read counts as a change)
    pause = 0.02
    while True:
        counts = _counts(client, vhost, source, what)
        if counts is None:
            return  # gone: deleted by an earlier run that was killed right after; nothing left to move
        now = time.monotonic()
        if first is None:
            first = counts
        if counts != last:
            moved_at = now
        changed = changed or counts != first
        if counts == (0, 0):
            if zero_since is not None and (not quorum or changed or now - zero_since > QUORUM_TICK + 1.0):
                return
            zero_since = zero_since if zero_since is not None else now
        else:
            zero_since = None
            if counts[0] == 0 and counts[1]:
                if now - moved_at > HELD_TIMEOUT + (QUORUM_TICK if quorum else 0.0):
                    raise TopoError(
                        f"{what}: queue {source!r} still holds {counts[1]} message(s) delivered to a consumer and "
                        f"not acknowledged after {HELD_TIMEOUT:.0f} s; topo deletes no queue before they are "
                        "settled. Have the consumer acknowledge them, or close it (the broker then returns them "
                        "to the queue), and run apply again: the migration continues where it stopped"
                    )
            elif now - moved_at > STALL_TIMEOUT + (QUORUM_TICK if quorum else 0.0):
                # Stopped, its unconfirmed messages go back to the source; left running, it would
                # re-declare the destination (as a plain classic queue) if someone deleted it.
                client.delete(_shovel_path(vhost, source), what=what)
                raise TopoError(
                    f"{what}: the shovel from {source!r} to {destination!r} moved nothing for "
                    f"{STALL_TIMEOUT:.0f} s ({counts[0]} ready, {counts[1]} taken by the shovel and not yet "
                    f"confirmed by {destination!r}): {destination!r} takes no message. topo stopped the "
                    f"shovel (its messages are back in {source!r}) and deleted nothing. Check the queue (a "
                    "quorum queue needs a majority of its members online), then run apply again: the "
                    "migration continues where it stopped"
                )
            if client.get_or_none(_shovel_path(vhost, source), what=what) is None:
                # A shovel of an older topo that deleted itself (src-delete-after): start ours.
                _shovel(client, vhost, source, destination, what)
        if now - began > SHOVEL_TIMEOUT:
            held = f"{counts[0]} ready, {counts[1]} delivered and not acknowledged"
            raise TopoError(f"{what}: {source!r} was not emptied within {SHOVEL_TIMEOUT:.0f} s ({held})")
        last = counts
        time.sleep(pause)
        pause = min(pause * 2, 0.25)


def _wait_moved(client: ManagementClient, vhost: str, source: str, what: str) -> None:
    """Waits (a bounded time) until the shovel has taken what `source` holds: for order, not for safety."""
    counts = _counts(client, vhost, source, what)
    deadline = time.monotonic() + 1.0 + 2 * (counts[0] if counts else 0) / RATE
    pause = 0.02
    while counts is not None and counts[0] and time.monotonic() < deadline:
        time.sleep(pause)
        pause = min(pause * 2, 0.25)
        counts = _counts(client, vhost, source, what)


def _delete_if_empty(
    client: ManagementClient, vhost: str, queue: str, quorum: bool, allow_disruption: bool, what: str
) -> bool:
    path = api_path("queues", vhost, queue)
    if quorum:
        # Quorum queues refuse if-empty: look for a message (requeued at once), then delete.
        got = client.request(
            "POST",
            api_path("queues", vhost, queue, "get"),
            what=what,
            body={"count": 1, "ackmode": "reject_requeue_true", "encoding": "auto"},
            idempotent=True,
            ok=(404,),
        )
        if got.status_code != 404 and got.json():
            return False
        client.delete(path, what=what)
        return True
    conditions = "if-empty=true" + ("" if allow_disruption else "&if-unused=true")
    try:
        client.request("DELETE", f"{path}?{conditions}", what=what, ok=(404,))
    except BrokerError as exc:
        if exc.status == 400 and "not empty" in exc.reason:
            return False
        if exc.status == 400 and "in use" in exc.reason:
            time.sleep(0.1)  # the stopped shovel's consumer, still going away
            return False
        raise
    return True
