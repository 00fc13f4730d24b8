"""Per-vhost limits (max-connections, max-queues): one object per limit the files set."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from topo.apipath import api_path
from topo.kinds import Kind
from topo.kinds.base import Declared, ExportContext, Items, KindDef, Phase
from topo.model import LimitsSpec
from topo.normalize import set_limits
from topo.state import Key, Obj


def declared_limits(limits: Any) -> list[tuple[str, int]]:
    """(name as in the file, value) of each limit set in a vhost's or user's limits section.

    The broker stores a negative limit as no limit at all, so callers declare those absent."""
    if limits is None:
        return []
    return [
        (field.alias or name, getattr(limits, name))
        for name, field in type(limits).model_fields.items()
        if getattr(limits, name) is not None
    ]


def limit_obj(vhost: str, name: str, value: int) -> Obj:
    return Obj(Key(Kind.VHOST_LIMIT, vhost, name), {"value": value})


class VhostLimitDef(KindDef):
    kind = Kind.VHOST_LIMIT
    reads = ("parameters",)
    section = "limits"
    depends_on = (Kind.VHOST,)
    required_tag = "administrator"

    def declarations(self, spec: Any, vhost: str) -> Iterator[Declared]:
        for alias, value in declared_limits(spec.limits):
            yield Declared(limit_obj(vhost, alias, value), ("limits", alias), absent=value < 0)

    def from_definitions(self, items: Items) -> Iterator[Obj]:
        for vhost, item in items("parameters"):
            # After its last limit is removed the broker keeps the parameter with the value [].
            if item.get("component") == "vhost-limits" and isinstance(item.get("value"), dict):
                for name, limit in set_limits(item["value"]):
                    yield limit_obj(vhost, name, limit)

    def check(self, obj: Obj) -> None:
        LimitsSpec.model_validate({obj.key.name: obj.attrs["value"]})

    def path(self, key: Key, attrs: dict[str, Any], phase: Phase) -> str:
        return api_path("vhost-limits", key.vhost, key.name)

    def body(self, key: Key, attrs: dict[str, Any]) -> dict[str, Any]:
        return {"value": attrs["value"]}

    def serial_group(self, key: Key, attrs: dict[str, Any]) -> object | None:
        # RabbitMQ keeps all limits of a vhost in one record that each PUT reads, changes and writes
        # back: two concurrent limit PUTs on one vhost lose one of the two (seen on 3.10).
        return ("limits", key.vhost)

    def export(self, objects: list[Obj], context: ExportContext) -> dict[str, Any]:
        return {"limits": {o.key.name: o.attrs["value"] for o in objects}} if objects else {}


DEFINITION = VhostLimitDef()
