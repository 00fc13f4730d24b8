"""Targeting: `--target KIND/VHOST/NAME` and `--vhost V` narrow a plan to those objects and what they
depend on, as Terraform's -target does.

The full plan is made first (so safety and ordering see everything), then only the changes to the
selected objects are kept: the targets, the objects they need (depends.needs, transitively: a
binding's exchange and queue, a queue's dead-letter exchange, a permission's user, the vhost), the
bindings whose two ends are both selected, and the bindings a selected replace drops and re-creates
(leaving those out would lose routing). Everything else stays as it is, and the output says the plan
is partial.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass, replace

from topo.depends import needs
from topo.diff import Action, Change
from topo.errors import ConfigError
from topo.plan import Plan
from topo.state import Actual, Desired, Key, Kind

_VHOSTLESS = frozenset({Kind.USER, Kind.USER_LIMIT})


@dataclass(frozen=True, slots=True)
class Target:
    text: str  # as given
    kind: Kind
    vhost: str
    name: str  # a shell-style pattern (`orders.*`); bindings are selected through their ends

    def matches(self, key: Key) -> bool:
        if key.kind is not self.kind:
            return False
        if self.kind is Kind.VHOST:
            return fnmatch.fnmatchcase(key.vhost, self.vhost)
        if self.kind in _VHOSTLESS:
            return fnmatch.fnmatchcase(key.name, self.name)
        return key.vhost == self.vhost and fnmatch.fnmatchcase(key.name, self.name)


def parse_targets(values: Iterable[str], vhosts: Iterable[str]) -> list[Target]:
    """KIND/VHOST/NAME (user/NAME, vhost/NAME). A vhost name may hold `/` (the default vhost is `/`:
    queue///orders): the longest vhost of the files or the broker that prefixes the rest wins."""
    known = sorted(set(vhosts), key=len, reverse=True)
    kinds = ", ".join(k.value for k in Kind if k is not Kind.BINDING)
    targets = []
    for value in values:
        kind_text, slash, rest = value.partition("/")
        try:
            kind = Kind(kind_text)
        except ValueError:
            raise ConfigError(f"--target {value!r}: unknown kind {kind_text!r} (one of: {kinds})") from None
        if kind is Kind.BINDING:
            raise ConfigError(
                f"--target {value!r}: bindings have no name; target their exchange and queue (a binding whose "
                "two ends are both targeted is planned with them)"
            )
        if not slash or not rest:
            raise ConfigError(f"--target {value!r}: expected KIND/VHOST/NAME (or {kind_text}/NAME)")
        if kind is Kind.VHOST:
            targets.append(Target(value, kind, rest, rest))
            continue
        if kind in _VHOSTLESS:
            targets.append(Target(value, kind, "", rest))
            continue
        vhost = next((v for v in known if rest.startswith(v + "/") and len(rest) > len(v) + 1), None)
        if vhost is None:
            raise ConfigError(
                f"--target {value!r}: expected KIND/VHOST/NAME with a vhost of the files or the broker "
                f"(known: {', '.join(map(repr, sorted(known)[:20])) or 'none'}{', …' if len(known) > 20 else ''})"
            )
        targets.append(Target(value, kind, vhost, rest[len(vhost) + 1 :]))
    return targets


@dataclass(frozen=True, slots=True)
class Selection:
    targets: tuple[Target, ...]
    vhosts: tuple[str, ...]
    keys: frozenset[Key]

    def describe(self) -> str:
        parts = [f"--target {t.text}" for t in self.targets] + [f"--vhost {v}" for v in self.vhosts]
        return ", ".join(parts)

    def note(self) -> str:
        return (
            f"Partial plan: only {self.describe()} and what they depend on; other differences are left for a "
            "plan without --target/--vhost."
        )


def select(
    changes: list[Change], desired: Desired, actual: Actual, targets: list[Target], vhosts: list[str]
) -> Selection:
    """The keys in scope: targets and --vhost objects, their needs (transitively), bindings between them."""
    attrs = {key: obj.attrs for key, obj in actual.objects.items()}
    attrs.update({key: obj.attrs for key, obj in desired.objects.items()})
    planned = {change.key: change for change in changes}
    universe = set(attrs) | set(planned) | set(desired.absent)
    for name in vhosts:
        if name not in desired.vhosts and name not in desired.absent_vhosts and name not in actual.vhosts:
            raise ConfigError(f"--vhost {name!r}: no such vhost in the files or on the broker")
    chosen = {key for key in universe if any(t.matches(key) for t in targets) or key.vhost in vhosts}
    if vhosts:
        chosen |= {Key(Kind.VHOST, v, v) for v in vhosts}
    for target in targets:
        if not any(target.matches(key) for key in universe):
            raise ConfigError(f"--target {target.text!r} matches no object in the files or on the broker")
    # What the chosen need, transitively (a binding needs its exchange, the exchange its vhost).
    todo = list(chosen)
    while todo:
        key = todo.pop()
        change = planned.get(key)
        found = attrs.get(key) or (change.after or change.before if change else None)
        for needed in needs(key, found):
            if needed not in chosen:
                chosen.add(needed)
                todo.append(needed)
    for key in universe:
        if key.kind is Kind.BINDING and key not in chosen and needs(key, attrs.get(key) or _attrs(planned.get(key))):
            ends = needs(key, attrs.get(key) or _attrs(planned.get(key))) - {Key(Kind.VHOST, key.vhost, key.vhost)}
            if ends <= chosen:
                chosen.add(key)
    # A selected replace drops bindings the diff re-creates: they come with it.
    replaced = {c.key for c in changes if c.action is Action.REPLACE and c.key in chosen}
    for change in changes:
        if change.kind is Kind.BINDING and change.action is Action.CREATE and change.key not in chosen:
            ends = needs(change.key, change.after) - {Key(Kind.VHOST, change.key.vhost, change.key.vhost)}
            if ends & replaced:
                chosen.add(change.key)
    return Selection(tuple(targets), tuple(vhosts), frozenset(chosen))


def _attrs(change: Change | None) -> dict | None:
    if change is None:
        return None
    return change.after if change.after is not None else change.before


def narrow(plan: Plan, selection: Selection) -> Plan:
    """The plan's changes to the selected objects only, saying it is partial."""
    keys = selection.keys
    # replace() rather than a new Plan: whatever else a plan carries (holds, the effective policies of the
    # queues it creates, and fields added later) stays with the narrowed plan.
    return replace(
        plan,
        changes=tuple(c for c in plan.changes if c.key in keys),
        unmanaged=tuple(o for o in plan.unmanaged if o.key in keys),
        warnings=(*plan.warnings, selection.note()),
        held={key: held for key, held in plan.held.items() if key in keys},
        # plan.holds stay whole: released only once what each records is back (holding.release checks)
        effective_policies={key: text for key, text in plan.effective_policies.items() if key in keys},
    )
