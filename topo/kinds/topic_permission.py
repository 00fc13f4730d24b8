"""Topic permissions: what a user may publish and consume through a topic exchange, by routing key."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from topo.apipath import api_path
from topo.emit import Flow
from topo.kinds import Kind
from topo.kinds.base import Declared, ExportContext, Items, KindDef, Phase
from topo.model import TopicPermissionSpec
from topo.state import Key, Obj, canonical


def topic_permission_obj(vhost: str, user: str, exchange: str, write: str, read: str) -> Obj:
    # Identified by user and exchange together, like a binding by its ends.
    key = Key(Kind.TOPIC_PERMISSION, vhost, canonical([user, exchange]))
    return Obj(key, {"user": user, "exchange": exchange, "write": write, "read": read})


class TopicPermissionDef(KindDef):
    kind = Kind.TOPIC_PERMISSION
    reads = ("topic_permissions",)
    section = "topic_permissions"
    access = True
    # It names an exchange: RabbitMQ 4.3 refuses one for a missing exchange and deletes it with the
    # exchange, so it is written after exchanges and deleted before them.
    depends_on = (Kind.VHOST, Kind.USER, Kind.EXCHANGE)
    required_tag = "administrator"

    def display(self, key: Key, attrs: dict[str, Any] | None) -> str:
        attrs = attrs or {}
        user, exchange = (json.dumps(attrs[k], ensure_ascii=False) for k in ("user", "exchange"))
        return f"{user} on exchange {exchange}"

    def manages(self, spec: Any) -> bool:
        return spec.topic_permissions is not None

    def declarations(self, spec: Any, vhost: str) -> Iterator[Declared]:
        for user, exchanges in (spec.topic_permissions or {}).items():
            for exchange, topic in exchanges.items():
                obj = topic_permission_obj(vhost, user, exchange, topic.write or "", topic.read or "")
                yield Declared(obj, ("topic_permissions", user, exchange), absent=topic.absent)

    def from_definitions(self, items: Items) -> Iterator[Obj]:
        for vhost, item in items("topic_permissions"):
            yield topic_permission_obj(vhost, item["user"], item["exchange"], item["write"], item["read"])

    def check(self, obj: Obj) -> None:
        TopicPermissionSpec.model_validate({"write": obj.attrs["write"], "read": obj.attrs["read"]})

    def path(self, key: Key, attrs: dict[str, Any], phase: Phase) -> str:
        if phase is Phase.DELETE:
            # The per-exchange path: the plain one would remove all of the user's entries in the vhost.
            return api_path("topic-permissions", key.vhost, attrs["user"], attrs["exchange"])
        return api_path("topic-permissions", key.vhost, attrs["user"])

    def body(self, key: Key, attrs: dict[str, Any]) -> dict[str, Any]:
        return {"exchange": attrs["exchange"], "write": attrs["write"], "read": attrs["read"]}

    def export(self, objects: list[Obj], context: ExportContext) -> dict[str, Any]:
        if not context.manage_access:
            return {}
        topic: dict[str, dict[str, Any]] = {}
        for obj in sorted(objects, key=lambda o: (o.attrs["user"], o.attrs["exchange"])):
            topic.setdefault(obj.attrs["user"], {})[obj.attrs["exchange"]] = Flow(
                {"write": obj.attrs["write"], "read": obj.attrs["read"]}
            )
        return {"topic_permissions": topic} if topic else {}


DEFINITION = TopicPermissionDef()
