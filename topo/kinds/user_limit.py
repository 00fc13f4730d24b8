"""Per-user limits (max-connections, max-channels); written inside their user in the files."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from topo.apipath import api_path
from topo.kinds import Kind
from topo.kinds.base import Declared, Items, KindDef, Phase, Scope
from topo.kinds.vhost_limit import declared_limits
from topo.model import UserLimitsSpec
from topo.normalize import set_limits
from topo.state import Key, Obj, canonical


def user_limit_obj(user: str, name: str, value: int) -> Obj:
    return Obj(Key(Kind.USER_LIMIT, "", canonical([user, name])), {"user": user, "name": name, "value": value})


class UserLimitDef(KindDef):
    kind = Kind.USER_LIMIT
    reads = ("users",)
    scope = Scope.GLOBAL
    depends_on = (Kind.USER,)
    required_tag = "administrator"

    def display(self, key: Key, attrs: dict[str, Any] | None) -> str:
        attrs = attrs or {}
        return f"{json.dumps(attrs['user'], ensure_ascii=False)} {attrs['name']}"

    def declarations(self, spec: Any, vhost: str) -> Iterator[Declared]:
        for name, user in spec.users.items():
            for alias, value in declared_limits(user.limits):
                yield Declared(user_limit_obj(name, alias, value), ("users", name, "limits", alias), absent=value < 0)

    def from_definitions(self, items: Items) -> Iterator[Obj]:
        for _, item in items("users"):
            for name, value in set_limits(item.get("limits")):
                yield user_limit_obj(item["name"], name, value)

    def check(self, obj: Obj) -> None:
        UserLimitsSpec.model_validate({obj.attrs["name"]: obj.attrs["value"]})

    def path(self, key: Key, attrs: dict[str, Any], phase: Phase) -> str:
        return api_path("user-limits", attrs["user"], attrs["name"])

    def body(self, key: Key, attrs: dict[str, Any]) -> dict[str, Any]:
        return {"value": attrs["value"]}

    def serial_group(self, key: Key, attrs: dict[str, Any]) -> object | None:
        # All limits of a user are one record on the broker (see vhost limits).
        return ("user limits", attrs["user"])


DEFINITION = UserLimitDef()
