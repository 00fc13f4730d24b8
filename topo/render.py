"""Plans as text (Terraform-style) and as JSON. Rendering only reads the plan; it never decides."""

from __future__ import annotations

import json
from itertools import groupby
from typing import Any

from topo import migrate
from topo.diff import Action, Change
from topo.hints import replace_hint
from topo.kinds import definition
from topo.passwords import Password
from topo.plan import Plan
from topo.redact import mask_uris
from topo.state import Key, Kind, Obj

SYMBOLS = {Action.CREATE: "+", Action.UPDATE: "~", Action.REPLACE: "-/+", Action.DELETE: "-"}
COLOURS = {Action.CREATE: "32", Action.UPDATE: "33", Action.REPLACE: "35", Action.DELETE: "31"}
JSON_FORMAT_VERSION = "1"
UNMANAGED_SHOWN = 20


def display_name(key: Key, attrs: dict[str, Any] | None) -> str:
    """How an object is named to people (its kind decides: bindings have no name, for one)."""
    return definition(key.kind).display(key, attrs)


SENSITIVE = "(sensitive value)"
NO_PASSWORD = "(none: no password login)"


def public(attrs: dict[str, Any] | None) -> dict[str, Any] | None:
    """Attributes fit to show: passwords and hashes replaced by a marker."""
    if attrs is None:
        return None
    # Shovel and federation URIs carry passwords: amqp://user:***@host.
    return {k: SENSITIVE if isinstance(v, Password) else mask_uris(v) for k, v in attrs.items()}


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


# One encoder for every value: json.dumps with options builds a new one per call, which was a third of
# rendering a plan that creates 21,000 objects (45,000 values).
_encode = json.JSONEncoder(sort_keys=True, ensure_ascii=False).encode
_LITERALS = {True: "true", False: "false"}


def _value(value: Any) -> str:
    if value is True or value is False:
        return _LITERALS[value]
    if type(value) is int:
        return str(value)
    if isinstance(value, Password):
        return NO_PASSWORD if value.plaintext is None and value.password_hash == "" else SENSITIVE
    return _encode(mask_uris(value))


class _Painter:
    def __init__(self, colour: bool):
        self.colour = colour

    def __call__(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.colour else text


def _change_lines(plan: Plan, change: Change, paint: _Painter) -> list[str]:
    symbol = paint(SYMBOLS[change.action], COLOURS[change.action])
    attrs = change.after if change.after is not None else change.before
    head = f"  {symbol} {change.kind.value} {display_name(change.key, attrs)}"
    lines = [head]
    pad = "      "
    if change.action is Action.CREATE and not definition(change.kind).identity:
        for field, value in (change.after or {}).items():
            if value is None:
                continue
            lines.append(f"{pad}{field} = {_value(value)}")
    elif change.action is Action.UPDATE:
        for field in change.changed_fields():
            before = (change.before or {}).get(field)
            after = (change.after or {}).get(field)
            if isinstance(after, Password):
                lines.append(f"{pad}{field}: (sensitive value changed)")
                continue
            shown_before, shown_after = _value(before), _value(after)
            if shown_before == shown_after:
                # Only a password inside a shovel or federation URI differs.
                lines.append(f"{pad}{field}: (sensitive value changed)")
                continue
            lines.append(f"{pad}{field}: {shown_before} → {shown_after}")
    policy = plan.effective_policies.get(change.key)
    if policy:
        lines.append(f"{pad}# effective {policy}")
    if change.reason and change.action is not Action.UPDATE:
        label = "replace because" if change.action is Action.REPLACE else "because"
        lines.append(f"{pad}# {label}: {change.reason}")
    messages = plan.messages(change)
    migrated = any(m.key == change.key for m in plan.migrations)
    if messages and migrated:
        lines.append(f"{pad}# holds {_count(messages, 'message')}: the migration below moves them, none is lost")
    elif messages:
        warning = f"{pad}# holds {_count(messages, 'message')}: they would be lost"
        lines.append(paint(warning, "1;31"))
    if plan.messages_unknown(change) and not migrated:
        lines.append(paint(f"{pad}# the broker cannot count its messages: treated as holding some", "1;31"))
    consumers = plan.consumers(change)
    if consumers:
        warning = f"{pad}# {_count(consumers, 'consumer')} subscribed: the broker would cancel them"
        lines.append(paint(warning, "1;31"))
    elif messages == 0 and not plan.messages_unknown(change) and consumers == 0:
        lines.append(f"{pad}# not in use: no messages, no consumers")
    hint = replace_hint(change)
    if hint:
        lines.append(paint(f"{pad}# hint: {hint}", "36"))
    return lines


def render_text(plan: Plan, colour: bool = False, allow_data_loss: bool = False) -> str:
    paint = _Painter(colour)
    out: list[str] = []
    if plan.empty:
        unmanaged = f" ({_count(len(plan.unmanaged), 'unmanaged object')} left alone, below)" if plan.unmanaged else ""
        out.append(f"No changes. The broker matches the topology{unmanaged}.")
    else:
        out.append("topo will perform the following actions:")
        for vhost, group in groupby(plan.changes, key=lambda c: c.key.vhost):
            out.append("")
            group = list(group)
            # Users, their limits and global parameters belong to no vhost.
            heading = f"vhost {json.dumps(vhost, ensure_ascii=False)}:"
            if vhost == "":
                users = all(c.kind in (Kind.USER, Kind.USER_LIMIT) for c in group)
                heading = "users:" if users else "users and broker-wide settings:"
            out.append(paint(heading, "1"))
            for change in group:
                out.extend(_change_lines(plan, change, paint))
    out.extend(migrate.render_lines(plan))
    out.extend(_unmanaged_lines(plan.unmanaged))
    for warning in plan.warnings:
        out.append(paint(f"Warning: {warning}", "33"))
    if not plan.empty:
        counts = plan.summary()
        out.append("")
        out.append(
            paint(
                f"Plan: {counts['add']} to add, {counts['change']} to change, "
                f"{counts['replace']} to replace, {counts['destroy']} to destroy.",
                "1",
            )
        )
        losses = plan.data_loss()
        if losses:
            total = sum(plan.messages(c) or 0 for c in losses)
            flag = "allowed by --allow-data-loss" if allow_data_loss else "apply needs --allow-data-loss"
            out.append(
                paint(f"Data loss: {_count(total, 'message')} in {_count(len(losses), 'object')} ({flag}).", "1;31")
            )
        cut_off = plan.disruptions()
        if cut_off:
            total = sum(plan.consumers(c) or 0 for c in cut_off)
            out.append(
                paint(
                    f"Disruption: {_count(total, 'consumer')} of {_count(len(cut_off), 'object')} would be cancelled "
                    "(apply needs --allow-disruption).",
                    "1;31",
                )
            )
    return "\n".join(out) + "\n"


def _unmanaged_lines(unmanaged: list[Obj]) -> list[str]:
    if not unmanaged:
        return []
    out = [
        "",
        f"Unmanaged: {_count(len(unmanaged), 'object')} on the broker not in the files, left alone"
        " (prune: true deletes them):",
    ]
    for obj in unmanaged[:UNMANAGED_SHOWN]:
        durable = obj.kind not in (Kind.QUEUE, Kind.EXCHANGE) or obj.attrs.get("durable") is not False
        out.append(
            f"    {obj.key.kind.value} {display_name(obj.key, obj.attrs)} in vhost "
            f"{json.dumps(obj.key.vhost, ensure_ascii=False)}"
            + ("" if durable else " (non-durable: prune_non_durable: true deletes it)")
        )
    if len(unmanaged) > UNMANAGED_SHOWN:
        out.append(f"    … and {len(unmanaged) - UNMANAGED_SHOWN} more (see --json)")
    return out


def change_to_json(plan: Plan, change: Change) -> dict[str, Any]:
    attrs = change.after if change.after is not None else change.before
    return {
        "action": change.action.value,
        "kind": change.kind.value,
        "vhost": change.key.vhost,
        "name": change.key.name if not definition(change.kind).identity else display_name(change.key, attrs),
        "before": public(change.before),
        "after": public(change.after),
        "reason": change.reason,
        "messages": plan.messages(change),
        "messages_unknown": plan.messages_unknown(change),
        "consumers": plan.consumers(change),
        "hint": replace_hint(change),
    }


def plan_to_json(plan: Plan) -> dict[str, Any]:
    document = {
        "format_version": JSON_FORMAT_VERSION,
        "changes": [change_to_json(plan, c) for c in plan.changes],
        "summary": plan.summary(),
        "data_loss": [change_to_json(plan, c) for c in plan.data_loss()],
        "disruption": [change_to_json(plan, c) for c in plan.disruptions()],
        "unmanaged": [
            {
                "kind": o.kind.value,
                "vhost": o.key.vhost,
                "name": o.key.name if not definition(o.kind).identity else display_name(o.key, o.attrs),
                "attributes": public(o.attrs),
            }
            for o in plan.unmanaged
        ],
        "warnings": list(plan.warnings),
    }
    if plan.migrations:
        document["migrations"] = [migrate.to_json(m) for m in plan.migrations]
    return document


def render_json(plan: Plan) -> str:
    return json.dumps(plan_to_json(plan), indent=2, ensure_ascii=False, sort_keys=False) + "\n"
