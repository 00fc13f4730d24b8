"""A broker that round-trip tests may empty at will, and a comparison of broker states that owes nothing
to topo's own code (so a bug topo makes on both sides cannot cancel out).

The round trip: state S on the broker -> `topo export` -> empty the broker -> `topo apply` -> state S'.
S' must equal S object by object for everything topo manages.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import requests

from rabbitmq_node import RabbitNode

ADMIN = "topo-roundtrip-admin"


@dataclass
class EmptyBroker:
    """A node of its own, reached as an administrator that the round trip never touches."""

    node: RabbitNode
    password: str = field(default_factory=lambda: secrets.token_urlsafe(16), repr=False)

    @property
    def url(self) -> str:
        return self.node.url

    @property
    def auth(self) -> tuple[str, str]:
        return (ADMIN, self.password)

    @property
    def major(self) -> int:
        """The broker's major version (3 or 4): some files are imported by one and refused by the other."""
        return int(self.request("GET", "overview")["rabbitmq_version"].split(".")[0])

    def env(self) -> dict[str, str | None]:
        return {"TOPO_URL": self.url, "TOPO_USER": ADMIN, "TOPO_PASSWORD": self.password, "NO_COLOR": "1"}

    def _url(self, *segments: str) -> str:
        return self.url + "/api/" + "/".join(quote(s, safe="") for s in segments)

    def request(self, method: str, *segments: str, auth: tuple[str, str] | None = None, **kwargs: Any) -> Any:
        response = requests.request(method, self._url(*segments), auth=auth or self.auth, timeout=60, **kwargs)
        if response.status_code >= 400:
            raise AssertionError(f"{method} {'/'.join(segments)}: HTTP {response.status_code}: {response.text[:500]}")
        return response.json() if response.content else None

    def create_admin(self) -> None:
        body = {"password": self.password, "tags": "administrator"}
        self.request("PUT", "users", ADMIN, json=body, auth=(self.node.user, self.node.password))

    def reset(self) -> None:
        """Back to an empty broker: only vhost "/" (no metadata) and the admin, nothing else."""
        # Shovels first: a shovel still running while its vhost is deleted and re-created reconnects and
        # declares its source queue itself (as a classic queue), racing the next apply.
        for parameter in self.request("GET", "parameters"):
            self.request("DELETE", "parameters", parameter["component"], parameter["vhost"], parameter["name"])
        for vhost in self.request("GET", "vhosts"):
            self.request("DELETE", "vhosts", vhost["name"])
        for user in self.request("GET", "users"):
            if user["name"] != ADMIN:
                self.request("DELETE", "users", user["name"])
        self.request("PUT", "vhosts", "/", json={})

    def import_definitions(self, text: str) -> requests.Response:
        """RabbitMQ's own import of a definitions file (the raw bytes, as `curl -d @file` would send)."""
        return requests.post(
            self._url("definitions"),
            data=text.encode("utf-8"),
            headers={"content-type": "application/json"},
            auth=self.auth,
            timeout=120,
        )

    def state(self) -> dict[str, Any]:
        return comparable(self.request("GET", "definitions"), self.request("GET", "vhosts"))

    def password_is(self, user: str, password: str) -> bool:
        """Whether the user's stored hash is of `password` (users without a management tag cannot log in
        to the HTTP API, so the hash is checked: base64(4-byte salt + H(salt + UTF-8 password)))."""
        stored = self.request("GET", "users", user)
        digest = {
            "rabbit_password_hashing_sha256": hashlib.sha256,
            "rabbit_password_hashing_sha512": hashlib.sha512,
            "rabbit_password_hashing_md5": hashlib.md5,
        }[stored["hashing_algorithm"]]
        raw = base64.b64decode(stored["password_hash"])
        return raw[4:] == digest(raw[:4] + password.encode()).digest()

    def logs_in(self, user: str, password: str) -> bool:
        # UTF-8, as RabbitMQ expects (requests would send text credentials as latin-1).
        response = requests.get(self._url("whoami"), auth=(user.encode(), password.encode()), timeout=30)
        return response.status_code == 200


def _key(*parts: Any) -> str:
    return json.dumps(parts, ensure_ascii=False)


def _tags(value: Any) -> list[str]:
    if isinstance(value, str):
        value = value.split(",")
    return sorted(tag for tag in value or [] if tag)


def comparable(definitions: dict[str, Any], vhosts: list[dict[str, Any]]) -> dict[str, Any]:
    """Everything topo manages, keyed per object, in one canonical form.

    Left out on purpose: the round trip's own administrator and its permissions (the broker grants a
    vhost's creator access), built-in exchanges, and global parameters (the corpus holds only the
    default cluster_name and the broker's internal_cluster_id, which an export leaves out).
    """
    state: dict[str, Any] = {}
    for vhost in vhosts:
        metadata = vhost.get("metadata") or {}
        state[_key("vhost", vhost["name"])] = {
            "description": vhost.get("description") or metadata.get("description") or "",
            "tags": _tags(vhost.get("tags", metadata.get("tags"))),
            "tracing": bool(vhost.get("tracing")),
        }
    for user in definitions.get("users", []):
        if user["name"] == ADMIN:
            continue
        state[_key("user", user["name"])] = {
            "password_hash": user.get("password_hash", ""),
            "hashing_algorithm": user.get("hashing_algorithm"),
            "tags": _tags(user.get("tags")),
            "limits": user.get("limits") or {},
        }
    for item in definitions.get("permissions", []):
        if item["user"] != ADMIN:
            state[_key("permission", item["vhost"], item["user"])] = {
                k: item[k] for k in ("configure", "write", "read")
            }
    for item in definitions.get("topic_permissions", []):
        if item["user"] != ADMIN:
            key = _key("topic_permission", item["vhost"], item["user"], item["exchange"])
            state[key] = {k: item[k] for k in ("write", "read")}
    for item in definitions.get("exchanges", []):
        if item["name"] and not item["name"].startswith("amq."):
            state[_key("exchange", item["vhost"], item["name"])] = {
                k: item.get(k) for k in ("type", "durable", "auto_delete", "internal", "arguments")
            }
    for item in definitions.get("queues", []):
        arguments = dict(item.get("arguments") or {})
        # The broker treats a queue declared without x-queue-type as classic.
        arguments.setdefault("x-queue-type", "classic")
        state[_key("queue", item["vhost"], item["name"])] = {
            "durable": item["durable"],
            "auto_delete": item["auto_delete"],
            "arguments": arguments,
        }
    bindings: dict[str, int] = {}
    for item in definitions.get("bindings", []):
        key = _key(
            "binding",
            item["vhost"],
            item["source"],
            item["destination_type"],
            item["destination"],
            item["routing_key"],
            item.get("arguments") or {},
        )
        bindings[key] = bindings.get(key, 0) + 1
    state.update(bindings)
    for item in definitions.get("policies", []):
        state[_key("policy", item["vhost"], item["name"])] = {
            k: item.get(k) for k in ("pattern", "apply-to", "priority", "definition")
        }
    for item in definitions.get("parameters", []):
        value = item["value"]
        if item["component"] == "vhost-limits" and not value:
            continue  # the record the broker keeps after its last limit is removed
        state[_key("parameter", item["vhost"], item["component"], item["name"])] = value
    return state


def differences(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Readable differences between two states (empty when equal)."""
    out = []
    for key in sorted(set(before) | set(after)):
        if key not in after:
            out.append(f"missing after: {key} = {before[key]}")
        elif key not in before:
            out.append(f"extra after: {key} = {after[key]}")
        elif json.dumps(before[key], sort_keys=True) != json.dumps(after[key], sort_keys=True):
            out.append(f"differs: {key}: {before[key]} -> {after[key]}")
    return out
