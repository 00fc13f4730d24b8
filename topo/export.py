"""Actual state -> a topology document (for `topo export`): what a person would write for it.

The objects come from the live broker (read.read_for_export) or from a definitions file
(definitions.py), both through normalize.py, so an export describes exactly what `topo plan` compares.
Defaults are left out, everything is sorted, and secrets never reach the document: passwords become
${VARIABLE} placeholders (or stay hashes with keep_hashes), and so do the passwords in shovel and
federation URIs.
"""

from __future__ import annotations

import re
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from topo.capabilities import Capabilities
from topo.emit import Commented, Flow, Placeholder, dump
from topo.errors import TopoError, ValidationFailed
from topo.load import load_topology
from topo.normalize import PARAMETER_SECTIONS
from topo.passwords import DEFAULT_ALGORITHM
from topo.redact import split_uri
from topo.state import ACCESS_KINDS, Actual, Kind, Obj, canonical, same_value


@dataclass(slots=True)
class Variables:
    """Environment variables the document needs, with what each one is for (listed on stderr)."""

    names: dict[str, str] = field(default_factory=dict)
    # The values, where known (URI passwords): only to check the export, never written or printed.
    known: dict[str, str] = field(default_factory=dict, repr=False)

    def new(self, stem: str, what: str, value: str | None = None) -> Placeholder:
        base = re.sub(r"[^A-Z0-9]+", "_", stem.upper()).strip("_")
        name, number = base, 2
        while name in self.names:  # `a-b` and `a_b` would otherwise share one variable
            name, number = f"{base}_{number}", number + 1
        self.names[name] = what
        if value is not None:
            self.known[name] = value
        return Placeholder("${" + name + "}")


@dataclass(slots=True)
class Exported:
    document: dict[str, Any]
    variables: Variables


def export_document(actual: Actual, vhosts: list[str], users: bool, keep_hashes: bool) -> Exported:
    """The topology of `vhosts` (sorted) and, if `users`, of the users in `actual`."""
    by_vhost: dict[str, list[Obj]] = defaultdict(list)
    for key, obj in sorted(actual.objects.items()):
        by_vhost[key.vhost].append(obj)
    variables = Variables()
    document: dict[str, Any] = {"version": 1}
    if users and any(obj.kind is Kind.USER for obj in by_vhost[""]):
        document["users"] = _users(by_vhost[""], keep_hashes, variables)
    caps = actual.capabilities
    document["vhosts"] = {
        name: _vhost(name, by_vhost[name], manage_access=users, variables=variables, caps=caps)
        for name in sorted(vhosts)
    }
    return Exported(document, variables)


def _users(objects: list[Obj], keep_hashes: bool, variables: Variables) -> dict[str, Any]:
    limits: dict[str, dict[str, int]] = defaultdict(dict)
    for obj in objects:
        if obj.kind is Kind.USER_LIMIT:
            limits[obj.attrs["user"]][obj.attrs["name"]] = obj.attrs["value"]
    out: dict[str, Any] = {}
    for obj in sorted((o for o in objects if o.kind is Kind.USER), key=lambda o: o.key.name):
        name, password = obj.key.name, obj.attrs["password"]
        spec: dict[str, Any] = {}
        comment = ""
        if password.plaintext is None and password.password_hash == "":
            comment = "No password: this user logs in with a certificate or another auth backend."
        elif keep_hashes and password.plaintext is None:
            spec["password_hash"] = password.password_hash
        else:
            spec["password"] = variables.new(f"TOPO_USER_{name}_PASSWORD", f"password of user {name!r}")
        if spec and password.algorithm != DEFAULT_ALGORITHM:
            spec["hashing_algorithm"] = password.algorithm
        if obj.attrs["tags"]:
            spec["tags"] = Flow(obj.attrs["tags"])
        if limits.get(name):
            spec["limits"] = dict(sorted(limits[name].items()))
        out[name] = Commented(spec, comment) if comment else spec
    return out


def _vhost(
    name: str, objects: list[Obj], manage_access: bool, variables: Variables, caps: Capabilities
) -> dict[str, Any]:
    of = defaultdict(list)
    for obj in objects:
        of[obj.kind].append(obj)
    spec: dict[str, Any] = {}
    default_type = None
    for vhost in of[Kind.VHOST]:
        attrs = vhost.attrs
        if attrs.get("description"):
            spec["description"] = attrs["description"]
        if attrs.get("tags"):
            spec["tags"] = Flow(attrs["tags"])
        if attrs.get("tracing"):
            spec["tracing"] = True
        if attrs.get("protected_from_deletion"):
            spec["protected_from_deletion"] = True
        if _written_default_type(attrs, caps):
            default_type = spec["default_queue_type"] = attrs["default_queue_type"]
    if of[Kind.VHOST_LIMIT]:
        spec["limits"] = {o.key.name: o.attrs["value"] for o in sorted(of[Kind.VHOST_LIMIT], key=lambda o: o.key)}
    _section(spec, "exchanges", {o.key.name: _exchange(o, caps) for o in of[Kind.EXCHANGE]})
    _section(spec, "queues", {o.key.name: _queue(o, default_type) for o in of[Kind.QUEUE]})
    if of[Kind.BINDING]:
        spec["bindings"] = [_binding(o) for o in sorted(of[Kind.BINDING], key=_binding_order)]
    _section(spec, "policies", {o.key.name: _policy(o) for o in of[Kind.POLICY]})
    _section(spec, "operator_policies", {o.key.name: _policy(o) for o in of[Kind.OPERATOR_POLICY]})
    parameters: dict[str, dict[str, Any]] = defaultdict(dict)
    for obj in sorted(of[Kind.PARAMETER], key=lambda o: (o.attrs["component"], o.attrs["name"])):
        component = obj.attrs["component"]
        parameters[component][obj.attrs["name"]] = _parameter(name, obj, variables)
    for component, section in PARAMETER_SECTIONS.items():
        _section(spec, section, parameters.get(component, {}))
    if manage_access and of[Kind.PERMISSION]:
        # The section makes topo manage this vhost's permissions: whoever else gets access shows as drift.
        spec["permissions"] = {
            o.key.name: Flow({k: o.attrs[k] for k in ("configure", "write", "read")})
            for o in sorted(of[Kind.PERMISSION], key=lambda o: o.key.name)
        }
    if manage_access:
        topic: dict[str, dict[str, Any]] = defaultdict(dict)
        for obj in sorted(of[Kind.TOPIC_PERMISSION], key=lambda o: (o.attrs["user"], o.attrs["exchange"])):
            topic[obj.attrs["user"]][obj.attrs["exchange"]] = Flow(
                {"write": obj.attrs["write"], "read": obj.attrs["read"]}
            )
        if topic:
            spec["topic_permissions"] = dict(topic)
    return spec


def _written_default_type(attrs: dict[str, Any], caps: Capabilities) -> bool:
    """Whether the vhost's default_queue_type is something a person wrote: 4.x stores classic on every
    vhost that never had one set, which means the same as having none."""
    value = attrs.get("default_queue_type")
    return bool(value) and not (value == "classic" and caps.always_default_queue_type)


def _section(spec: dict[str, Any], name: str, items: dict[str, Any]) -> None:
    if items:
        spec[name] = dict(sorted(items.items()))


def _exchange(obj: Obj, caps: Capabilities) -> Any:
    attrs = obj.attrs
    # The type is written even when it is the default (direct): readers look for it first.
    spec: dict[str, Any] = {"type": attrs["type"]}
    for flag, default in (("durable", True), ("auto_delete", False), ("internal", False)):
        if attrs[flag] != default:
            spec[flag] = attrs[flag]
    if attrs["arguments"]:
        spec["arguments"] = deep_sorted(attrs["arguments"])
    if attrs["type"] not in caps.builtin_exchange_types:
        return Commented(spec, f"Type {attrs['type']} comes from a plugin: enable it on every target broker.")
    return spec


def _queue(obj: Obj, default_type: str | None) -> dict[str, Any]:
    attrs = obj.attrs
    spec: dict[str, Any] = {}
    # Without `type`, a queue takes the vhost's default_queue_type: only then must classic be spelt out.
    if attrs["type"] != (default_type or "classic"):
        spec["type"] = attrs["type"]
    if attrs["type"] == "classic":
        for flag, default in (("durable", True), ("auto_delete", False)):
            if attrs[flag] != default:
                spec[flag] = attrs[flag]
    if attrs["arguments"]:
        spec["arguments"] = deep_sorted(attrs["arguments"])
    return spec


def _binding_order(obj: Obj) -> tuple[str, ...]:
    attrs = obj.attrs
    return (
        attrs["source"],
        attrs["destination_type"],
        attrs["destination"],
        attrs["routing_key"],
        canonical(attrs["arguments"]),
    )


def _binding(obj: Obj) -> Flow:
    attrs = obj.attrs
    spec: dict[str, Any] = {"source": attrs["source"], "destination": attrs["destination"]}
    if attrs["destination_type"] != "queue":
        spec["destination_type"] = attrs["destination_type"]
    if attrs["routing_key"]:
        spec["routing_key"] = attrs["routing_key"]
    if attrs["arguments"]:
        spec["arguments"] = deep_sorted(attrs["arguments"])
    return Flow(spec)


def _policy(obj: Obj) -> dict[str, Any]:
    attrs = obj.attrs
    spec: dict[str, Any] = {"pattern": attrs["pattern"]}
    if attrs["apply-to"] != "all":
        spec["apply-to"] = attrs["apply-to"]
    if attrs["priority"] != 0:
        spec["priority"] = attrs["priority"]
    spec["definition"] = deep_sorted(attrs["definition"])
    return spec


def _parameter(vhost: str, obj: Obj, variables: Variables) -> dict[str, Any]:
    component, name, value = obj.attrs["component"], obj.attrs["name"], obj.attrs["value"]
    if component == "federation-upstream-set":
        return {"upstreams": [Flow(deep_sorted(entry)) for entry in value]}
    # TOPO_SHOVEL_[<VHOST>_]<NAME>_SRC_PASSWORD, TOPO_FEDERATION_[<VHOST>_]<NAME>_PASSWORD[_<n>]: fixed by
    # the object alone (the vhost is left out for "/"), so other objects never rename a variable.
    kind = {"shovel": "SHOVEL", "federation-upstream": "FEDERATION"}[component]
    stem = f"TOPO_{kind}_{'' if vhost == '/' else vhost + '_'}{name}"
    what = f"{component} {name!r} in vhost {vhost!r}"
    spec: dict[str, Any] = {}
    for key, item in sorted(value.items()):
        side = key.removesuffix("uri").removesuffix("-").upper()
        name = f"{stem}_{side + '_' if side else ''}PASSWORD"
        if key.endswith("uri") and isinstance(item, str):
            spec[key] = _hide_password(item, name, what, variables)
        elif key.endswith("uri") and isinstance(item, list):
            spec[key] = [
                _hide_password(uri, f"{name}_{number}", what, variables) for number, uri in enumerate(item, start=1)
            ]
        else:
            spec[key] = deep_sorted(item)
    return spec


def _hide_password(uri: Any, name: str, what: str, variables: Variables) -> Any:
    parts = split_uri(uri) if isinstance(uri, str) else None
    if parts is None:
        return uri
    scheme, user, password, host = parts
    placeholder = variables.new(name, f"password of {unquote(user)!r} in the URI of {what} (percent-encoded)", password)
    return Placeholder(_escape(scheme + user + ":") + placeholder + _escape(host))


def deep_sorted(value: Any) -> Any:
    """Mappings at every depth in key order: the output must not depend on the order of the input."""
    if isinstance(value, dict):
        return {key: deep_sorted(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [deep_sorted(item) for item in value]
    return value


def _escape(text: str) -> str:
    return text.replace("${", "$${")


@dataclass(slots=True)
class ExportResult:
    text: str
    variables: Variables
    notes: list[str]


def build_export(
    actual: Actual, vhosts: list[str], users: bool, keep_hashes: bool, source: str, notes: list[str]
) -> ExportResult:
    """The YAML text, checked: loading it back must give exactly the objects it was made from."""
    exported = export_document(actual, vhosts, users, keep_hashes)
    header = (
        f"Exported by topo from {source}.\n"
        "`topo plan` against a broker in this state shows no changes. Objects the file does not declare are\n"
        "left alone; add `prune: true` (top level or per vhost) to have topo delete them."
    )
    if exported.variables.names:
        header += "\n\nSecrets are not in this file; set these variables before topo plan or apply:"
        header += "".join(f"\n  {name}: {what}" for name, what in exported.variables.names.items())
    text = dump(exported.document, header)
    differences = _round_trip_differences(text, actual, set(vhosts), users, exported.variables)
    if differences:
        shown = "\n".join(f"  {line}" for line in differences[:20])
        raise TopoError(f"the export would not reproduce the source exactly (a bug in topo):\n{shown}")
    return ExportResult(text, exported.variables, notes)


_VHOST_DEFAULTS = {"description": "", "tags": [], "tracing": False, "default_queue_type": None}


def _round_trip_differences(
    text: str, actual: Actual, vhosts: set[str], users: bool, variables: Variables
) -> list[str]:
    env = {name: variables.known.get(name, "placeholder") for name in variables.names}
    with tempfile.TemporaryDirectory(prefix="topo-export-") as directory:
        path = Path(directory) / "export.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            desired = load_topology([str(path)], env=env).desired
        except ValidationFailed as exc:
            # The source holds what RabbitMQ stored but topo's checks refuse (it would refuse to apply it).
            shown = "\n".join(f"  {problem.path}: {problem.message}" for problem in exc.problems[:20])
            more = f"\n  … and {len(exc.problems) - 20} more" if len(exc.problems) > 20 else ""
            raise TopoError(f"topo cannot declare some of what the source holds:\n{shown}{more}") from None
    out = []
    caps = actual.capabilities
    for key, have in actual.objects.items():
        if key.kind in (Kind.USER, Kind.USER_LIMIT):
            exported = users
        elif key.kind in ACCESS_KINDS:
            exported = users and key.vhost in vhosts
        else:
            exported = key.vhost in vhosts
        if not exported:
            continue
        want = desired.objects.get(key)
        if want is None:
            out.append(f"{key.kind.value} {key.name!r} in vhost {key.vhost!r} is missing")
            continue
        expected = _VHOST_DEFAULTS | want.attrs if key.kind is Kind.VHOST else want.attrs
        for name, value in expected.items():
            if name == "password" and value.plaintext is not None:
                continue  # a ${VARIABLE} placeholder: the value is the user's to supply
            if name == "default_queue_type" and value is None and not _written_default_type(have.attrs, caps):
                continue  # left out on purpose (see _written_default_type)
            if not same_value(have.attrs.get(name), value):
                out.append(f"{key.kind.value} {key.name!r} in vhost {key.vhost!r}: {name} differs")
    return out
