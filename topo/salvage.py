"""Every problem at once: a file with schema errors is checked on without the objects that failed.

pydantic reports the schema errors of a file, but a file that fails produces no model, so the checks
that need one (references between objects, policy definitions, ...) would only run once every schema
error is fixed: fixing 11 problems would reveal 3 more. Instead the objects (or keys) at fault are
removed from the parsed file and the rest validated again, a few rounds at most.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from topo.errors import Problem
from topo.model import Topology
from topo.state import Key, Kind
from topo.yamlload import LocList

# Sections of a vhost whose entries are objects keyed by name.
_NAMED = {
    "exchanges": Kind.EXCHANGE,
    "queues": Kind.QUEUE,
    "policies": Kind.POLICY,
    "operator_policies": Kind.OPERATOR_POLICY,
    "permissions": Kind.PERMISSION,
    "topic_permissions": Kind.TOPIC_PERMISSION,
    "shovels": Kind.PARAMETER,
    "federation_upstreams": Kind.PARAMETER,
    "federation_upstream_sets": Kind.PARAMETER,
}
ROUNDS = 5


def raw_at(root: Any, path: tuple[Any, ...]) -> Any:
    node = root
    for element in path:
        in_list = isinstance(node, list) and isinstance(element, int) and 0 <= element < len(node)
        if in_list or (isinstance(node, dict) and element in node):
            node = node[element]
        else:
            return None
    return node


def in_file(root: Any, path: tuple[Any, ...]) -> tuple[Any, ...]:
    """`path` with each list index as the file has it: salvaging removes items and remembers where
    the rest came from (LocList.origin)."""
    node, shown = root, []
    for element in path:
        origin = getattr(node, "origin", None)
        shown.append(origin[element] if origin is not None and isinstance(element, int) else element)
        in_list = isinstance(node, list) and isinstance(element, int) and 0 <= element < len(node)
        node = node[element] if in_list or (isinstance(node, dict) and element in node) else None
    return tuple(shown)


def salvage(
    raw: Any, error: ValidationError, explain: Callable[[ValidationError], list[Problem]]
) -> tuple[Topology, set[Key], list[Problem]] | None:
    """(model of what is left, keys of the objects set aside, problems found in later rounds), or None.

    Mutates `raw`: the problems of the first round were already reported with their lines."""
    broken: set[Key] = set()
    more: list[Problem] = []
    for _ in range(ROUNDS):
        if not _remove_failures(raw, error, broken):
            return None
        try:
            return Topology.model_validate(raw), broken, more
        except ValidationError as exc:
            # Errors the first round could not see (a model's own check runs only once its fields pass).
            error = exc
            more.extend(explain(exc))
    return None


def _remove_failures(raw: Any, error: ValidationError, broken: set[Key]) -> bool:
    dropped_items: dict[int, tuple[LocList, set[int]]] = {}
    removals: list[tuple[Any, Any]] = []
    for item in error.errors(include_url=False):
        target = _target(raw, tuple(item["loc"]), broken)
        if target is None:
            return False
        container, key = target
        if isinstance(container, list):
            dropped_items.setdefault(id(container), (container, set()))[1].add(key)
        else:
            removals.append((container, key))
    for container, key in removals:
        container.pop(key, None)
    for container, indexes in dropped_items.values():
        _drop_items(container, indexes)
    return bool(removals or dropped_items)


def _target(raw: Any, loc: tuple[Any, ...], broken: set[Key]) -> tuple[Any, Any] | None:
    """The mapping (or list) and key (or index) to remove for an error at `loc`."""
    if not loc or not isinstance(raw, dict) or loc[0] not in raw:
        return None
    if loc[0] == "users" and len(loc) >= 2 and isinstance(raw["users"], dict) and loc[1] in raw["users"]:
        broken.add(Key(Kind.USER, "", str(loc[1])))
        return raw["users"], loc[1]
    if loc[0] != "vhosts" or len(loc) < 2 or not isinstance(raw["vhosts"], dict) or loc[1] not in raw["vhosts"]:
        return raw, loc[0]
    vhosts, vhost = raw["vhosts"], loc[1]
    spec = vhosts[vhost]
    if len(loc) < 3 or not isinstance(spec, dict) or loc[2] not in spec:
        broken.add(Key(Kind.VHOST, str(vhost), str(vhost)))
        return vhosts, vhost
    section = loc[2]
    entries = spec[section]
    if len(loc) >= 4 and section in _NAMED and isinstance(entries, dict) and loc[3] in entries:
        broken.add(Key(_NAMED[section], str(vhost), str(loc[3])))
        return entries, loc[3]
    if len(loc) >= 4 and section == "bindings" and isinstance(entries, list) and isinstance(loc[3], int):
        return entries, loc[3]
    return spec, section


def _drop_items(items: list[Any], indexes: set[int]) -> None:
    """Removes list items in place, remembering for each remaining item its index in the file."""
    origin = list(getattr(items, "origin", range(len(items))))
    keep = [index for index in range(len(items)) if index not in indexes]
    kept = [items[index] for index in keep]
    if isinstance(items, LocList):
        items.lines = [items.lines[index] for index in keep]
        items.origin = [origin[index] for index in keep]
    items[:] = kept
