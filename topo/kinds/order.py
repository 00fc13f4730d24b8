"""The apply order, derived from what each kind declares it depends on.

A kind is written (created or updated) after the kinds it depends on and deleted before them; a replace
of an immutable kind deletes before it re-creates. Within those rules writes run as early as possible
and deletes as late as possible (a delete comes early only when a write is waiting for it, as when a
replaced queue must be deleted, and its bindings before it, before it is created again). Ties are broken
by reading order (reversed for deletes), so the schedule is the same on every run.
"""

from __future__ import annotations

from functools import cache

from topo.kinds import Kind, registry
from topo.kinds.base import Phase

Slot = tuple[Kind, Phase]


@cache
def schedule() -> tuple[Slot, ...]:
    definitions = registry()
    slots: list[Slot] = [(d.kind, phase) for d in definitions for phase in (Phase.WRITE, Phase.DELETE)]
    before: dict[Slot, set[Slot]] = {slot: set() for slot in slots}
    for d in definitions:
        for dependency in d.depends_on:
            before[(d.kind, Phase.WRITE)].add((dependency, Phase.WRITE))
            before[(dependency, Phase.DELETE)].add((d.kind, Phase.DELETE))
        if d.immutable:
            before[(d.kind, Phase.WRITE)].add((d.kind, Phase.DELETE))
    done: list[Slot] = []
    remaining = list(slots)
    while remaining:
        ready = [slot for slot in remaining if before[slot] <= set(done)]
        if not ready:
            raise RuntimeError(f"the kinds' dependencies form a cycle among {remaining}")
        writes = [slot for slot in ready if slot[1] is Phase.WRITE]
        if writes:
            chosen = writes[0]
        else:
            waited_for = _ancestors([slot for slot in remaining if slot[1] is Phase.WRITE], before)
            # Deletes undo in reverse reading order: what is read last is removed first.
            ready.reverse()
            chosen = next((slot for slot in ready if slot in waited_for), ready[0])
        done.append(chosen)
        remaining.remove(chosen)
    return tuple(done)


def _ancestors(slots: list[Slot], before: dict[Slot, set[Slot]]) -> set[Slot]:
    found: set[Slot] = set()
    pending = list(slots)
    while pending:
        for earlier in before[pending.pop()]:
            if earlier not in found:
                found.add(earlier)
                pending.append(earlier)
    return found
