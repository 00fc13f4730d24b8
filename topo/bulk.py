"""Many new exchanges, queues or bindings at once, through the broker's own definitions import.

The import is neither strict nor atomic: it silently skips an existing object that differs, drops a
binding whose queue is missing, and can stop half-way. So it only ever gets objects the plan found
missing; when a vhost's import fails, the caller falls back to one request per object (which names
the failing object), and apply's final re-read catches anything the import skipped silently.
"""

from __future__ import annotations

from typing import Any

from topo.apipath import api_path
from topo.client import ManagementClient
from topo.diff import Action
from topo.errors import BrokerError
from topo.kinds import definition
from topo.plan import Step

# Below this many objects per stage, individual requests are as fast and report errors precisely.
BULK_MINIMUM = 100


def eligible(stage: list[Step]) -> bool:
    return len(stage) >= BULK_MINIMUM and all(
        step.phase is Action.CREATE and definition(step.change.kind).bulk_section is not None for step in stage
    )


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
            kind = definition(step.change.kind)
            assert kind.bulk_section is not None  # see eligible()
            entry = kind.bulk_definition(step.change.key, step.change.after or {})
            body.setdefault(kind.bulk_section, []).append(entry)
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
