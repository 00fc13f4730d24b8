"""Many new exchanges, queues or bindings at once, through the broker's own definitions import.

The import is neither strict nor atomic: it silently skips an existing object that differs, drops a
binding whose queue is missing, and can stop half-way. So it only ever gets objects the plan found
missing; when a vhost's import fails, the caller falls back to one request per object (which names
the failing object), and apply's final re-read catches anything the import skipped silently.
"""

from __future__ import annotations

from typing import Any

from topo.client import ManagementClient, api_path
from topo.diff import Action
from topo.errors import BrokerError
from topo.plan import Step
from topo.state import Kind

# Below this many objects per stage, individual requests are as fast and report errors precisely.
BULK_MINIMUM = 100
_SECTIONS = {Kind.EXCHANGE: "exchanges", Kind.QUEUE: "queues", Kind.BINDING: "bindings"}


def eligible(stage: list[Step]) -> bool:
    return len(stage) >= BULK_MINIMUM and all(
        step.phase is Action.CREATE and step.change.kind in _SECTIONS for step in stage
    )


def _definition(step: Step) -> dict[str, Any]:
    attrs = step.change.after or {}
    kind, name = step.change.kind, step.change.key.name
    if kind is Kind.EXCHANGE:
        return {"name": name, **attrs}
    if kind is Kind.QUEUE:
        # Always name the type: an omitted x-queue-type means the vhost's default, not necessarily classic.
        arguments = {"x-queue-type": attrs["type"], **attrs["arguments"]}
        return {"name": name, "durable": attrs["durable"], "auto_delete": attrs["auto_delete"], "arguments": arguments}
    return dict(attrs)


def create(client: ManagementClient, stage: list[Step]) -> tuple[list[Step], list[Step]]:
    """Imports the stage per vhost; returns (steps done, steps whose vhost import failed)."""
    by_vhost: dict[str, list[Step]] = {}
    for step in stage:
        by_vhost.setdefault(step.change.key.vhost, []).append(step)
    done: list[Step] = []
    failed: list[Step] = []
    for vhost, steps in by_vhost.items():
        body: dict[str, list[dict[str, Any]]] = {}
        for step in steps:
            body.setdefault(_SECTIONS[step.change.kind], []).append(_definition(step))
        counts = ", ".join(f"{len(items)} {section}" for section, items in body.items())
        try:
            # Importing the same new objects twice is harmless, so a dropped connection is retried.
            what = f"import {counts} into vhost {vhost!r}"
            client.request("POST", api_path("definitions", vhost), what=what, body=body, idempotent=True)
        except BrokerError:
            failed.extend(steps)  # retried one by one, which names the object at fault
        else:
            done.extend(steps)
    return done, failed
