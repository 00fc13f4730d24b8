"""Operator policies: limits an administrator imposes, which win over users' policies."""

from __future__ import annotations

from collections.abc import Iterator

from topo.kinds import Kind
from topo.kinds.base import Items
from topo.kinds.policy import PolicyDef, from_broker
from topo.state import Obj


class OperatorPolicyDef(PolicyDef):
    kind = Kind.OPERATOR_POLICY
    reads = ("parameters",)
    section = "operator_policies"
    required_tag = "administrator"
    endpoint = "operator-policies"

    def from_definitions(self, items: Items) -> Iterator[Obj]:
        # Definitions carry operator policies as parameters of the operator_policy component.
        for vhost, item in items("parameters"):
            value = item.get("value")
            if item.get("component") == "operator_policy" and isinstance(value, dict):
                yield from_broker(self.kind, vhost, {"name": item["name"], **value})


DEFINITION = OperatorPolicyDef()
