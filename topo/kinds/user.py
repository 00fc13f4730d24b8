"""Users: broker-wide, with tags and a password (sent only as a hash, never shown)."""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import Any

from topo.apipath import api_path
from topo.emit import Commented, Flow
from topo.kinds import Kind
from topo.kinds.base import Declared, ExportContext, Items, KindDef, Phase, Scope
from topo.model import USER_TAGS, UserSpec
from topo.normalize import tags_of
from topo.passwords import DEFAULT_ALGORITHM, Password
from topo.redact import register_secret
from topo.state import Key, Obj


def from_spec(name: str, spec: Any) -> Obj:
    if spec.password is not None:
        pinned = "hashing_algorithm" in spec.model_fields_set
        password = Password("", spec.hashing_algorithm, spec.password, algorithm_pinned=pinned)
    else:
        password = Password(spec.password_hash or "", spec.hashing_algorithm)
    return Obj(Key(Kind.USER, "", name), {"tags": tags_of(spec.tags), "password": password})


def from_broker(item: dict[str, Any]) -> Obj:
    algorithm = item.get("hashing_algorithm") or DEFAULT_ALGORITHM
    password = Password(item.get("password_hash") or "", algorithm)
    return Obj(Key(Kind.USER, "", item["name"]), {"tags": tags_of(item.get("tags")), "password": password})


class UserDef(KindDef):
    kind = Kind.USER
    reads = ("users",)
    scope = Scope.GLOBAL
    section = "users"
    required_tag = "administrator"

    def declarations(self, spec: Any, vhost: str) -> Iterator[Declared]:
        for name, user in spec.users.items():
            register_secret(user.password)  # scrubbed from every message, should one ever echo it
            warnings = []
            for tag in user.tags:
                close = difflib.get_close_matches(tag, USER_TAGS, n=1, cutoff=0.75)
                if tag not in USER_TAGS and close:
                    warnings.append(
                        (
                            ("tags",),
                            f"user {name!r} has tag {tag!r}, which is not a built-in tag (did you mean "
                            f"{close[0]!r}?); RabbitMQ keeps it as a custom tag that grants nothing",
                        )
                    )
            yield Declared(from_spec(name, user), ("users", name), absent=user.absent, warnings=warnings)

    def from_definitions(self, items: Items) -> Iterator[Obj]:
        for _, item in items("users"):
            yield from_broker(item)

    def check(self, obj: Obj) -> None:
        UserSpec.model_validate({"tags": obj.attrs["tags"]})

    def path(self, key: Key, attrs: dict[str, Any], phase: Phase) -> str:
        return api_path("users", key.name)

    def body(self, key: Key, attrs: dict[str, Any]) -> dict[str, Any]:
        # A user PUT without a password or hash clears the password: always send the hash (the current
        # one when unchanged; one computed here, never the plaintext, when it changes).
        password_hash, algorithm = attrs["password"].to_broker()
        return {"password_hash": password_hash, "hashing_algorithm": algorithm, "tags": ",".join(attrs["tags"])}

    def export(self, objects: list[Obj], context: ExportContext) -> dict[str, Any]:
        if not context.manage_access or not objects:
            return {}
        limits: dict[str, dict[str, int]] = {}
        for obj in context.objects.get(Kind.USER_LIMIT, []):
            limits.setdefault(obj.attrs["user"], {})[obj.attrs["name"]] = obj.attrs["value"]
        out: dict[str, Any] = {}
        for obj in sorted(objects, key=lambda o: o.key.name):
            name, password = obj.key.name, obj.attrs["password"]
            spec: dict[str, Any] = {}
            comment = ""
            if password.plaintext is None and password.password_hash == "":
                comment = "No password: this user logs in with a certificate or another auth backend."
            elif context.keep_hashes and password.plaintext is None:
                spec["password_hash"] = password.password_hash
            else:
                spec["password"] = context.new_variable(
                    f"TOPO_USER_{name}_PASSWORD", f"password of user {name!r}", None
                )
            if spec and password.algorithm != DEFAULT_ALGORITHM:
                spec["hashing_algorithm"] = password.algorithm
            if obj.attrs["tags"]:
                spec["tags"] = Flow(obj.attrs["tags"])
            if limits.get(name):
                spec["limits"] = dict(sorted(limits[name].items()))
            out[name] = Commented(spec, comment) if comment else spec
        return {"users": out}


DEFINITION = UserDef()
