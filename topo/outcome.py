"""What an apply did, as data: steps done, failed (with the broker's status and reason), not attempted,
and what the verification found. Rendered as JSON (`apply --json`) and Markdown; text stays in cli."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from topo.apply import describe
from topo.diff import Change
from topo.errors import ApplyFailed, BrokerError, NotConverged, TopoError
from topo.plan import Plan, Step, steps
from topo.redact import scrub
from topo.render import JSON_FORMAT_VERSION, change_to_json, display_name, plan_to_json
from topo.render_markdown import inline_code, render_markdown


class Status(StrEnum):
    APPLIED = "applied"  # every step done and verified
    NO_CHANGES = "no_changes"
    FAILED = "failed"  # a step failed: see failed and not_attempted
    NOT_CONVERGED = "not_converged"  # every step done, but the broker kept a different state
    REFUSED = "refused"  # nothing done: unsafe plan, lock held, stale saved plan, bad input...
    CANCELLED = "cancelled"  # not confirmed


@dataclass
class Outcome:
    plan: Plan | None = None
    status: Status = Status.REFUSED
    done: list[Step] = field(default_factory=list)
    failed: list[tuple[Step, BrokerError]] = field(default_factory=list)
    not_attempted: list[Step] = field(default_factory=list)
    remaining: list[Change] | None = None  # after verification; None when it did not run
    error: str | None = None
    warnings: list[str] = field(default_factory=list)

    def record(self, done: int, total: int, step: Step) -> None:
        """A progress callback: apply calls it once per step done."""
        self.done.append(step)

    def succeeded(self) -> None:
        self.status = Status.APPLIED
        self.remaining = []

    def failed_with(self, error: TopoError) -> None:
        self.error = scrub(str(error))
        if isinstance(error, ApplyFailed):
            self.status = Status.FAILED
            self.failed = list(error.failures)
            self.not_attempted = list(error.not_attempted)
        elif isinstance(error, NotConverged):
            self.status = Status.NOT_CONVERGED
            self.remaining = list(error.remaining)
        elif self.done:
            self.status = Status.FAILED
            if self.plan is not None:  # stopped by something that is not a step's failure (the lock)
                finished = {(id(step.change), step.phase) for step in self.done}
                self.not_attempted = [s for s in steps(self.plan.changes) if (id(s.change), s.phase) not in finished]
        else:
            self.status = Status.REFUSED


def _step(step: Step) -> dict[str, Any]:
    change = step.change
    attrs = change.after if change.after is not None else change.before
    return {
        "action": change.action.value,
        "phase": step.phase.value,
        "kind": change.kind.value,
        "vhost": change.key.vhost,
        "name": display_name(change.key, attrs) if change.kind.value == "binding" else change.key.name,
        "description": describe(step),
    }


def outcome_to_json(outcome: Outcome) -> dict[str, Any]:
    total = len(steps(outcome.plan.changes)) if outcome.plan is not None else 0
    verification = None
    if outcome.remaining is not None:
        verification = {
            "converged": not outcome.remaining,
            "remaining": [change_to_json(outcome.plan or Plan(), change) for change in outcome.remaining],
        }
    return {
        "format_version": JSON_FORMAT_VERSION,
        "outcome": outcome.status.value,
        "plan": plan_to_json(outcome.plan) if outcome.plan is not None else None,
        "steps": {
            "total": total,
            "done": [_step(step) for step in outcome.done],
            "failed": [
                {**_step(step), "status": error.status, "reason": scrub(error.reason)} for step, error in outcome.failed
            ],
            "not_attempted": [_step(step) for step in outcome.not_attempted],
        },
        "verification": verification,
        "error": outcome.error,
        "warnings": outcome.warnings,
    }


def render_outcome_json(outcome: Outcome) -> str:
    return json.dumps(outcome_to_json(outcome), indent=2, ensure_ascii=False) + "\n"


_HEADLINES = {
    Status.APPLIED: "Applied and verified: the broker matches the topology.",
    Status.NO_CHANGES: "Nothing to apply: the broker matches the topology.",
    Status.FAILED: "Apply stopped part-way.",
    Status.NOT_CONVERGED: "Applied, but the broker did not converge.",
    Status.REFUSED: "Refused: nothing was changed.",
    Status.CANCELLED: "Cancelled: nothing was changed.",
}


def render_outcome_markdown(outcome: Outcome) -> str:
    """The plan as Markdown, then what the apply did."""
    out = [render_markdown(outcome.plan, "topo apply").rstrip("\n"), ""] if outcome.plan is not None else []
    out += [f"#### Result: {outcome.status.value.replace('_', ' ')}", "", _HEADLINES[outcome.status], ""]
    total = len(steps(outcome.plan.changes)) if outcome.plan is not None else 0
    if total:
        out += [f"- done: {len(outcome.done)} of {total} steps", f"- failed: {len(outcome.failed)}"]
        out += [f"- not attempted: {len(outcome.not_attempted)}"]
    for step, error in outcome.failed[:20]:
        status = f"HTTP {error.status}" if error.status is not None else "refused"
        out.append(f"- failed: {inline_code(describe(step))}: {status}: {inline_code(scrub(error.reason))}")
    for step in outcome.not_attempted[:20]:
        out.append(f"- not attempted: {inline_code(describe(step))}")
    for change in (outcome.remaining or [])[:20]:
        name = inline_code(display_name(change.key, change.after or change.before))
        vhost = inline_code(change.key.vhost)
        out.append(f"- still pending: {change.action.value} {change.kind.value} {name} in vhost {vhost}")
    for warning in outcome.warnings:
        out.append(f"- warning: {html.escape(warning)}")
    if outcome.error and outcome.status in (Status.REFUSED, Status.CANCELLED):
        out += ["", "<pre>" + html.escape(scrub(outcome.error)) + "</pre>"]
    return "\n".join(out).rstrip("\n") + "\n"
