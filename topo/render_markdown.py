"""Plans (and apply outcomes) as Markdown for review: pull-request comments and CI job summaries.

GitHub-flavoured: a heading with the summary, banners for data loss and disruption, a table per vhost,
and each vhost's changes in a collapsible <details> section as a `diff` code block. Every name comes
from the broker or the files, so it is escaped for where it lands (HTML in <summary> and table cells,
a fence longer than any backtick run in code blocks). Passwords never appear: values go through the
text renderer's masking (render.public / _change_lines).
"""

from __future__ import annotations

import html
import re
from collections import Counter
from itertools import groupby

from topo.diff import Action, Change
from topo.plan import Plan
from topo.render import _change_lines, _Painter, display_name
from topo.state import Kind

_COLUMNS = (("add", Action.CREATE), ("change", Action.UPDATE), ("replace", Action.REPLACE), ("destroy", Action.DELETE))
# What stops working while a change runs, or for good: consumers are cancelled when a queue is deleted,
# publishes routed to it are dropped until it and its bindings are back, clients lose access.
_DISRUPTIVE_DELETES = frozenset(
    {
        Kind.VHOST,
        Kind.EXCHANGE,
        Kind.QUEUE,
        Kind.BINDING,
        Kind.USER,
        Kind.PERMISSION,
        Kind.TOPIC_PERMISSION,
        Kind.PARAMETER,
    }
)


def inline_code(text: str) -> str:
    """Inline code that survives any name, inside Markdown or HTML: <code> with HTML escaping."""
    escaped = html.escape(text, quote=True).replace("|", "&#124;").replace("\n", " ")
    return f"<code>{escaped}</code>"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _summary(plan: Plan) -> str:
    counts = plan.summary()
    return ", ".join(f"{counts[name]} to {name}" for name, _ in _COLUMNS)


def _fence(lines: list[str]) -> tuple[str, str]:
    longest = max((len(run) for line in lines for run in re.findall(r"`+", line)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}diff", fence


def _what(change: Change) -> str:
    attrs = change.after if change.after is not None else change.before
    where = "" if change.kind is Kind.VHOST else f" in vhost {inline_code(change.key.vhost)}"
    name = inline_code(display_name(change.key, attrs))
    return f"{change.action.value} {change.kind.value.replace('_', ' ')} {name}{where}"


def _banners(plan: Plan) -> list[str]:
    out: list[str] = []
    losses = plan.data_loss()
    if losses:
        total = sum(plan.messages(c) or 0 for c in losses)
        unknown = " (and messages the broker cannot count)" if any(plan.messages_unknown(c) for c in losses) else ""
        out += [
            "> [!CAUTION]",
            f"> **Data loss:** {_plural(total, 'message')}{unknown} in {_plural(len(losses), 'object')} would be "
            "lost; `topo apply` refuses this plan without `--allow-data-loss`.",
        ]
        out += [f"> - {_what(c)}: {_plural(plan.messages(c) or 0, 'message')}" for c in losses[:20]]
        if len(losses) > 20:
            out.append(f"> - … and {len(losses) - 20} more")
        out.append("")
    migrated = {m.key for m in plan.migrations}  # routing keeps going: their own section says what stops
    disruptive = [
        c
        for c in plan.changes
        if c.key not in migrated
        and (c.action is Action.REPLACE or (c.action is Action.DELETE and c.kind in _DISRUPTIVE_DELETES))
    ]
    if disruptive:
        kinds = Counter(f"{c.action.value} {c.kind.value.replace('_', ' ')}" for c in disruptive)
        listed = ", ".join(f"{count} × {what}" for what, count in sorted(kinds.items()))
        out += [
            "> [!WARNING]",
            f"> **Disruption:** {listed}. Deleting or replacing a queue cancels its consumers, and messages "
            "routed to it until it and its bindings are back are dropped; removed bindings, permissions and "
            "users stop what relies on them.",
            "",
        ]
    return out


def _migrations(plan: Plan) -> list[str]:
    out: list[str] = []
    for m in plan.migrations:
        state = f" (interrupted: found {html.escape(', '.join(m.interrupted))}; finishing it)" if m.interrupted else ""
        out += [
            f"**Migration of queue {inline_code(m.queue)} in vhost {inline_code(m.vhost)}**{state}: "
            f"{_plural(m.messages, 'message')}, about {m.seconds():.0f} s; nothing is lost, routing never stops. "
            "Its consumers are cancelled when the old queue is deleted (`--allow-disruption`) and must consume "
            "again once it is re-declared.",
            "",
        ]
        out += [f"{number}. {html.escape(step)}" for number, step in enumerate(m.steps(), 1)]
        out.append("")
    return out


def _table(plan: Plan) -> list[str]:
    rows = ["| vhost | add | change | replace | destroy |", "|---|--:|--:|--:|--:|"]
    for vhost, group in groupby(plan.changes, key=lambda c: c.key.vhost):
        counts = Counter(c.action for c in group)
        rows.append(f"| {inline_code(vhost)} | " + " | ".join(str(counts[action]) for _, action in _COLUMNS) + " |")
    totals = plan.summary()
    rows.append("| **total** | " + " | ".join(f"**{totals[name]}**" for name, _ in _COLUMNS) + " |")
    return rows


def _vhost_section(plan: Plan, vhost: str, changes: list[Change]) -> list[str]:
    counts = Counter(c.action for c in changes)
    summary = ", ".join(f"{counts[action]} to {name}" for name, action in _COLUMNS if counts[action])
    lines: list[str] = []
    paint = _Painter(False)
    for change in changes:
        for line in _change_lines(plan, change, paint):
            # `diff` highlighting keys on the first character: + added, - removed, ~ (changed) stays plain.
            lines.append(line[2:] if line.startswith("  ") and not line.startswith("      ") else line)
    opening, closing = _fence(lines)
    return [
        "<details>",
        f"<summary>vhost {inline_code(vhost)}: {html.escape(summary)}</summary>",
        "",
        opening,
        *lines,
        closing,
        "",
        "</details>",
        "",
    ]


def render_markdown(plan: Plan, title: str = "topo plan", notes: list[str] | None = None) -> str:
    out: list[str] = []
    if plan.empty:
        out += [f"### {title}: no changes", "", "The broker matches the topology.", ""]
    else:
        out += [f"### {title}: {_summary(plan)}", ""]
    out += [f"> [!NOTE]\n> {line}\n" for line in notes or []]
    if not plan.empty:
        out += _banners(plan)
        out += _table(plan)
        out.append("")
        for vhost, group in groupby(plan.changes, key=lambda c: c.key.vhost):
            out += _vhost_section(plan, vhost, list(group))
        out += _migrations(plan)
    if plan.unmanaged:
        out += [
            "<details>",
            f"<summary>Unmanaged: {_plural(len(plan.unmanaged), 'object')} on the broker not in the files, "
            "left alone (<code>prune: true</code> deletes them)</summary>",
            "",
        ]
        for obj in plan.unmanaged[:100]:
            name = inline_code(display_name(obj.key, obj.attrs))
            out.append(f"- {obj.kind.value.replace('_', ' ')} {name} in vhost {inline_code(obj.key.vhost)}")
        if len(plan.unmanaged) > 100:
            out.append(f"- … and {len(plan.unmanaged) - 100} more (see `--format json`)")
        out += ["", "</details>", ""]
    if plan.warnings:
        out += ["**Warnings:**", ""]
        out += [f"- {html.escape(warning)}" for warning in plan.warnings]
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"
