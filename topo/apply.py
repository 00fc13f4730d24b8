"""Plan -> requests. Executes steps in the plan's dependency order and stops at the first failure."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed

from topo import bulk, holding
from topo.client import ManagementClient
from topo.diff import Action
from topo.errors import ApplyFailed, BrokerError
from topo.kinds import definition
from topo.kinds.base import Phase
from topo.plan import Plan, Step, stages, where
from topo.render import display_name
from topo.state import Key, Kind, Obj

Progress = Callable[[int, int, Step], None]
# Concurrent requests within a stage: enough to keep a broker busy, few enough not to swamp it.
PARALLELISM = 16


def describe(step: Step) -> str:
    change = step.change
    verb = {Action.CREATE: "create", Action.UPDATE: "update", Action.DELETE: "delete"}[step.phase]
    if change.action is Action.REPLACE:
        verb = f"replace ({verb})"
    attrs = change.after if change.after is not None else change.before
    return f"{verb} {change.kind.value} {display_name(change.key, attrs)}{where(change.key)}"


def execute(
    client: ManagementClient,
    step: Step,
    allow_data_loss: bool,
    allow_disruption: bool = False,
    made: list[tuple[str, str]] | None = None,
    topic: list[Obj] | None = None,
) -> None:
    """The step's request(s), as its kind writes them (topo/kinds/<kind>.py). Before a replace deletes a
    queue or exchange, the bindings it drops are recorded on the broker (holding.py); `made` collects them,
    `topic` the topic permissions on a replaced exchange (written again at the end: holding.put_back)."""
    phase = Phase.DELETE if step.phase is Action.DELETE else Phase.WRITE
    change = step.change
    if phase is Phase.DELETE and holding.needs_hold(change):
        names = holding.hold(client, change.kind, change.key.vhost, change.key.name, topic)
        if made is not None:
            made.extend((change.key.vhost, name) for name in names)
    definition(step.change.kind).write(client, step.change, phase, describe(step), allow_data_loss, allow_disruption)


def apply_plan(
    client: ManagementClient,
    plan: Plan,
    *,
    allow_data_loss: bool = False,
    allow_disruption: bool = False,
    progress: Progress | None = None,
    parallelism: int = PARALLELISM,
    made: list[tuple[str, str]] | None = None,
) -> int:
    """Runs every step, stage by stage; returns how many ran. On failure says what was and was not done.

    Within a stage the steps are independent, so they run on a bounded pool: the broker, not the
    round trips, is then the limit. Large stages of new exchanges, queues or bindings go through the
    broker's bulk import instead (see bulk.py). A failing step does not abandon its independent
    siblings, but no later stage starts.
    """
    all_stages = stages(plan.changes)
    total = sum(len(stage) for stage in all_stages)
    done = 0
    imported: set[int] = set()  # ids of steps the bulk import already did
    topic: list[Obj] = []  # the topic permissions on the exchanges this apply replaces (holding.hold)
    attempted: set[int] = set()  # ids of steps already offered to it (a failed import is not retried)
    # The queues and exchanges this plan writes, by key: what a binding is re-tried onto (_vanished).
    written = {
        c.key: Step(c, Action.CREATE)
        for c in plan.changes
        if c.kind in ENDS and c.action in (Action.CREATE, Action.REPLACE)
    }
    with ThreadPoolExecutor(max_workers=max(parallelism, 1)) as pool:
        for number, stage in enumerate(all_stages):
            failures: list[tuple[Step, BrokerError]] = []
            if bulk.eligible(stage) and id(stage[0]) not in attempted:
                # Consecutive create stages (exchanges, queues, bindings) go in one import per vhost:
                # the broker orders them itself, and each import has a fixed cost.
                batch = list(stage)
                for later_stage in all_stages[number + 1 :]:
                    if not bulk.eligible(later_stage):
                        break
                    batch.extend(later_stage)
                attempted.update(id(step) for step in batch)
                for step in bulk.create(client, batch)[0]:
                    imported.add(id(step))
                    done += 1
                    if progress is not None:
                        progress(done, total, step)
            stage = [step for step in stage if id(step) not in imported]
            futures = [
                pool.submit(_run_serially, client, group, allow_data_loss, allow_disruption, made, topic, written)
                for group in _serial_groups(stage)
            ]
            for future in as_completed(futures):
                for step, error in future.result():
                    if error is not None:
                        failures.append((step, error))
                        continue
                    done += 1
                    if progress is not None:
                        progress(done, total, step)
            if failures:
                later = [
                    step for stage_after in all_stages[number + 1 :] for step in stage_after if id(step) not in imported
                ]
                raise ApplyFailed(_failure_report(failures, done, total, later), failures, later) from None
    # Every replaced exchange is back: its topic permissions too (a kill before this: the holds have them).
    holding.put_back(client, topic, {change.key for change in plan.changes})
    return total


ENDS = (Kind.QUEUE, Kind.EXCHANGE)


def _vanished(step: Step, error: BrokerError, written: dict[Key, Step]) -> list[Step]:
    """The writes to repeat before a binding's create is tried again: the ends it found missing that this
    plan created in an earlier stage. Something deleted them since: a killed apply's last request that
    the broker carried out only after this apply had started (seen on a loaded 3.10), or an apply racing
    this one without the lock. Re-creating them is what this plan wants anyway; a binding whose end the
    plan does not write fails as before."""
    change = step.change
    if change.kind is not Kind.BINDING or step.phase is not Action.CREATE or error.status != 404:
        return []
    attrs = change.after or {}
    ends = [Key(Kind.EXCHANGE, change.key.vhost, attrs["source"])]
    ends.append(Key(Kind(attrs["destination_type"]), change.key.vhost, attrs["destination"]))
    return [written[end] for end in ends if end in written]


def _serial_groups(stage: list[Step]) -> list[list[Step]]:
    """Steps that must not run concurrently, grouped; everything else is a group of one.

    Each kind says which of its steps must not overlap (limits: one record per vhost or user).
    """
    groups: dict[object, list[Step]] = {}
    for index, step in enumerate(stage):
        change = step.change
        group = definition(change.kind).serial_group(change.key, change.after or change.before or {})
        groups.setdefault(index if group is None else group, []).append(step)
    return list(groups.values())


def _run_serially(
    client: ManagementClient,
    group: list[Step],
    allow_data_loss: bool,
    allow_disruption: bool = False,
    made: list[tuple[str, str]] | None = None,
    topic: list[Obj] | None = None,
    written: dict[Key, Step] | None = None,
) -> list[tuple[Step, BrokerError | None]]:
    results: list[tuple[Step, BrokerError | None]] = []
    for step in group:
        try:
            try:
                execute(client, step, allow_data_loss, allow_disruption, made, topic)
            except BrokerError as error:
                again = _vanished(step, error, written or {})
                if not again:
                    raise
                for end in again:  # once: a second 404 is reported
                    execute(client, end, allow_data_loss, allow_disruption)
                execute(client, step, allow_data_loss, allow_disruption, made, topic)
        except BrokerError as error:
            results.append((step, error))
        except Exception as exc:  # a bug: still reported with what was and was not done
            results.append((step, BrokerError(describe(step), None, f"internal error (a bug in topo): {exc!r}")))
        else:
            results.append((step, None))
    return results


def _failure_report(failures: list[tuple[Step, BrokerError]], done: int, total: int, later: list[Step]) -> str:
    failures.sort(key=lambda item: item[0].change.key)
    lines = [f"apply stopped: {error}" for _, error in failures[:10]]
    if len(failures) > 10:
        lines.append(f"  … and {len(failures) - 10} more failures")
    lines.append(f"  done: {done} of {total} steps; failed: {len(failures)}; not attempted: {len(later)}")
    if later:
        lines.append("  not attempted:")
        lines.extend(f"    {describe(step)}" for step in later[:10])
        if len(later) > 10:
            lines.append(f"    … and {len(later) - 10} more")
    lines.append("  Fix the cause and run apply again: it continues from the broker's current state.")
    return "\n".join(lines)
