"""Queues (classic, quorum, stream): immutable, and the only kind that holds messages by itself."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter

from topo.apipath import api_path
from topo.errors import BrokerError, StepRefused
from topo.kinds import Kind
from topo.kinds.base import (
    Broker,
    Declared,
    ExportContext,
    Items,
    KindDef,
    Phase,
    by_name,
    consumers_refusal,
    deep_sorted,
    refuse_if_consumers_arrived,
    refuse_if_messages_arrived,
)
from topo.kinds.exchange import name_problem
from topo.model import QueueSpec
from topo.normalize import is_transient_queue
from topo.state import Key, Obj

if TYPE_CHECKING:
    from topo.client import ManagementClient
    from topo.diff import Change

_QUEUE = TypeAdapter(QueueSpec)


def from_spec(vhost: str, name: str, spec: Any) -> Obj:
    return Obj(
        Key(Kind.QUEUE, vhost, name),
        {
            "type": spec.type,
            "durable": spec.durable,
            "auto_delete": getattr(spec, "auto_delete", False),
            "arguments": dict(spec.arguments),
        },
    )


def from_broker(vhost: str, item: dict[str, Any]) -> Obj | None:
    name = item["name"]
    if is_transient_queue(name, bool(item.get("exclusive", False))):
        return None
    arguments = dict(item.get("arguments") or {})
    queue_type = arguments.pop("x-queue-type", None) or item.get("type") or "classic"
    return Obj(
        Key(Kind.QUEUE, vhost, name),
        {
            "type": queue_type,
            "durable": bool(item.get("durable", True)),
            "auto_delete": bool(item.get("auto_delete", False)),
            "arguments": arguments,
        },
    )


class QueueDef(KindDef):
    kind = Kind.QUEUE
    reads = ("queues",)
    section = "queues"
    immutable = True
    holds_messages = True
    # Exchanges first: a queue may dead-letter to one. Policies first: they apply to queues.
    depends_on = (Kind.VHOST, Kind.POLICY, Kind.OPERATOR_POLICY, Kind.EXCHANGE)
    bulk_section = "queues"

    def declarations(self, spec: Any, vhost: str) -> Iterator[Declared]:
        for name, queue in spec.queues.items():
            path = ("queues", name)
            if queue.external:
                yield Declared(Obj(Key(self.kind, vhost, name), {}), path, external=True)
            else:
                yield Declared(from_spec(vhost, name, queue), path, absent=queue.absent, migrate=queue.migrate)

    def name_problem(self, name: str) -> str | None:
        return name_problem("queue", name)

    def from_definitions(self, items: Items) -> Iterator[Obj]:
        for vhost, item in items("queues"):
            obj = from_broker(vhost, item)
            if obj is not None:
                yield obj

    def check(self, obj: Obj) -> None:
        fields = dict(obj.attrs)
        if fields["type"] != "classic":
            fields.pop("auto_delete")  # quorum queues and streams have no such option
        _QUEUE.validate_python(fields)

    def broker_problems(self, obj: Obj, broker: Broker) -> list[tuple[str, str]]:
        # Arguments and values the broker removed or denies (topo.compat: x-queue-version: 1 on 4.x, ...),
        # and arguments its version gives other queue types only.
        arguments = obj.attrs.get("arguments") or {}
        return [
            (f"queues[{obj.key.name!r}].arguments.{name}", reason)
            for name, reason in broker.queue_argument_refusals(obj.attrs["type"], arguments)
        ]

    def path(self, key: Key, attrs: dict[str, Any], phase: Phase) -> str:
        return api_path("queues", key.vhost, key.name)

    def body(self, key: Key, attrs: dict[str, Any]) -> dict[str, Any]:
        # Always name the type: an omitted x-queue-type means the vhost's default, not necessarily classic.
        arguments = {"x-queue-type": attrs["type"], **attrs["arguments"]}
        return {"durable": attrs["durable"], "auto_delete": attrs["auto_delete"], "arguments": arguments}

    def write(
        self,
        client: ManagementClient,
        change: Change,
        phase: Phase,
        what: str,
        allow_data_loss: bool,
        allow_disruption: bool = False,
    ) -> None:
        if phase is Phase.DELETE and (change.before or {}).get("type") == "classic":
            _delete_classic(
                client,
                change,
                self.path(change.key, change.before or {}, phase),
                what,
                allow_data_loss,
                allow_disruption,
            )
            return
        if phase is Phase.DELETE and not allow_data_loss:
            refuse_if_messages_arrived(client, change, what)
        if phase is Phase.DELETE and not allow_disruption:
            refuse_if_consumers_arrived(client, change, what)
        super().write(client, change, phase, what, allow_data_loss, allow_disruption)

    def bulk_definition(self, key: Key, attrs: dict[str, Any]) -> dict[str, Any]:
        return {"name": key.name, **self.body(key, attrs)}

    def export(self, objects: list[Obj], context: ExportContext) -> dict[str, Any]:
        default_type = context.vhost_attrs.get("default_queue_type")
        return {"queues": by_name({o.key.name: _queue(o, default_type) for o in objects})} if objects else {}


def _queue(obj: Obj, default_type: str | None) -> dict[str, Any]:
    attrs = obj.attrs
    spec: dict[str, Any] = {}
    # Without `type`, a queue takes the vhost's default_queue_type: only then must classic be spelt out.
    if attrs["type"] != (default_type or "classic"):
        spec["type"] = attrs["type"]
    if attrs["type"] == "classic":
        for flag, default in (("durable", True), ("auto_delete", False)):
            if attrs[flag] != default:
                spec[flag] = attrs[flag]
    if attrs["arguments"]:
        spec["arguments"] = deep_sorted(attrs["arguments"])
    return spec


DEFINITION = QueueDef()


def _delete_classic(
    client: ManagementClient, change: Change, path: str, what: str, allow_data_loss: bool, allow_disruption: bool
) -> None:
    """The plan saw no messages (no consumers): if some arrived since, the broker itself refuses.

    Only classic queues honour if-empty and if-unused: quorum queues reject them, streams ignore them.
    """
    from topo.read import consumer_counts, message_counts

    conditions = [
        name for name, allowed in (("if-empty", allow_data_loss), ("if-unused", allow_disruption)) if not allowed
    ]
    if not conditions:
        client.delete(path, what=what)
        return
    try:
        client.request("DELETE", path + "?" + "&".join(f"{c}=true" for c in conditions), what=what, ok=(404,))
    except BrokerError as exc:
        if exc.status == 400 and "in use" in exc.reason:
            count = sum(c or 0 for c in consumer_counts(client, change.key.vhost, {change.key.name}).values())
            raise StepRefused(what, consumers_refusal(count)) from None
        if exc.status == 400 and "not empty" in exc.reason:
            held = sum(c or 0 for c in message_counts(client, change.key.vhost, {change.key.name}).values())
            reason = f"it now holds messages ({held} counted) that the plan did not; --allow-data-loss"
            raise StepRefused(what, reason) from None
        raise
