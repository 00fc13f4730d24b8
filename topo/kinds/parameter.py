"""Plugins' runtime parameters in a vhost: shovels, federation upstreams and upstream sets."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from topo.apipath import api_path
from topo.emit import Flow, Placeholder
from topo.errors import BrokerError
from topo.kinds import Kind
from topo.kinds.base import Declared, ExportContext, Items, KindDef, Phase, by_name, deep_sorted
from topo.model import FederationUpstreamSetSpec, FederationUpstreamSpec, ShovelSpec
from topo.normalize import strings_in
from topo.redact import mask_uris, register_url_secret, split_uri
from topo.state import Key, Obj, canonical

if TYPE_CHECKING:
    from topo.client import ManagementClient
    from topo.diff import Change

# Component name on the broker -> section of a vhost in the topology file.
PARAMETER_SECTIONS = {
    "shovel": "shovels",
    "federation-upstream": "federation_upstreams",
    "federation-upstream-set": "federation_upstream_sets",
}


def parameter_obj(vhost: str, component: str, name: str, value: Any) -> Obj:
    key = Key(Kind.PARAMETER, vhost, canonical([component, name]))
    return Obj(key, {"component": component, "name": name, "value": value})


def from_spec(vhost: str, component: str, name: str, spec: Any) -> Obj:
    if component == "federation-upstream-set":
        return parameter_obj(vhost, component, name, [dict(entry) for entry in spec.upstreams])
    return parameter_obj(vhost, component, name, spec.value())


class ParameterDef(KindDef):
    kind = Kind.PARAMETER
    reads = ("parameters",)
    # Shovels and federation links name queues and exchanges: started after, stopped before them.
    depends_on = (Kind.VHOST, Kind.EXCHANGE, Kind.QUEUE)
    required_tag = "policymaker"

    def display(self, key: Key, attrs: dict[str, Any] | None) -> str:
        attrs = attrs or {}
        return f"{attrs['component']} {json.dumps(attrs['name'], ensure_ascii=False)}"

    def declarations(self, spec: Any, vhost: str) -> Iterator[Declared]:
        for component, section in PARAMETER_SECTIONS.items():
            for name, parameter in getattr(spec, section).items():
                obj = from_spec(vhost, component, name, parameter)
                for text in strings_in(obj.attrs["value"]):
                    register_url_secret(text)  # shovel and federation URIs carry credentials
                yield Declared(obj, (section, name), absent=parameter.absent)

    def from_definitions(self, items: Items) -> Iterator[Obj]:
        for vhost, item in items("parameters"):
            component, value = item.get("component"), item.get("value")
            if component in PARAMETER_SECTIONS:
                for text in strings_in(value):
                    register_url_secret(text)
                yield parameter_obj(vhost, component, item["name"], value)

    def check(self, obj: Obj) -> None:
        attrs = obj.attrs
        if attrs["component"] == "federation-upstream-set":
            FederationUpstreamSetSpec.model_validate({"upstreams": attrs["value"]})
        else:
            spec = ShovelSpec if attrs["component"] == "shovel" else FederationUpstreamSpec
            spec.model_validate(attrs["value"])

    def path(self, key: Key, attrs: dict[str, Any], phase: Phase) -> str:
        return api_path("parameters", attrs["component"], key.vhost, attrs["name"])

    def body(self, key: Key, attrs: dict[str, Any]) -> dict[str, Any]:
        return {"value": attrs["value"]}

    def write(
        self,
        client: ManagementClient,
        change: Change,
        phase: Phase,
        what: str,
        allow_data_loss: bool,
        allow_disruption: bool = False,
    ) -> None:
        try:
            super().write(client, change, phase, what, allow_data_loss, allow_disruption)
        except BrokerError as exc:
            value = (change.after or {}).get("value")
            if phase is Phase.DELETE or mask_uris(value) == value:
                raise
            # The plugin's validation error repeats the URI in Erlang's notation (quotes escaped, non-ASCII
            # as byte lists, split at / or :), which no scrubbing of the known password can be sure to catch.
            headline = exc.reason.strip().splitlines()[0] if exc.reason.strip() else "refused"
            reason = (
                f"{headline} (the broker's details are not shown: they repeat a URI with its password; check "
                "the URI's form, and percent-encode @ / : # ? and spaces in the password)"
            )
            raise BrokerError(exc.action, exc.status, reason) from None

    def export(self, objects: list[Obj], context: ExportContext) -> dict[str, Any]:
        parameters: dict[str, dict[str, Any]] = {}
        for obj in sorted(objects, key=lambda o: (o.attrs["component"], o.attrs["name"])):
            component = obj.attrs["component"]
            parameters.setdefault(component, {})[obj.attrs["name"]] = _parameter(context, obj)
        return {
            section: by_name(parameters[component])
            for component, section in PARAMETER_SECTIONS.items()
            if parameters.get(component)
        }


def _parameter(context: ExportContext, obj: Obj) -> dict[str, Any]:
    vhost = context.vhost
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
        variable = f"{stem}_{side + '_' if side else ''}PASSWORD"
        if key.endswith("uri") and isinstance(item, str):
            spec[key] = _hide_password(context, item, variable, what)
        elif key.endswith("uri") and isinstance(item, list):
            spec[key] = [
                _hide_password(context, uri, f"{variable}_{number}", what) for number, uri in enumerate(item, start=1)
            ]
        else:
            spec[key] = deep_sorted(item)
    return spec


def _hide_password(context: ExportContext, uri: Any, name: str, what: str) -> Any:
    parts = split_uri(uri) if isinstance(uri, str) else None
    if parts is None:
        return uri
    scheme, user, password, host = parts
    placeholder = context.new_variable(
        name, f"password of {unquote(user)!r} in the URI of {what} (percent-encoded)", password
    )
    return Placeholder(_escape(scheme + user + ":") + placeholder + _escape(host))


def _escape(text: str) -> str:
    return text.replace("${", "$${")


DEFINITION = ParameterDef()
