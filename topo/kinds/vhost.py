"""Virtual hosts: the container of every vhost-scoped kind, created first and deleted last."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from topo.apipath import api_path
from topo.emit import Flow
from topo.kinds import Kind
from topo.kinds.base import (
    Broker,
    ExportContext,
    KindDef,
    Phase,
    refuse_if_consumers_arrived,
    refuse_if_messages_arrived,
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
    for field in ("description", "tracing", "default_queue_type", "protected_from_deletion"):
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
    attrs = {
        "description": item.get("description") or metadata.get("description") or "",
        "tags": tags_of(item.get("tags", metadata.get("tags"))),
        "tracing": bool(item.get("tracing", False)),
        "default_queue_type": default_type,
    }
    if "protected_from_deletion" in item:  # 4.0.6+ only (and not settable through the vhost PUT; see write)
        attrs["protected_from_deletion"] = bool(item["protected_from_deletion"])
    return Obj(Key(Kind.VHOST, item["name"], item["name"]), attrs)


def written_default_type(attrs: dict[str, Any], broker: Broker) -> bool:
    """Whether the vhost's default_queue_type is something a person wrote: 4.x stores classic on every
    vhost that never had one set, which means the same as having none."""
    value = attrs.get("default_queue_type")
    return bool(value) and not (value == "classic" and broker.always_default_queue_type)


class VhostDef(KindDef):
    kind = Kind.VHOST
    holds_messages = True
    required_tag = "administrator"

    def check(self, obj: Obj) -> None:
        VhostSpec.model_validate({k: v for k, v in obj.attrs.items() if k != "default_queue_type" or v is not None})

    def broker_problems(self, obj: Obj, broker: Broker) -> list[tuple[str, str]]:
        if obj.attrs.get("protected_from_deletion") and not broker.deletion_protection:
            reason = f"deletion protection needs RabbitMQ 4.0.6+ (the broker runs {broker.version}); leave it out"
            return [(f"vhosts[{obj.key.name!r}].protected_from_deletion", reason)]
        return []

    def adapt(self, obj: Obj, broker: Broker) -> tuple[Obj, str | None]:
        if not broker.stores_default_queue_type and obj.attrs.get("default_queue_type") is not None:
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
        if phase is Phase.WRITE:
            _set_deletion_protection(client, change, what)

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
            if attrs.get("protected_from_deletion"):
                spec["protected_from_deletion"] = True
            if written_default_type(attrs, context.capabilities):
                spec["default_queue_type"] = attrs["default_queue_type"]
        return spec


def _set_deletion_protection(client: ManagementClient, change: Change, what: str) -> None:
    """Deletion protection is not part of the vhost PUT: it has an endpoint of its own (4.0.6+)."""
    want = (change.after or {}).get("protected_from_deletion")
    if want is None or want == bool((change.before or {}).get("protected_from_deletion", False)):
        return
    path = api_path("vhosts", change.key.vhost, "deletion", "protection")
    client.request("POST" if want else "DELETE", path, what=what, idempotent=True)


DEFINITION = VhostDef()
