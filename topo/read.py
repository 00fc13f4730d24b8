"""Broker -> actual state, with as few requests as possible: read_broker is the one reader.

One GET of definitions (per vhost when only one is managed; per-object listings for non-administrators),
plus /api/vhosts for metadata that definitions lack, /api/whoami for the connected identity, and the
user, permission and broker-wide listings when asked for. Each kind reads its own sections. Message
counts are fetched later, only for queues the plan would destroy.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from topo.client import ManagementClient, api_path
from topo.errors import BrokerError, TopoError
from topo.kinds import definition, registry
from topo.kinds.base import KindDef, Scope
from topo.kinds.parameter import PARAMETER_SECTIONS
from topo.kinds.vhost import from_broker as vhost_from_broker
from topo.normalize import tags_of
from topo.state import Actual, Identity, Kind, Obj


def read_overview(client: ManagementClient) -> dict[str, Any]:
    return client.get(
        "/api/overview",
        what="read broker overview",
        params={"columns": "rabbitmq_version,exchange_types,management_version,cluster_name"},
    )


class Access(StrEnum):
    """Whether a read includes users, their limits and the access entries (administrator-only listings)."""

    NONE = "none"
    REQUIRED = "required"  # the files manage them: a refusal is an error
    OPTIONAL = "optional"  # an export: a refusal leaves them out, and says so


@dataclass(frozen=True, slots=True)
class Reading:
    """What one read of the broker gave: the state, and what the connected user was refused."""

    actual: Actual
    refused: tuple[str, ...] = ()  # listings left out (e.g. "operator policies of '/'")
    access: bool = False  # users and access entries are in `actual`


def read_broker(
    client: ManagementClient,
    vhosts: Iterable[str] | None,
    access: Access = Access.NONE,
    broker_wide: Iterable[Kind] = (),
) -> Reading:
    """Everything topo compares, for the given vhosts (None: every vhost) that exist: the one reader.

    Sent at once: the overview (version, exchange types), the vhost list (metadata that definitions
    lack), the connected user's identity, the definitions (of one vhost when only one is wanted, else of
    the broker; they also carry operator policies and limits, as parameters) and, if asked for, the user
    and permission listings. Definitions are for administrators: anyone else gets them assembled from the
    per-object listings it may read, and the result names the listings it was refused. `broker_wide`:
    the kinds outside vhosts to read too (global parameters), each from its own listing, under the same
    access policy.
    """
    wide = [definition(kind) for kind in dict.fromkeys(broker_wide)]
    wanted = None if vhosts is None else list(dict.fromkeys(vhosts))
    single = wanted[0] if wanted is not None and len(wanted) == 1 else None
    path, what = ("/api/definitions", "read definitions")
    if single is not None:
        path, what = api_path("definitions", single), f"read definitions of vhost {single!r}"
    info, vhost_list, whoami, response, listed, wide_listings = _concurrently(
        lambda: read_overview(client),
        lambda: client.get("/api/vhosts", what="list vhosts", params={"disable_stats": "true"}),
        lambda: client.get("/api/whoami", what="read the connected user's tags"),
        # A vhost that does not exist yet answers 400 vhost_not_found (or 404): nothing to read then.
        lambda: client.request("GET", path, what=what, ok=(400, 401, 404)) if wanted != [] else None,
        lambda: _access(client, access),
        lambda: [_broker_wide(client, kind, access) for kind in wide],
    )
    identity = Identity(client.connection.user, frozenset(tags_of(whoami.get("tags"))))
    actual = Actual(identity, vhosts={item["name"] for item in vhost_list})
    keep = actual.vhosts if wanted is None else set(wanted) & actual.vhosts
    for item in vhost_list:
        if item["name"] in keep:
            _add(actual, vhost_from_broker(item))
    refused: list[str] = []
    if response is not None and response.status_code == 401:
        # Every vhost asked for, visible or not: one without permissions gets the broker's own refusal.
        definitions = _listings(client, sorted(keep) if wanted is None else wanted)
        refused = definitions.pop(REFUSED)
    elif response is not None and response.status_code in (400, 404):
        if single is None or single in actual.vhosts:
            raise BrokerError(what, response.status_code, response.text[:300])
        definitions = {}  # the vhost is not there (yet)
    else:
        definitions = response.json() if response is not None else {}
    add_definitions(actual, definitions, default_vhost=single, keep=keep)
    for kind, items in zip(wide, wide_listings, strict=True):
        if items is None:
            refused.append(f"{kind.section.replace('_', ' ')} (they need the {kind.required_tag} tag)")
            continue
        for obj in kind.from_definitions(lambda section, items=items: (("", item) for item in items)):
            actual.objects[obj.key] = obj
    if listed is not None:
        _add_access(actual, *listed, keep=keep)
    actual.version = str(info.get("rabbitmq_version", ""))
    actual.exchange_types = {t["name"] for t in info.get("exchange_types", []) if "name" in t}
    return Reading(actual, tuple(refused), access=listed is not None)


def read_actual(
    client: ManagementClient, vhosts: Iterable[str], access_control: bool = False, broker_wide: Iterable[Kind] = ()
) -> Actual:
    """The state `topo plan` compares: the given vhosts, users and access if the files manage them, and
    the `broker_wide` kinds the files declare."""
    access = Access.REQUIRED if access_control else Access.NONE
    return read_broker(client, list(vhosts), access, broker_wide).actual


def broker_wide_kinds() -> list[Kind]:
    """Kinds outside vhosts (other than users) read from their own listing: global parameters."""
    return [kind.kind for kind in registry() if kind.scope is Scope.GLOBAL and kind.listing is not None]


def read_for_export(
    client: ManagementClient, only: list[str] | None, with_users: bool
) -> tuple[Actual, list[str], bool, list[str]]:
    """Everything on the broker (or in the `only` vhosts), for export.

    Returns the state, the vhosts exported, whether users and permissions are in it, and notes for the
    user: what a non-administrator was refused is named, never silently missing.
    """
    # Broker-wide settings belong to no vhost: an export of chosen vhosts leaves them out.
    wide = broker_wide_kinds() if only is None else []
    reading = read_broker(client, only, Access.OPTIONAL if with_users else Access.NONE, wide)
    actual = reading.actual
    names = sorted(actual.vhosts)
    missing = [name for name in only or [] if name not in actual.vhosts]
    if missing:
        raise TopoError(
            f"no vhost {', '.join(map(repr, missing))} on the broker, or {client.connection.user!r} has no "
            f"permissions on it (vhosts visible: {', '.join(map(repr, names)) or 'none'})"
        )
    selected = sorted(set(only or names))
    notes = []
    if with_users and not reading.access:
        notes.append(
            f"users and permissions left out: reading them needs the administrator tag, "
            f"which {client.connection.user!r} does not have"
        )
    if reading.refused:
        notes.append(
            f"left out what {client.connection.user!r} may not read (tags: policymaker for shovels and "
            f"federation, administrator for operator policies and limits): {', '.join(reading.refused)}"
        )
    if reading.access and only is not None:
        keep_users_with_access(actual, selected)
    return actual, selected, reading.access, notes


def _add_access(
    actual: Actual, users: list[Any], permissions: list[Any], topic_permissions: list[Any], keep: set[str]
) -> None:
    """Users with their limits, and their permissions and topic permissions in the `keep` vhosts."""
    listed = {"users": users, "permissions": permissions, "topic_permissions": topic_permissions}
    before = set(actual.objects)
    add_definitions(actual, listed, default_vhost=None, keep=keep, access=True)
    # Only the access kinds come from these listings (the rest of `actual` was read elsewhere).
    assert all(_access_kind(definition(key.kind)) for key in set(actual.objects) - before)


def keep_users_with_access(actual: Actual, vhosts: list[str]) -> None:
    """Narrows `actual` to `vhosts`: leaves only the users with permissions or topic permissions there
    (and their limits), and no broker-wide settings (they belong to no vhost)."""
    wanted = set(vhosts)
    for key in [key for key in actual.objects if key.kind in broker_wide_kinds()]:
        del actual.objects[key]
    users = {
        obj.key.name if obj.kind is Kind.PERMISSION else obj.attrs["user"]
        for obj in actual.objects.values()
        if definition(obj.kind).access and obj.key.vhost in wanted
    }
    for key, obj in list(actual.objects.items()):
        name = key.name if key.kind is Kind.USER else obj.attrs.get("user") if key.kind is Kind.USER_LIMIT else None
        if name is not None and name not in users:
            del actual.objects[key]


def _concurrently(*calls: Callable[[], Any]) -> list[Any]:
    """Runs the calls at once and returns their results in order (the first error is raised).

    Daemon threads rather than an executor: an executor's threads are joined when the interpreter
    exits, so a read abandoned for a file error would keep topo waiting for a silent broker.
    """
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException | None] = [None] * len(calls)

    def run(index: int) -> None:
        try:
            results[index] = calls[index]()
        except BaseException as exc:  # re-raised in the caller's thread below
            errors[index] = exc

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for error in errors:
        if error is not None:
            raise error
    return results


def _broker_wide(client: ManagementClient, kind: KindDef, access: Access) -> list[Any] | None:
    """A broker-wide kind's own listing; None when an export (OPTIONAL) may not read it."""
    assert kind.listing is not None, f"{kind.kind}: read broker-wide, but has no listing"
    what = f"list {kind.section.replace('_', ' ')}"
    response = client.request("GET", kind.listing, what=what, ok=(401,))
    if response.status_code != 401:
        return list(response.json())
    if access is Access.OPTIONAL:
        return None
    raise BrokerError(
        what,
        401,
        f"the files declare {kind.section.replace('_', ' ')}, which only a user tagged {kind.required_tag} may "
        f"manage ({client.connection.user!r} is not)",
    )


def _access(client: ManagementClient, access: Access) -> list[Any] | None:
    """Users, permissions and topic permissions (administrator-only listings), as `access` asks."""
    if access is Access.NONE:
        return None
    try:
        return _concurrently(
            lambda: client.get("/api/users", what="list users"),
            lambda: client.get("/api/permissions", what="list permissions"),
            lambda: client.get("/api/topic-permissions", what="list topic permissions"),
        )
    except BrokerError as exc:
        if exc.status != 401:
            raise
        if access is Access.OPTIONAL:
            return None
        raise BrokerError(
            exc.action,
            exc.status,
            f"{exc.reason}; the files declare users or permissions, which only a user tagged administrator "
            f"may manage ({client.connection.user!r} is not)",
        ) from None


# The listings a non-administrator was refused (in what _listings returns): an export says what it lacks.
REFUSED = "refused listings"

_COLUMNS = {
    "exchanges": "vhost,name,type,durable,auto_delete,internal,arguments",
    "queues": "vhost,name,durable,auto_delete,exclusive,arguments,type",
    "bindings": "vhost,source,destination,destination_type,routing_key,arguments",
}


def _listings(client: ManagementClient, vhosts: list[str]) -> dict[str, Any]:
    """The definitions of `vhosts`, assembled from per-object listings.

    Definitions are for administrators only; a user tagged management/policymaker with permissions on
    a vhost (the usual account on hosted shared plans) may still list what is in it. Listings the user
    may not read (operator policies, limits) count as empty: declaring those needs an administrator.
    """
    result: dict[str, Any] = {"exchanges": [], "queues": [], "bindings": [], "policies": [], "parameters": []}
    refused: list[str] = []
    result[REFUSED] = refused
    for vhost in vhosts:
        for section, columns in _COLUMNS.items():
            params = {"disable_stats": "true", "columns": columns}
            listing = client.get_or_none(
                api_path(section, vhost), what=f"list {section} of vhost {vhost!r}", params=params
            )
            result[section].extend(listing or [])
        result["policies"].extend(
            client.get_or_none(api_path("policies", vhost), what=f"list policies of {vhost!r}") or []
        )
        what = f"list operator policies of {vhost!r}"
        operator = _optional(client, api_path("operator-policies", vhost), what, refused)
        for item in operator:
            value = {k: item[k] for k in ("pattern", "definition", "priority", "apply-to") if k in item}
            result["parameters"].append(
                {"vhost": vhost, "component": "operator_policy", "name": item["name"], "value": value}
            )
        for component in PARAMETER_SECTIONS:
            path = api_path("parameters", component, vhost)
            for item in _optional(client, path, f"list {component} parameters of {vhost!r}", refused):
                result["parameters"].append({k: item[k] for k in ("vhost", "component", "name", "value") if k in item})
        for item in _optional(client, api_path("vhost-limits", vhost), f"list limits of {vhost!r}", refused):
            result["parameters"].append(
                {"vhost": vhost, "component": "vhost-limits", "name": "limits", "value": item.get("value")}
            )
    return result


def _optional(client: ManagementClient, path: str, what: str, refused: list[str] | None = None) -> list[dict[str, Any]]:
    """A listing, empty when there is nothing (404) or the user may not read it (401, noted in `refused`)."""
    response = client.request("GET", path, what=what, ok=(401, 404))
    if response.status_code == 401 and refused is not None:
        refused.append(what.removeprefix("list "))
    return [] if response.status_code in (401, 404) else list(response.json())


def _add(actual: Actual, obj: Obj | None) -> None:
    if obj is not None:
        actual.objects[obj.key] = obj


def add_definitions(
    actual: Actual, definitions: dict[str, Any], default_vhost: str | None, keep: set[str], access: bool = False
) -> None:
    """Adds the objects of a definitions export (whole broker or one vhost) in the `keep` vhosts: each
    kind reads its own sections. Users and access entries only with `access` (they need their own
    listings when one vhost's definitions are read, and are read only when the files manage them)."""

    def items(section: str) -> Iterable[tuple[str, dict[str, Any]]]:
        for item in definitions.get(section) or []:
            vhost = item.get("vhost", default_vhost)
            if vhost in keep:
                yield vhost, item

    def global_items(section: str) -> Iterable[tuple[str, dict[str, Any]]]:
        for item in definitions.get(section) or []:
            yield "", item

    for kind in registry():
        if kind.kind is Kind.VHOST or (not access and _access_kind(kind)) or kind.kind in broker_wide_kinds():
            continue  # broker-wide kinds come from their own listings (read_broker), or a file's sections
        for obj in kind.from_definitions(global_items if kind.scope is Scope.GLOBAL else items):
            actual.objects[obj.key] = obj


def _access_kind(kind: KindDef) -> bool:
    return kind.access or kind.kind in (Kind.USER, Kind.USER_LIMIT)


def consumer_counts(
    client: ManagementClient, vhost: str, names: set[str] | None = None, complete_listing: bool = False
) -> dict[str, int | None]:
    """Consumers per queue in a vhost (of `names`, or all); None where the broker cannot say.

    Two sources, both refreshed every statistics interval (5 s by default), so both lag subscriptions:
    /api/consumers lists every consumer, but to users tagged neither administrator nor monitoring
    only their own (`complete_listing` says the connected user sees all); the queue listing's
    `consumers` statistic is there for every user, but absent for a queue until its first round
    (or everywhere, when the broker's statistics are disabled). Without a complete listing the
    larger of the two counts, and a queue with neither is None.
    """
    response = client.request(
        "GET", api_path("consumers", vhost), what=f"list consumers in vhost {vhost!r}", ok=(400, 404)
    )
    listed: dict[str, int] = {}
    for consumer in response.json() if response.status_code == 200 else []:
        name = (consumer.get("queue") or {}).get("name")
        if name is not None and (names is None or name in names):
            listed[name] = listed.get(name, 0) + 1
    if complete_listing and response.status_code == 200:
        return dict(listed) if names is None else {name: listed.get(name, 0) for name in names}
    queues = client.get(
        api_path("queues", vhost), what=f"count consumers in vhost {vhost!r}", params={"columns": "name,consumers"}
    )
    counts: dict[str, int | None] = {}
    for queue in queues:
        name, statistic = queue["name"], queue.get("consumers")
        if names is not None and name not in names:
            continue
        if statistic is None and name not in listed:
            counts[name] = None
        else:
            counts[name] = max(int(statistic or 0), listed.get(name, 0))
    return counts


def message_counts(client: ManagementClient, vhost: str, names: set[str] | None = None) -> dict[str, int | None]:
    """Messages per queue in a vhost (of `names`, or all), None where the broker cannot say.

    The totals-only listing is cheap but leaves streams out (no `messages` key) and lags a few seconds
    for quorum queues; streams are therefore asked one by one, with stats, which does count them.
    """
    queues = client.get(
        api_path("queues", vhost),
        what=f"count messages in vhost {vhost!r}",
        params={"disable_stats": "true", "enable_queue_totals": "true", "columns": "name,messages"},
    )
    counts: dict[str, int | None] = {}
    for queue in queues:
        name = queue["name"]
        if names is not None and name not in names:
            continue
        count = queue.get("messages")
        if count is None:
            detail = client.get_or_none(api_path("queues", vhost, name), what=f"count messages in queue {name!r}")
            count = (detail or {}).get("messages")
        counts[name] = int(count) if count is not None else None
    return counts
