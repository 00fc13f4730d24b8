"""Plan -> requests. Executes steps in the plan's dependency order and stops at the first failure."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any
from urllib.parse import quote

from topo import bulk
from topo.client import ManagementClient, api_path
from topo.diff import Action, Change
from topo.errors import ApplyFailed, BrokerError, StepRefused
from topo.plan import Plan, Step, stages
from topo.read import message_counts
from topo.redact import mask_uris
from topo.render import display_name
from topo.state import Kind, same_value

Progress = Callable[[int, int, Step], None]
# Concurrent requests within a stage: enough to keep a broker busy, few enough not to swamp it.
PARALLELISM = 16

_ENDPOINTS = {
    Kind.VHOST_LIMIT: "vhost-limits",
    Kind.POLICY: "policies",
    Kind.OPERATOR_POLICY: "operator-policies",
    Kind.EXCHANGE: "exchanges",
    Kind.QUEUE: "queues",
    Kind.PERMISSION: "permissions",
}


def describe(step: Step) -> str:
    change = step.change
    verb = {Action.CREATE: "create", Action.UPDATE: "update", Action.DELETE: "delete"}[step.phase]
    if change.action is Action.REPLACE:
        verb = f"replace ({verb})"
    attrs = change.after if change.after is not None else change.before
    where = "" if change.kind is Kind.VHOST else f" in vhost {change.key.vhost!r}"
    return f"{verb} {change.kind.value} {display_name(change.key, attrs)}{where}"


def _body(change: Change) -> dict[str, Any]:
    attrs = dict(change.after or {})
    kind = change.kind
    if kind is Kind.VHOST:
        # A vhost PUT replaces description and tags: always send every field.
        body: dict[str, Any] = {
            "description": attrs.get("description", ""),
            "tags": ",".join(attrs.get("tags", [])),
            "tracing": attrs.get("tracing", False),
        }
        if attrs.get("default_queue_type"):
            body["default_queue_type"] = attrs["default_queue_type"]
        return body
    if kind is Kind.QUEUE:
        # Always name the type: an omitted x-queue-type means the vhost's default, not necessarily classic.
        arguments = {"x-queue-type": attrs["type"], **attrs["arguments"]}
        return {"durable": attrs["durable"], "auto_delete": attrs["auto_delete"], "arguments": arguments}
    if kind is Kind.BINDING:
        return {"routing_key": attrs["routing_key"], "arguments": attrs["arguments"]}
    if kind is Kind.USER:
        # A user PUT without a password or hash clears the password: always send the hash (the current
        # one when unchanged; one computed here, never the plaintext, when it changes).
        password_hash, algorithm = attrs["password"].to_broker()
        return {"password_hash": password_hash, "hashing_algorithm": algorithm, "tags": ",".join(attrs["tags"])}
    if kind is Kind.PARAMETER:
        return {"value": attrs["value"]}
    if kind is Kind.TOPIC_PERMISSION:
        return {"exchange": attrs["exchange"], "write": attrs["write"], "read": attrs["read"]}
    return attrs


def _binding_path(change: Change) -> str:
    attrs = change.after if change.after is not None else change.before
    assert attrs is not None
    short = "q" if attrs["destination_type"] == "queue" else "e"
    return api_path("bindings", change.key.vhost, "e", attrs["source"], short, attrs["destination"])


def _delete_binding(client: ManagementClient, change: Change, what: str) -> None:
    # Bindings are deleted by properties_key, which for bindings with arguments only the broker can
    # compute: list the bindings between the two ends and pick the matching one.
    attrs = change.before or {}
    path = _binding_path(change)
    existing = client.get_or_none(path, what=what) or []
    for item in existing:
        if item.get("routing_key", "") == attrs["routing_key"] and same_value(
            item.get("arguments") or {}, attrs["arguments"]
        ):
            client.delete(f"{path}/{quote(item['properties_key'], safe='')}", what=what)
            return


def _refuse_if_messages_arrived(client: ManagementClient, change: Change, what: str) -> None:
    """Counts again just before a delete the broker cannot make conditional (quorum, stream, vhost)."""
    names = None if change.kind is Kind.VHOST else {change.key.name}
    counts = message_counts(client, change.key.vhost, names)
    if any(count is None or count > 0 for count in counts.values()):
        held = sum(count or 0 for count in counts.values())
        raise StepRefused(what, f"it now holds messages ({held} counted) that the plan did not; --allow-data-loss")


def execute(client: ManagementClient, step: Step, allow_data_loss: bool) -> None:
    change, what = step.change, describe(step)
    kind, vhost, name = change.kind, change.key.vhost, change.key.name
    if kind is Kind.VHOST:
        path = api_path("vhosts", vhost)
    elif kind is Kind.USER:
        path = api_path("users", name)
    elif kind is Kind.USER_LIMIT:
        attrs = change.after or change.before or {}
        path = api_path("user-limits", attrs["user"], attrs["name"])
    elif kind is Kind.TOPIC_PERMISSION:
        attrs = change.after or change.before or {}
        path = api_path("topic-permissions", vhost, attrs["user"])
        if step.phase is Action.DELETE:
            # The per-exchange path: the plain one would remove all of the user's entries in the vhost.
            path = api_path("topic-permissions", vhost, attrs["user"], attrs["exchange"])
    elif kind is Kind.BINDING:
        path = _binding_path(change)
    elif kind is Kind.PARAMETER:
        attrs = change.after or change.before or {}
        path = api_path("parameters", attrs["component"], vhost, attrs["name"])
    else:
        path = api_path(_ENDPOINTS[kind], vhost, name)
    if step.phase is Action.DELETE:
        if kind is Kind.BINDING:
            _delete_binding(client, change, what)
        elif kind is Kind.QUEUE and not allow_data_loss and (change.before or {}).get("type") == "classic":
            # The plan saw no messages; if some arrived since, let the broker refuse instead of losing them.
            # Only classic queues honour if-empty: quorum queues reject it, streams ignore it.
            client.request("DELETE", path + "?if-empty=true", what=what, ok=(404,))
        else:
            if kind in (Kind.QUEUE, Kind.VHOST) and not allow_data_loss:
                _refuse_if_messages_arrived(client, change, what)
            client.delete(path, what=what)
    elif kind is Kind.BINDING:
        client.request("POST", path, what=what, body=_body(change), idempotent=True)
    elif kind in (Kind.VHOST_LIMIT, Kind.USER_LIMIT):
        client.put(path, {"value": (change.after or {})["value"]}, what=what)
    elif kind is Kind.PARAMETER:
        _put_parameter(client, path, change, what)
    else:
        client.put(path, _body(change), what=what)
        if kind is Kind.VHOST:
            _set_deletion_protection(client, change, what)


def _set_deletion_protection(client: ManagementClient, change: Change, what: str) -> None:
    """Deletion protection is not part of the vhost PUT: it has an endpoint of its own (4.0.6+)."""
    want = (change.after or {}).get("protected_from_deletion")
    if want is None or want == bool((change.before or {}).get("protected_from_deletion", False)):
        return
    path = api_path("vhosts", change.key.vhost, "deletion", "protection")
    client.request("POST" if want else "DELETE", path, what=what, idempotent=True)


def _put_parameter(client: ManagementClient, path: str, change: Change, what: str) -> None:
    try:
        client.put(path, _body(change), what=what)
    except BrokerError as exc:
        value = (change.after or {}).get("value")
        if mask_uris(value) == value:
            raise
        # The plugin's validation error repeats the URI in Erlang's notation (quotes escaped, non-ASCII as
        # byte lists, split at / or :), which no scrubbing of the known password can be sure to catch.
        headline = exc.reason.strip().splitlines()[0] if exc.reason.strip() else "refused"
        reason = (
            f"{headline} (the broker's details are not shown: they repeat a URI with its password; check the "
            "URI's form, and percent-encode @ / : # ? and spaces in the password)"
        )
        raise BrokerError(exc.action, exc.status, reason) from None


def apply_plan(
    client: ManagementClient,
    plan: Plan,
    *,
    allow_data_loss: bool = False,
    progress: Progress | None = None,
    parallelism: int = PARALLELISM,
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
    attempted: set[int] = set()  # ids of steps already offered to it (a failed import is not retried)
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
            futures = [pool.submit(_run_serially, client, group, allow_data_loss) for group in _serial_groups(stage)]
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
                raise ApplyFailed(_failure_report(failures, done, total, later)) from None
    return total


def _serial_groups(stage: list[Step]) -> list[list[Step]]:
    """Steps that must not run concurrently, grouped; everything else is a group of one.

    RabbitMQ keeps all limits of a vhost (or a user) in one record that each PUT reads, changes and
    writes back: two concurrent limit PUTs on one vhost lose one of the two (seen on 3.10).
    """
    groups: dict[object, list[Step]] = {}
    for index, step in enumerate(stage):
        change = step.change
        key: object = index
        if change.kind is Kind.VHOST_LIMIT:
            key = ("limits", change.key.vhost)
        elif change.kind is Kind.USER_LIMIT:
            key = ("user limits", (change.after or change.before or {})["user"])
        groups.setdefault(key, []).append(step)
    return list(groups.values())


def _run_serially(
    client: ManagementClient, group: list[Step], allow_data_loss: bool
) -> list[tuple[Step, BrokerError | None]]:
    results: list[tuple[Step, BrokerError | None]] = []
    for step in group:
        try:
            execute(client, step, allow_data_loss)
        except BrokerError as error:
            results.append((step, error))
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
