"""Virtual hosts: the container of every vhost-scoped kind, created first and deleted last."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from topo.client import api_path
from topo.emit import Flow
from topo.kinds import Kind
from topo.kinds.base import (
    Broker,
    ExportContext,
    KindDef,
    Phase,
    refuse_if_consumers_arrived,
    refuse_if_messages_arrived,
    version_of,
)
from topo.model import VhostSpec
from topo.normalize import tags_of
from topo.state import Key, Obj

if TYPE_CHECKING:
    from topo.client import ManagementClient
    from topo.diff import Change

# What a new vhost gets for the metadata the files leave out.
DEFAULTS: dict[str, Any] = {"description": "", "tags": [], "tracing": False, "default_queue_type": None}


def from_spec(name: str, spec: VhostSpec) -> Obj:
    # Only the metadata the file sets is managed; the rest is filled in from the broker when updating.
    attrs: dict[str, Any] = {}
    for field in ("description", "tracing", "default_queue_type"):
        if field in spec.model_fields_set:
            attrs[field] = getattr(spec, field)
    if "tags" in spec.model_fields_set:
        attrs["tags"] = tags_of(spec.tags)
    return Obj(Key(Kind.VHOST, name, name), attrs)


def from_broker(item: dict[str, Any]) -> Obj:
    metadata = item.get("metadata") or {}
    default_type = item.get("default_queue_type") or metadata.get("default_queue_type")
    if default_type == "undefined":
        default_type = None
    return Obj(
        Key(Kind.VHOST, item["name"], item["name"]),
        {
            "description": item.get("description") or metadata.get("description") or "",
            "tags": tags_of(item.get("tags", metadata.get("tags"))),
            "tracing": bool(item.get("tracing", False)),
            "default_queue_type": default_type,
        },
    )


class VhostDef(KindDef):
    kind = Kind.VHOST
    holds_messages = True
    required_tag = "administrator"

    def check(self, obj: Obj) -> None:
        VhostSpec.model_validate({k: v for k, v in obj.attrs.items() if k != "default_queue_type" or v is not None})

    def adapt(self, obj: Obj, broker: Broker) -> tuple[Obj, str | None]:
        version = version_of(broker.version)
        if version and version < (3, 11) and obj.attrs.get("default_queue_type") is not None:
            attrs = {k: v for k, v in obj.attrs.items() if k != "default_queue_type"}
            warning = (
                f"vhost {obj.key.name!r}: RabbitMQ {broker.version} does not store default_queue_type (3.11+); "
                "topo still uses it as the type of queues declared without one"
            )
            return Obj(obj.key, attrs), warning
        return obj, None

    def path(self, key: Key, attrs: dict[str, Any], phase: Phase) -> str:
        return api_path("vhosts", key.vhost)

    def body(self, key: Key, attrs: dict[str, Any]) -> dict[str, Any]:
        # A vhost PUT replaces description and tags: always send every field.
        body: dict[str, Any] = {
            "description": attrs.get("description", ""),
            "tags": ",".join(attrs.get("tags", [])),
            "tracing": attrs.get("tracing", False),
        }
        if attrs.get("default_queue_type"):
            body["default_queue_type"] = attrs["default_queue_type"]
        return body

    def write(
        self,
        client: ManagementClient,
        change: Change,
        phase: Phase,
        what: str,
        allow_data_loss: bool,
        allow_disruption: bool = False,
    ) -> None:
        if phase is Phase.DELETE and not allow_data_loss:
            refuse_if_messages_arrived(client, change, what)
        if phase is Phase.DELETE and not allow_disruption:
            refuse_if_consumers_arrived(client, change, what)
        super().write(client, change, phase, what, allow_data_loss, allow_disruption)

    def export(self, objects: list[Obj], context: ExportContext) -> dict[str, Any]:
        spec: dict[str, Any] = {}
        for obj in objects:
            attrs = obj.attrs
            if attrs.get("description"):
                spec["description"] = attrs["description"]
            if attrs.get("tags"):
                spec["tags"] = Flow(attrs["tags"])
            if attrs.get("tracing"):
                spec["tracing"] = True
            if attrs.get("default_queue_type"):
                spec["default_queue_type"] = attrs["default_queue_type"]
        return spec


DEFINITION = VhostDef()
