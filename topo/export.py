"""Actual state -> a topology document (for `topo export`): what a person would write for it.

The objects come from the live broker (read.read_for_export) or from a definitions file
(definitions.py), both through the kinds' readers, so an export describes exactly what `topo plan`
compares. Each kind writes its own sections (topo/kinds/<kind>.py).
Defaults are left out, everything is sorted, and secrets never reach the document: passwords become
${VARIABLE} placeholders (or stay hashes with keep_hashes), and so do the passwords in shovel and
federation URIs.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from topo import holding, migrate
from topo.capabilities import Capabilities
from topo.emit import Placeholder, dump
from topo.errors import TopoError, ValidationFailed
from topo.kinds import definition, registry
from topo.kinds.base import ExportContext, Scope
from topo.kinds.vhost import DEFAULTS as VHOST_DEFAULTS
from topo.kinds.vhost import written_default_type
from topo.load import Source, load_topology
from topo.model import Spec, Topology, VhostSpec, allowed_keys
from topo.ownership import INCLUDE_HINT, set_aside
from topo.render import display_name
from topo.state import Actual, Kind, Obj, same_value


@dataclass(slots=True)
class Variables:
    """Environment variables the document needs, with what each one is for (listed on stderr)."""

    names: dict[str, str] = field(default_factory=dict)
    # The values, where known (URI passwords): only to check the export, never written or printed.
    known: dict[str, str] = field(default_factory=dict, repr=False)

    def new(self, stem: str, what: str, value: str | None = None) -> Placeholder:
        """A ${NAME} placeholder for a secret (`value`, where known, only checks the export)."""
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
    notes: list[str] = field(default_factory=list)  # what the kinds left out on purpose


def export_document(actual: Actual, vhosts: list[str], users: bool, keep_hashes: bool) -> Exported:
    """The topology of `vhosts` (sorted) and, if `users`, of the users in `actual`.

    Each kind writes its own sections (topo/kinds/<kind>.py); they appear in the order the model
    declares them, so a file topo writes reads like one a person would.
    """
    by_scope: dict[str, dict[Kind, list[Obj]]] = defaultdict(lambda: defaultdict(list))
    for key, obj in sorted(actual.objects.items()):
        by_scope[key.vhost][key.kind].append(obj)
    variables = Variables()
    notes: list[str] = []
    document: dict[str, Any] = {"version": 1}
    caps = actual.capabilities
    top = _sections(by_scope[""], Scope.GLOBAL, "", users, keep_hashes, variables, notes, caps)
    document.update(_in_model_order(top, Topology))
    document["vhosts"] = {
        name: _in_model_order(
            _sections(by_scope[name], Scope.VHOST, name, users, keep_hashes, variables, notes, caps), VhostSpec
        )
        for name in sorted(vhosts)
    }
    return Exported(document, variables, notes)


def _sections(
    objects: dict[Kind, list[Obj]],
    scope: Scope,
    vhost: str,
    users: bool,
    keep_hashes: bool,
    variables: Variables,
    notes: list[str],
    capabilities: Capabilities,
) -> dict[str, Any]:
    vhost_objects = objects.get(Kind.VHOST, [])
    context = ExportContext(
        vhost=vhost,
        manage_access=users,
        new_variable=variables.new,
        keep_hashes=keep_hashes,
        vhost_attrs=vhost_objects[0].attrs if vhost_objects else {},
        objects=objects,
        notes=notes,
        capabilities=capabilities,
    )
    out: dict[str, Any] = {}
    for kind in registry():
        if kind.scope is scope:
            out.update(kind.export(objects.get(kind.kind, []), context))
    return out


def _in_model_order(sections: dict[str, Any], model: type[Spec]) -> dict[str, Any]:
    order = {name: index for index, name in enumerate(allowed_keys(model))}
    return dict(sorted(sections.items(), key=lambda item: order[item[0]]))


@dataclass(frozen=True, slots=True)
class ExportScope:
    """What an export leaves out: the clients' own objects (unless included) and names matching `ignore`."""

    include_client_owned: bool = False
    ignore: tuple[str, ...] = ()


LEFT_OUT_SHOWN = 20


def _set_aside(actual: Actual, scope: ExportScope) -> list[str]:
    owned, ignored = set_aside(actual.objects, scope.ignore, scope.include_client_owned)
    notes = []
    if owned:
        lines = [
            f"  {obj.kind.value} {display_name(obj.key, obj.attrs)} in vhost {obj.key.vhost!r}: {why}"
            for obj, why in owned[:LEFT_OUT_SHOWN]
        ]
        if len(owned) > LEFT_OUT_SHOWN:
            lines.append(f"  … and {len(owned) - LEFT_OUT_SHOWN} more")
        notes.append(
            f"left out {len(owned)} object{'s' if len(owned) != 1 else ''} that clients declare for themselves "
            f"at run time ({INCLUDE_HINT} keeps them):\n" + "\n".join(lines)
        )
    if ignored:
        notes.append(f"left out {ignored} object{'s' if ignored != 1 else ''} matching --ignore patterns")
    return notes


@dataclass(slots=True)
class ExportResult:
    text: str
    variables: Variables
    notes: list[str]


def build_export(
    actual: Actual,
    vhosts: list[str],
    users: bool,
    keep_hashes: bool,
    source: str,
    notes: list[str],
    scope: ExportScope | None = None,
) -> ExportResult:
    """The YAML text, checked: loading it back must give exactly the objects it was made from."""
    # topo's own records and temporaries: never exported, whatever the scope options say.
    actual, holds = holding.split(migrate.without_temporaries(actual))
    if holds:
        notes = [
            *notes,
            f"left out {len(holds)} record{'s' if len(holds) != 1 else ''} topo keeps during a replace "
            "(topo.hold.* exchanges): an apply was interrupted; topo apply restores what they record and "
            "removes them",
        ]
    notes = [*notes, *_set_aside(actual, scope or ExportScope())]
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
    return ExportResult(text, exported.variables, [*notes, *exported.notes])


def _round_trip_differences(
    text: str, actual: Actual, vhosts: set[str], users: bool, variables: Variables
) -> list[str]:
    env = {name: variables.known.get(name, "placeholder") for name in variables.names}
    try:
        desired = load_topology([], env=env, sources=[Source("export.yaml", text)]).desired
    except ValidationFailed as exc:
        # The source holds what RabbitMQ stored but topo's checks refuse (it would refuse to apply it).
        shown = "\n".join(f"  {problem.path}: {problem.message}" for problem in exc.problems[:20])
        more = f"\n  … and {len(exc.problems) - 20} more" if len(exc.problems) > 20 else ""
        raise TopoError(f"topo cannot declare some of what the source holds:\n{shown}{more}") from None
    out = []
    caps = actual.capabilities
    for key, have in actual.objects.items():
        kind = definition(key.kind)
        if kind.kind in (Kind.USER, Kind.USER_LIMIT):
            exported = users
        elif kind.access:
            exported = users and key.vhost in vhosts
        elif kind.scope is Scope.GLOBAL:
            exported = True
        else:
            exported = key.vhost in vhosts
        if not exported or not kind.exported(have):
            continue
        want = desired.objects.get(key)
        if want is None:
            out.append(f"{key.kind.value} {key.name!r} in vhost {key.vhost!r} is missing")
            continue
        expected = VHOST_DEFAULTS | want.attrs if key.kind is Kind.VHOST else want.attrs
        for name, value in expected.items():
            if name == "password" and value.plaintext is not None:
                continue  # a ${VARIABLE} placeholder: the value is the user's to supply
            if name == "default_queue_type" and value is None and not written_default_type(have.attrs, caps):
                continue  # left out on purpose (see kinds.vhost.written_default_type)
            if not same_value(have.attrs.get(name), value):
                out.append(f"{key.kind.value} {key.name!r} in vhost {key.vhost!r}: {name} differs")
    return out
