"""An ordered, safety-checked list of changes. Dependency order lives in one table: ORDER."""

from __future__ import annotations

from dataclasses import dataclass, field

from topo.diff import Action, Change
from topo.errors import UnsafePlan
from topo.state import Kind, Obj

# The single place that decides what runs before what. Things that contain or are referenced by
# others are created first and deleted last; a replace is a delete (in its delete slot) followed by a
# create (in its create slot), which is why bindings are deleted before and created after both.
ORDER: list[tuple[frozenset[Action], Kind]] = [
    (frozenset({Action.CREATE, Action.UPDATE}), Kind.VHOST),
    (frozenset({Action.CREATE, Action.UPDATE}), Kind.USER),
    (frozenset({Action.CREATE, Action.UPDATE}), Kind.USER_LIMIT),
    (frozenset({Action.CREATE, Action.UPDATE}), Kind.PERMISSION),
    (frozenset({Action.CREATE, Action.UPDATE}), Kind.VHOST_LIMIT),
    (frozenset({Action.CREATE, Action.UPDATE}), Kind.POLICY),
    (frozenset({Action.CREATE, Action.UPDATE}), Kind.OPERATOR_POLICY),
    (frozenset({Action.DELETE}), Kind.PARAMETER),
    # A topic permission names an exchange: RabbitMQ 4.3 refuses one for a missing exchange, and deleting
    # the exchange deletes it. So it is removed before and written after the exchanges.
    (frozenset({Action.DELETE}), Kind.TOPIC_PERMISSION),
    (frozenset({Action.DELETE}), Kind.BINDING),
    (frozenset({Action.DELETE, Action.REPLACE}), Kind.QUEUE),
    (frozenset({Action.DELETE, Action.REPLACE}), Kind.EXCHANGE),
    (frozenset({Action.CREATE, Action.REPLACE}), Kind.EXCHANGE),
    (frozenset({Action.CREATE, Action.REPLACE}), Kind.QUEUE),
    (frozenset({Action.CREATE}), Kind.BINDING),
    (frozenset({Action.CREATE, Action.UPDATE}), Kind.TOPIC_PERMISSION),
    # Shovels and federation links name queues and exchanges: started after, stopped before them.
    (frozenset({Action.CREATE, Action.UPDATE}), Kind.PARAMETER),
    (frozenset({Action.DELETE}), Kind.OPERATOR_POLICY),
    (frozenset({Action.DELETE}), Kind.POLICY),
    (frozenset({Action.DELETE}), Kind.VHOST_LIMIT),
    (frozenset({Action.DELETE}), Kind.USER_LIMIT),
    (frozenset({Action.DELETE}), Kind.PERMISSION),
    (frozenset({Action.DELETE}), Kind.VHOST),
    (frozenset({Action.DELETE}), Kind.USER),
]


@dataclass(frozen=True, slots=True)
class Step:
    """One request's worth of work: a replace is two steps, its delete and its create."""

    change: Change
    phase: Action  # CREATE, UPDATE or DELETE


def stages(changes: list[Change]) -> list[list[Step]]:
    """The changes as executable steps, one stage per ORDER slot, deterministic within each.

    Steps in one stage never depend on each other, so a stage may run in parallel; stages run in order.
    """
    out: list[list[Step]] = []
    for actions, kind in ORDER:
        slot = sorted((c for c in changes if c.kind is kind and c.action in actions), key=lambda c: c.key)
        stage = []
        for change in slot:
            if change.action is Action.REPLACE:
                phase = Action.DELETE if Action.DELETE in actions else Action.CREATE
            else:
                phase = change.action
            stage.append(Step(change, phase))
        if stage:
            out.append(stage)
    return out


def steps(changes: list[Change]) -> list[Step]:
    """All steps in dependency order."""
    return [step for stage in stages(changes) for step in stage]


_DISPLAY_ORDER = {
    Kind.VHOST: 0,
    Kind.VHOST_LIMIT: 1,
    Kind.POLICY: 2,
    Kind.OPERATOR_POLICY: 3,
    Kind.EXCHANGE: 4,
    Kind.QUEUE: 5,
    Kind.BINDING: 6,
    Kind.PARAMETER: 7,
    Kind.PERMISSION: 8,
    Kind.TOPIC_PERMISSION: 9,
    Kind.USER: 10,
    Kind.USER_LIMIT: 11,
}


def _loss(change: Change) -> str:
    count = f"{change.messages or 0} message(s)"
    return count + " counted, more uncountable" if change.messages_unknown else count


def _removes_access(change: Change) -> bool:
    after = change.after or {}
    return change.action is Action.DELETE or all(after.get(k) in ("", "^$") for k in ("configure", "write", "read"))


@dataclass(slots=True)
class Plan:
    changes: list[Change] = field(default_factory=list)
    unmanaged: list[Obj] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    me: str = ""  # the user topo is connected as

    def __post_init__(self) -> None:
        self.changes.sort(key=lambda c: (c.key.vhost, _DISPLAY_ORDER[c.kind], c.key.name, c.action))

    @property
    def empty(self) -> bool:
        return not self.changes

    def summary(self) -> dict[str, int]:
        counts = {"add": 0, "change": 0, "replace": 0, "destroy": 0}
        names = {Action.CREATE: "add", Action.UPDATE: "change", Action.REPLACE: "replace", Action.DELETE: "destroy"}
        for change in self.changes:
            counts[names[change.action]] += 1
        return counts

    def data_loss(self) -> list[Change]:
        """Changes that would destroy messages."""
        return [
            c
            for c in self.changes
            if c.action in (Action.DELETE, Action.REPLACE)
            and c.kind in (Kind.QUEUE, Kind.VHOST)
            and ((c.messages or 0) > 0 or c.messages_unknown)
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

    def raise_if_unsafe(self, allow_data_loss: bool, me: str = "") -> None:
        lockouts = self.lockouts(me) if me else []
        if lockouts:
            raise UnsafePlan(
                "refusing to apply: the plan would lock topo out of the broker:\n"
                + "\n".join(f"  {reason}" for reason in lockouts)
                + "\nApply it as another administrator, or change the files."
            )
        losses = self.data_loss()
        if losses and not allow_data_loss:
            lines = "\n".join(
                f"  {c.action.value} {c.kind.value} {c.key.name!r} in vhost {c.key.vhost!r}: {_loss(c)}" for c in losses
            )
            raise UnsafePlan(
                f"refusing to apply: the plan would destroy messages:\n{lines}\n"
                "Drain the queues first, or pass --allow-data-loss to accept the loss."
            )
