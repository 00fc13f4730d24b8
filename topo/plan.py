"""An ordered, safety-checked set of changes. The order comes from the kinds' dependencies (kinds/order.py)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from topo.diff import Action, Change
from topo.errors import TopoError, UnsafePlan
from topo.holding import Hold
from topo.kinds import definition, rank
from topo.kinds.base import Phase
from topo.kinds.order import schedule
from topo.migrate import Migration
from topo.state import Key, Kind, Obj

_ACTIONS = {
    Phase.WRITE: frozenset({Action.CREATE, Action.UPDATE, Action.REPLACE}),
    Phase.DELETE: frozenset({Action.DELETE, Action.REPLACE}),
}


@dataclass(frozen=True, slots=True)
class Step:
    """One request's worth of work: a replace is two steps, its delete and its create."""

    change: Change
    phase: Action  # CREATE, UPDATE or DELETE


def stages(changes: Iterable[Change]) -> list[list[Step]]:
    """The changes as executable steps, one stage per slot of the derived schedule (kinds/order.py),
    deterministic within each. A change the schedule has no place for is an error, never a silent skip.

    Steps in one stage never depend on each other, so a stage may run in parallel; stages run in order.
    """
    changes = list(changes)
    by_slot: dict[tuple[Kind, Phase], list[Change]] = {}
    expected = 0
    for change in changes:
        phases = [phase for phase, actions in _ACTIONS.items() if change.action in actions]
        if change.action is Action.UPDATE and definition(change.kind).identity:
            phases = []  # identified by all its fields: there is nothing to update
        if not phases:
            raise TopoError(f"{change.action.value} {change.kind.value} {change.key.name!r}: no step can make it")
        for phase in phases:
            by_slot.setdefault((change.kind, phase), []).append(change)
        expected += len(phases)
    out: list[list[Step]] = []
    for kind, phase in schedule():
        stage = []
        for change in sorted(by_slot.pop((kind, phase), []), key=lambda c: c.key):
            if phase is Phase.DELETE:
                step_phase = Action.DELETE
            else:
                step_phase = Action.UPDATE if change.action is Action.UPDATE else Action.CREATE
            stage.append(Step(change, step_phase))
        if stage:
            out.append(stage)
    if by_slot or sum(map(len, out)) != expected:
        missing = ", ".join(f"{phase.value} {kind.value}" for kind, phase in by_slot)
        raise TopoError(f"changes left unscheduled ({missing}): a kind missing from the registry")
    return out


def steps(changes: Iterable[Change]) -> list[Step]:
    """All steps in dependency order."""
    return [step for stage in stages(changes) for step in stage]


@dataclass(frozen=True, slots=True)
class Held:
    """What the broker reported about an object the plan destroys: the messages it would lose, and the
    consumers it would cancel."""

    messages: int = 0
    unknown: bool = False  # the broker could not count them (treated as holding messages)
    consumers: int = 0


def where(key: Key) -> str:
    """` in vhost 'v'` for what lives in a vhost; nothing for vhosts themselves and for users."""
    return "" if key.kind is Kind.VHOST or key.vhost == "" else f" in vhost {key.vhost!r}"


def _loss(held: Held) -> str:
    count = f"{held.messages} message(s)"
    return count + " counted, more uncountable" if held.unknown else count


def _removes_access(change: Change) -> bool:
    after = change.after or {}
    return change.action is Action.DELETE or all(after.get(k) in ("", "^$") for k in ("configure", "write", "read"))


@dataclass(frozen=True, slots=True)
class Plan:
    """A value: the changes (frozen, in reading order), and beside them what the broker reported for
    safety, so that two plans compare equal when they would do the same thing to the same state."""

    changes: tuple[Change, ...] = ()
    unmanaged: tuple[Obj, ...] = ()
    warnings: tuple[str, ...] = ()
    me: str = ""  # the user topo is connected as
    held: Mapping[Key, Held] = field(default_factory=dict)  # by the key of a change that destroys
    # topo's records of interrupted replaces the plan restores from (holding.py): released after a verified apply
    holds: tuple[Hold, ...] = ()
    # Queues the plan creates -> the policy and operator policy that will apply to them (see explain.py).
    effective_policies: Mapping[Key, str] = field(default_factory=dict)
    # Replaces of queues made as migrations that keep their messages, and interrupted ones to finish (migrate.py).
    migrations: tuple[Migration, ...] = ()

    def __post_init__(self) -> None:
        ordered = sorted(self.changes, key=lambda c: (c.key.vhost, rank(c.kind), c.key.name, c.action))
        object.__setattr__(self, "changes", tuple(ordered))
        object.__setattr__(self, "unmanaged", tuple(self.unmanaged))
        object.__setattr__(self, "warnings", tuple(self.warnings))
        object.__setattr__(self, "holds", tuple(self.holds))
        object.__setattr__(self, "migrations", tuple(self.migrations))
        object.__setattr__(self, "held", MappingProxyType(dict(self.held)))
        object.__setattr__(self, "effective_policies", MappingProxyType(dict(self.effective_policies)))

    def messages(self, change: Change) -> int | None:
        """Messages `change` would destroy, as counted when planning (None: not counted, not destructive)."""
        held = self.held.get(change.key)
        return held.messages if held is not None else None

    def consumers(self, change: Change) -> int | None:
        """Consumers `change` would cancel, as counted when planning (None: not counted, not destructive)."""
        held = self.held.get(change.key)
        return held.consumers if held is not None else None

    def messages_unknown(self, change: Change) -> bool:
        held = self.held.get(change.key)
        return held is not None and held.unknown

    @property
    def empty(self) -> bool:
        return not self.changes and not self.migrations

    def summary(self) -> dict[str, int]:
        counts = {"add": 0, "change": 0, "replace": 0, "destroy": 0}
        names = {Action.CREATE: "add", Action.UPDATE: "change", Action.REPLACE: "replace", Action.DELETE: "destroy"}
        for change in self.changes:
            counts[names[change.action]] += 1
        return counts

    def data_loss(self) -> list[Change]:
        """Changes that would destroy messages (a migration moves them instead)."""
        migrated = {m.key for m in self.migrations}
        return [
            c
            for c in self.changes
            if c.action in (Action.DELETE, Action.REPLACE)
            and c.key not in migrated
            and definition(c.kind).holds_messages
            and c.key in self.held
            and (self.held[c.key].messages > 0 or self.held[c.key].unknown)
        ]

    def lockouts(self, me: str) -> list[str]:
        """Why the plan would lock out `me`, the user topo is connected as (no flag overrides this)."""
        reasons = []
        for change in self.changes:
            before, after = change.before or {}, change.after or {}
            if change.kind is Kind.USER and change.key.name == me:
                if change.action is Action.DELETE:
                    reasons.append(f"it deletes user {me!r}, the user topo is connected as")
                elif "administrator" in before.get("tags", []) and "administrator" not in after.get("tags", []):
                    reasons.append(f"it removes the administrator tag from {me!r}, the user topo is connected as")
            elif change.kind is Kind.PERMISSION and change.key.name == me and _removes_access(change):
                reasons.append(
                    f"it removes the permissions of {me!r}, the user topo is connected as, on vhost "
                    f"{change.key.vhost!r} which topo manages"
                )
        return reasons

    def disruptions(self) -> list[Change]:
        """Changes that would cancel consumers (deleting or replacing a queue, or a vhost, they read from)."""
        return [
            c
            for c in self.changes
            if c.action in (Action.DELETE, Action.REPLACE) and definition(c.kind).holds_messages and self.consumers(c)
        ]

    def raise_if_unsafe(self, allow_data_loss: bool, me: str = "", allow_disruption: bool = False) -> None:
        lockouts = self.lockouts(me) if me else []
        if lockouts:
            raise UnsafePlan(
                "refusing to apply: the plan would lock topo out of the broker:\n"
                + "\n".join(f"  {reason}" for reason in lockouts)
                + "\nApply it as another administrator, or change the files."
            )
        refusals = []
        losses = self.data_loss()
        if losses and not allow_data_loss:
            lines = "\n".join(
                f"  {c.action.value} {c.kind.value} {c.key.name!r}{where(c.key)}: {_loss(self.held[c.key])}"
                for c in losses
            )
            refusals.append(
                f"the plan would destroy messages:\n{lines}\n"
                "Drain the queues first, or pass --allow-data-loss to accept the loss."
            )
        cut_off = self.disruptions()
        if cut_off and not allow_disruption:
            lines = "\n".join(
                f"  {c.action.value} {c.kind.value} {c.key.name!r} in vhost {c.key.vhost!r}: "
                f"{self.consumers(c)} consumer{'' if self.consumers(c) == 1 else 's'}"
                for c in cut_off
            )
            refusals.append(
                f"the plan would cancel the consumers of queues in use:\n{lines}\n"
                "Stop those consumers first, or pass --allow-disruption to have the broker cancel them "
                "(many clients do not subscribe again by themselves)."
            )
        if refusals:
            raise UnsafePlan("refusing to apply: " + "\nand ".join(refusals))
