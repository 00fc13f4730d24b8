"""Global runtime parameters: broker-wide settings such as cluster_name or mqtt_port_to_vhost_mapping.

Only those the files declare are managed (like users, they are never pruned). The broker's own
internal_cluster_id is never read, declared, exported or deleted: it identifies this cluster. An export
leaves out a cluster_name that is the broker's default (its node name, `rabbit@host`): it names one
machine, and copied to another cluster it would give that cluster a wrong name; a name someone chose
is exported like any other setting.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from topo.apipath import api_path
from topo.kinds import Kind
from topo.kinds.base import Declared, ExportContext, Items, KindDef, Phase, Scope, by_name, deep_sorted
from topo.model import GlobalParameterSpec
from topo.state import Key, Obj

# The broker's identity: RabbitMQ creates it and nothing else may change it.
BROKER_OWNED = ("internal_cluster_id",)


def is_default_cluster_name(name: str, value: Any) -> bool:
    """RabbitMQ names a cluster after its first node (rabbit@host) until someone sets a name."""
    return name == "cluster_name" and isinstance(value, str) and "@" in value


def is_broker_default(name: str, value: Any) -> bool:
    """A value the broker sets by itself: the default cluster_name, and 4.x's empty cluster_tags."""
    return is_default_cluster_name(name, value) or (name == "cluster_tags" and value == [])


class GlobalParameterDef(KindDef):
    kind = Kind.GLOBAL_PARAMETER
    scope = Scope.GLOBAL
    section = "global_parameters"
    reads = ("global_parameters",)
    listing = "/api/global-parameters"
    # A mapping to vhosts (mqtt_port_to_vhost_mapping) is set after they exist, removed before them.
    depends_on = (Kind.VHOST,)
    required_tag = "policymaker"

    def display(self, key: Key, attrs: dict[str, Any] | None) -> str:
        return json.dumps(key.name, ensure_ascii=False)

    def declarations(self, spec: Any, vhost: str) -> Iterator[Declared]:
        for name, parameter in spec.global_parameters.items():
            obj = Obj(Key(self.kind, "", name), {"value": parameter.value})
            yield Declared(obj, ("global_parameters", name), absent=parameter.absent)

    def name_problem(self, name: str) -> str | None:
        if name in BROKER_OWNED:
            return f"{name} is the broker's own identity: topo never manages it"
        if name == "":
            return "a global parameter name must not be empty"
        return None

    def from_definitions(self, items: Items) -> Iterator[Obj]:
        for _, item in items("global_parameters"):
            if item.get("name") not in BROKER_OWNED and "value" in item:
                yield Obj(Key(self.kind, "", item["name"]), {"value": item["value"]})

    def check(self, obj: Obj) -> None:
        GlobalParameterSpec.model_validate({"value": obj.attrs["value"]})

    def path(self, key: Key, attrs: dict[str, Any], phase: Phase) -> str:
        return api_path("global-parameters", key.name)

    def body(self, key: Key, attrs: dict[str, Any]) -> dict[str, Any]:
        return {"name": key.name, "value": attrs["value"]}

    def exported(self, obj: Obj) -> bool:
        return not is_broker_default(obj.key.name, obj.attrs["value"])

    def export(self, objects: list[Obj], context: ExportContext) -> dict[str, Any]:
        out = {}
        for obj in objects:
            name, value = obj.key.name, obj.attrs["value"]
            if name == "cluster_tags" and not self.exported(obj):
                continue  # RabbitMQ 4.x sets it (empty) on every broker: nothing anyone wrote
            if not self.exported(obj):
                context.notes.append(
                    f"left out cluster_name {value!r}: the broker's default (its node name); declare "
                    "global_parameters: {cluster_name: {value: ...}} to manage it"
                )
                continue
            out[name] = {"value": deep_sorted(value)}
        return {"global_parameters": by_name(out)} if out else {}


DEFINITION = GlobalParameterDef()
