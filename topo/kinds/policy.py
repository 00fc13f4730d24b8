"""Policies: definitions applied to queues and exchanges whose names match a pattern."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from topo.apipath import api_path
from topo.kinds import Kind
from topo.kinds.base import (
    Broker,
    Declared,
    ExportContext,
    Items,
    KindDef,
    Phase,
    by_name,
    deep_sorted,
)
from topo.model import PolicySpec
from topo.state import Key, Obj


def from_spec(kind: Kind, vhost: str, name: str, spec: PolicySpec) -> Obj:
    return Obj(
        Key(kind, vhost, name),
        {
            "pattern": spec.pattern,
            "apply-to": spec.apply_to,
            "priority": spec.priority,
            "definition": dict(spec.definition),
        },
    )


def from_broker(kind: Kind, vhost: str, item: dict[str, Any]) -> Obj:
    return Obj(
        Key(kind, vhost, item["name"]),
        {
            "pattern": item.get("pattern", ""),
            "apply-to": item.get("apply-to", "all"),
            "priority": item.get("priority", 0),
            "definition": dict(item.get("definition") or {}),
        },
    )


def policy_spec(obj: Obj) -> dict[str, Any]:
    attrs = obj.attrs
    spec: dict[str, Any] = {"pattern": attrs["pattern"]}
    if attrs["apply-to"] != "all":
        spec["apply-to"] = attrs["apply-to"]
    if attrs["priority"] != 0:
        spec["priority"] = attrs["priority"]
    spec["definition"] = deep_sorted(attrs["definition"])
    return spec


class PolicyDef(KindDef):
    kind = Kind.POLICY
    reads = ("policies",)
    section = "policies"
    depends_on = (Kind.VHOST,)
    required_tag = "policymaker"
    endpoint = "policies"

    def declarations(self, spec: Any, vhost: str) -> Iterator[Declared]:
        for name, policy in getattr(spec, self.section).items():
            yield Declared(from_spec(self.kind, vhost, name, policy), (self.section, name), absent=policy.absent)

    def from_definitions(self, items: Items) -> Iterator[Obj]:
        for vhost, item in items("policies"):
            yield from_broker(self.kind, vhost, item)

    def check(self, obj: Obj) -> None:
        PolicySpec.model_validate(obj.attrs)

    def broker_problems(self, obj: Obj, broker: Broker) -> list[tuple[str, str]]:
        problems = []
        # apply-to values newer than the broker (classic_queues, quorum_queues, streams: 3.12+) are refused.
        if not broker.policy_apply_to_queue_types and obj.attrs["apply-to"] not in ("all", "queues", "exchanges"):
            reason = (
                f"apply-to {obj.attrs['apply-to']!r} needs RabbitMQ 3.12+ (the broker runs {broker.version}); "
                "use all, queues or exchanges"
            )
            problems.append((f"{self.section}[{obj.key.name!r}].apply-to", reason))
        # Keys the broker removed, denies or does not know, and values it refuses (topo.policies).
        operator = self.kind.value == "operator_policy"
        for name, reason in broker.policy_problems(operator, obj.attrs.get("definition") or {}):
            problems.append((f"{self.section}[{obj.key.name!r}].definition.{name}", reason))
        return problems

    def path(self, key: Key, attrs: dict[str, Any], phase: Phase) -> str:
        return api_path(self.endpoint, key.vhost, key.name)

    def export(self, objects: list[Obj], context: ExportContext) -> dict[str, Any]:
        return {self.section: by_name({o.key.name: policy_spec(o) for o in objects})} if objects else {}


DEFINITION = PolicyDef()
