"""Plan -> requests. Executes steps in the plan's dependency order and stops at the first failure."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from topo.client import ManagementClient, api_path
from topo.diff import Action, Change
from topo.errors import ApplyFailed, BrokerError
from topo.plan import Plan, Step, steps
from topo.render import display_name
from topo.state import Kind, same_value

Progress = Callable[[int, int, Step], None]

_ENDPOINTS = {
    Kind.VHOST_LIMIT: "vhost-limits",
    Kind.POLICY: "policies",
    Kind.OPERATOR_POLICY: "operator-policies",
    Kind.EXCHANGE: "exchanges",
    Kind.QUEUE: "queues",
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


def execute(client: ManagementClient, step: Step, allow_data_loss: bool) -> None:
    change, what = step.change, describe(step)
    kind, vhost, name = change.kind, change.key.vhost, change.key.name
    if kind is Kind.VHOST:
        path = api_path("vhosts", vhost)
    elif kind is Kind.BINDING:
        path = _binding_path(change)
    else:
        path = api_path(_ENDPOINTS[kind], vhost, name)
    if step.phase is Action.DELETE:
        if kind is Kind.BINDING:
            _delete_binding(client, change, what)
        elif kind is Kind.QUEUE and not allow_data_loss:
            # The plan saw no messages; if some arrived since, let the broker refuse instead of losing them.
            client.request("DELETE", path + "?if-empty=true", what=what, ok=(404,))
        else:
            client.delete(path, what=what)
    elif kind is Kind.BINDING:
        client.request("POST", path, what=what, body=_body(change), idempotent=True)
    elif kind is Kind.VHOST_LIMIT:
        client.put(path, {"value": (change.after or {})["value"]}, what=what)
    else:
        client.put(path, _body(change), what=what)


def apply_plan(
    client: ManagementClient, plan: Plan, *, allow_data_loss: bool = False, progress: Progress | None = None
) -> int:
    """Runs every step; returns how many ran. On failure says what was and was not done."""
    todo = steps(plan.changes)
    for index, step in enumerate(todo):
        try:
            execute(client, step, allow_data_loss)
        except BrokerError as exc:
            remaining = todo[index + 1 :]
            shown = "\n".join(f"    {describe(s)}" for s in remaining[:10])
            more = f"\n    … and {len(remaining) - 10} more" if len(remaining) > 10 else ""
            raise ApplyFailed(
                f"apply stopped: {exc}\n"
                f"  done: {index} of {len(todo)} steps; failed: 1; not attempted: {len(remaining)}"
                + (f"\n  not attempted:\n{shown}{more}" if remaining else "")
                + "\n  Fix the cause and run apply again: it continues from the broker's current state."
            ) from None
        if progress is not None:
            progress(index + 1, len(todo), step)
    return len(todo)
