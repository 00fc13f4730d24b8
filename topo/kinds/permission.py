"""Permissions: what a user may configure, write and read in a vhost."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from topo.apipath import api_path
from topo.emit import Flow
from topo.kinds import Kind
from topo.kinds.base import Declared, ExportContext, Items, KindDef, Phase
from topo.model import PermissionSpec
from topo.state import Key, Obj


def permission_obj(vhost: str, user: str, configure: str, write: str, read: str) -> Obj:
    return Obj(Key(Kind.PERMISSION, vhost, user), {"configure": configure, "write": write, "read": read})


class PermissionDef(KindDef):
    kind = Kind.PERMISSION
    reads = ("permissions",)
    section = "permissions"
    access = True
    depends_on = (Kind.VHOST, Kind.USER)
    required_tag = "administrator"

    def manages(self, spec: Any) -> bool:
        return spec.permissions is not None

    def declarations(self, spec: Any, vhost: str) -> Iterator[Declared]:
        for user, permission in (spec.permissions or {}).items():
            obj = permission_obj(vhost, user, permission.configure or "", permission.write or "", permission.read or "")
            yield Declared(obj, ("permissions", user), absent=permission.absent)

    def from_definitions(self, items: Items) -> Iterator[Obj]:
        for vhost, item in items("permissions"):
            yield permission_obj(vhost, item["user"], item["configure"], item["write"], item["read"])

    def check(self, obj: Obj) -> None:
        PermissionSpec.model_validate(obj.attrs)

    def path(self, key: Key, attrs: dict[str, Any], phase: Phase) -> str:
        return api_path("permissions", key.vhost, key.name)

    def export(self, objects: list[Obj], context: ExportContext) -> dict[str, Any]:
        if not context.manage_access or not objects:
            return {}
        # The section makes topo manage this vhost's permissions: whoever else gets access shows as drift.
        return {
            "permissions": {
                o.key.name: Flow({k: o.attrs[k] for k in ("configure", "write", "read")})
                for o in sorted(objects, key=lambda o: o.key.name)
            }
        }


DEFINITION = PermissionDef()
