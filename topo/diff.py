"""Desired vs actual -> changes. Pure: no I/O, no output, just data.

Keyed set difference: only in the files -> create; in both but different -> update, or replace for
immutable kinds; declared absent, or undeclared with pruning on -> delete; undeclared otherwise -> unmanaged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from topo import holding, migrate
from topo.kinds import definition
from topo.kinds.vhost import DEFAULTS as VHOST_DEFAULTS
from topo.ownership import non_durable, out_of_scope
from topo.redact import mask_uris
from topo.state import Actual, Desired, Key, Kind, Obj, same_value


class Action(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    REPLACE = "replace"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class Change:
    """One difference to resolve. Frozen, and never written to after diff: what the broker says about it
    later (the messages a delete would lose) is kept beside it, in the plan."""

    action: Action
    key: Key
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    reason: str | None = None

    @property
    def kind(self) -> Kind:
        return self.key.kind

    def changed_fields(self) -> list[str]:
        before, after = self.before or {}, self.after or {}
        return [f for f in sorted(set(before) | set(after)) if not same_value(before.get(f), after.get(f))]


@dataclass(slots=True)
class DiffResult:
    changes: list[Change] = field(default_factory=list)
    unmanaged: list[Obj] = field(default_factory=list)
    holds: tuple[holding.Hold, ...] = ()  # topo's records of replaces on the broker (see holding.py)


def _differences(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Readable field-level differences, descending one level into arguments and definitions."""
    out = []
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name), after.get(name)
        if same_value(old, new):
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            for sub in sorted(set(old) | set(new)):
                if not same_value(old.get(sub), new.get(sub)):
                    out.append(f"{name}.{sub}: {_short(old.get(sub))} → {_short(new.get(sub))}")
        else:
            out.append(f"{name}: {_short(old)} → {_short(new)}")
    return out


def _short(value: Any) -> str:
    # Shovel and federation URIs carry credentials: never show them.
    return "(none)" if value is None else json.dumps(mask_uris(value), ensure_ascii=False)


def _same_fields(have: dict[str, Any], want: dict[str, Any]) -> bool:
    """Every field the files set has the broker's value. In maps rather than a generator: these are the
    hottest lines of a large plan (0.05 s of 21,000 objects)."""
    return all(map(same_value, map(have.get, want), want.values()))


def diff(desired: Desired, actual: Actual) -> DiffResult:
    actual, holds = holding.split(migrate.without_temporaries(actual))
    result = DiffResult(holds=holds)
    managed = set(desired.vhosts)
    for key, want in desired.objects.items():
        have = actual.objects.get(key)
        if have is None:
            if key.kind is Kind.VHOST:
                want = Obj(key, VHOST_DEFAULTS | want.attrs)
            result.changes.append(Change(Action.CREATE, key, None, dict(want.attrs)))
            continue
        if key.kind is Kind.VHOST:
            # Metadata the files leave out is not managed: keep the broker's value. A broker without
            # deletion protection (before 4.0.6) has every vhost unprotected.
            current = {"protected_from_deletion": False, **have.attrs}
            merged = have.attrs | want.attrs
            if not all(same_value(current.get(f), v) for f, v in want.attrs.items()):
                result.changes.append(Change(Action.UPDATE, key, dict(have.attrs), merged))
            continue
        if _same_fields(have.attrs, want.attrs):
            continue
        kind = definition(key.kind)
        if kind.immutable:
            reason = "; ".join(_differences(have.attrs, want.attrs))
            result.changes.append(
                Change(Action.REPLACE, key, dict(have.attrs), dict(want.attrs), f"{reason} (immutable)")
            )
        elif not kind.identity:
            # Unchanged fields carry the broker's value: an unchanged password is sent back as its
            # current hash, so updating a user's tags never resets (or re-salts) the password.
            after = {f: have.attrs[f] if same_value(have.attrs.get(f), v) else v for f, v in want.attrs.items()}
            result.changes.append(Change(Action.UPDATE, key, dict(have.attrs), after))
    for key in desired.absent:
        have = actual.objects.get(key)
        if key.kind is Kind.VHOST:
            if key.vhost in actual.vhosts:
                before = have.attrs if have else {}
                result.changes.append(Change(Action.DELETE, key, dict(before), None, "declared absent"))
        elif have is not None:
            result.changes.append(Change(Action.DELETE, key, dict(have.attrs), None, "declared absent"))
    for key, have in actual.objects.items():
        if key.vhost not in managed or key in desired.objects or key in desired.absent:
            continue
        if key.kind is Kind.VHOST or key in desired.external:
            continue
        if definition(key.kind).access and not _manages(desired, actual, key, have):
            continue
        if out_of_scope(have, actual.objects, desired.ignore.get(key.vhost, ())):
            continue  # the clients' own objects, and what the files ignore: not topo's to touch or report
        if desired.prune.get(key.vhost, False) and (
            key.vhost in desired.prune_non_durable or not non_durable(have, actual.objects)
        ):
            result.changes.append(Change(Action.DELETE, key, dict(have.attrs), None, "not declared (prune)"))
        else:
            result.unmanaged.append(have)
    _recreate_dropped_bindings(result, actual)
    planned = {c.key for c in result.changes}
    for binding in holding.restores(holds, desired, actual, planned):
        result.changes.append(Change(Action.CREATE, binding.key, None, dict(binding.attrs), holding.REASON))
    result.unmanaged.sort(key=lambda obj: obj.key)
    return result


def _manages(desired: Desired, actual: Actual, key: Key, have: Obj) -> bool:
    """Access entries are in scope only where the files have a permissions (or topic_permissions)
    section for the vhost, and never the connected user's own undeclared ones: creating a vhost
    grants its creator full permissions, which must not read as drift."""
    user = key.name if key.kind is Kind.PERMISSION else have.attrs["user"]
    return (key.kind, key.vhost) in desired.access and user != actual.me


def _recreate_dropped_bindings(result: DiffResult, actual: Actual) -> None:
    """Deleting a queue or exchange drops its bindings (and, on 4.3, an exchange its topic permissions):
    a replace must put them back.

    Every binding on the broker that touches a replaced object is re-created, unless the plan deletes
    it anyway; declared bindings that are new already have a create of their own.
    """
    replaced = {c.key for c in result.changes if c.action is Action.REPLACE}
    if not replaced:
        return
    planned = {c.key for c in result.changes}
    deleted = {c.key for c in result.changes if c.action is Action.DELETE}
    for key, obj in actual.objects.items():
        if key.kind is Kind.TOPIC_PERMISSION and key not in planned:
            # RabbitMQ 4.3 deletes the topic permissions on an exchange it deletes; writing one again
            # is harmless where it does not (an identical PUT).
            exchange = Key(Kind.EXCHANGE, key.vhost, obj.attrs["exchange"])
            if exchange in replaced:
                why = f"re-created: replacing exchange {exchange.name!r} drops it"
                result.changes.append(Change(Action.CREATE, key, None, dict(obj.attrs), why))
            continue
        if key.kind is not Kind.BINDING or key in planned:
            continue
        attrs = obj.attrs
        ends = {
            Key(Kind.EXCHANGE, key.vhost, attrs["source"]),
            Key(Kind(attrs["destination_type"]), key.vhost, attrs["destination"]),
        }
        touched = ends & replaced
        if touched and not ends & deleted:
            what = sorted(touched)[0]
            result.changes.append(
                Change(
                    Action.CREATE,
                    key,
                    None,
                    dict(attrs),
                    f"re-created: replacing {what.kind.value} {what.name!r} drops it",
                )
            )
    # A binding topo re-creates is listed as a change, not as unmanaged.
    recreated = {c.key for c in result.changes}
    result.unmanaged[:] = [o for o in result.unmanaged if o.key not in recreated]
