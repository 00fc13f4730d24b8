"""Many new exchanges, queues or bindings at once, through the broker's own definitions import.

The import is neither strict nor atomic: it silently skips an existing object that differs, drops a
binding whose queue is missing, and can stop half-way. So it only ever gets objects the plan found
missing; when a vhost's import fails, the caller falls back to one request per object (which names
the failing object), and apply's final re-read catches anything the import skipped silently.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from topo.client import ManagementClient, api_path
from topo.diff import Action
from topo.errors import BrokerError
from topo.plan import Step
from topo.state import Kind

# Below this many objects per stage, individual requests are as fast and report errors precisely.
BULK_MINIMUM = 100
# A single import keeps one broker core busy; two at once use a second core (measured: 10% faster on
# 2 cores at 10,000 queues; four were no better than two).
CONCURRENT_IMPORTS = 2
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
    """Imports the steps per vhost; returns (steps done, steps whose import failed or never ran)."""
    by_vhost: dict[str, list[Step]] = {}
    for step in stage:
        by_vhost.setdefault(step.change.key.vhost, []).append(step)
    done: list[Step] = []
    failed: list[Step] = []
    with ThreadPoolExecutor(max_workers=CONCURRENT_IMPORTS) as pool:
        for vhost, steps in by_vhost.items():
            # Bindings need both their ends: they go in a second phase, after every exchange and queue.
            phases = [
                [s for s in steps if s.change.kind is not Kind.BINDING],
                [s for s in steps if s.change.kind is Kind.BINDING],
            ]
            for number, phase in enumerate(phases):
                parts = [
                    phase[i::CONCURRENT_IMPORTS] for i in range(CONCURRENT_IMPORTS) if phase[i::CONCURRENT_IMPORTS]
                ]
                outcomes = list(pool.map(_import, [client] * len(parts), [vhost] * len(parts), parts))
                for part, ok in zip(parts, outcomes, strict=True):
                    (done if ok else failed).extend(part)
                if not all(outcomes):
                    failed.extend(step for later in phases[number + 1 :] for step in later)
                    break
    return done, failed


def _import(client: ManagementClient, vhost: str, steps: list[Step]) -> bool:
    body: dict[str, list[dict[str, Any]]] = {}
    for step in steps:
        body.setdefault(_SECTIONS[step.change.kind], []).append(_definition(step))
    counts = ", ".join(f"{len(items)} {section}" for section, items in body.items())
    try:
        # Importing the same new objects twice is harmless, so a dropped connection is retried.
        what = f"import {counts} into vhost {vhost!r}"
        client.request("POST", api_path("definitions", vhost), what=what, body=body, idempotent=True)
    except BrokerError:
        return False  # retried one by one, which names the object at fault
    return True
