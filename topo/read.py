"""Broker -> actual state, with as few requests as possible: read_broker is the one reader.

One GET of definitions (per vhost when only one is managed; per-object listings for non-administrators),
plus /api/vhosts for metadata that definitions lack, /api/whoami for the connected identity, and the
user, permission and broker-wide listings when asked for. Each kind reads its own sections. Message
counts are fetched later, only for queues the plan would destroy.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import requests

from topo import holding
from topo.apipath import api_path
from topo.capabilities import Capabilities, read_capabilities
from topo.client import ManagementClient
from topo.errors import BrokerError, TopoError
from topo.first_read import EarlyDefinitions, Unreadable, read_definitions, request_for
from topo.kinds import definition, registry
from topo.kinds.base import KindDef, Scope
from topo.kinds.parameter import PARAMETER_SECTIONS
from topo.kinds.vhost import from_broker as vhost_from_broker
from topo.normalize import tags_of
from topo.state import Actual, Identity, Kind, Obj


def set_capabilities(actual: Actual, capabilities: Capabilities) -> None:
    actual.capabilities = capabilities
    actual.version = capabilities.version
    actual.exchange_types = set(capabilities.exchange_types)


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
    early: EarlyDefinitions | None = None,
) -> Reading:
    """Everything topo compares, for the given vhosts (None: every vhost) that exist: the one reader.

    Sent at once: the overview (version, exchange types), the vhost list (metadata that definitions
    lack), the connected user's identity, the definitions (of one vhost when only one is wanted, else of
    the broker; they also carry operator policies and limits, as parameters) and, if asked for, the user
    and permission listings. Definitions are for administrators: anyone else gets them assembled from the
    per-object listings it may read, and the result names the listings it was refused. `broker_wide`:
    the kinds outside vhosts to read too (global parameters), each from its own listing, under the same
    access policy. `early`: the definitions request, if already sent (topo.first_read).
    """
    wide = [definition(kind) for kind in dict.fromkeys(broker_wide)]
    wanted = None if vhosts is None else list(dict.fromkeys(vhosts))
    _, what, single = request_for(wanted)
    if early is not None and early.vhosts != wanted:
        early = None  # sent for other vhosts than the files turned out to declare
    capabilities, vhost_list, whoami, response, listed, wide_listings = _concurrently(
        lambda: read_capabilities(client, _concurrently),
        lambda: client.get("/api/vhosts", what="list vhosts", params={"disable_stats": "true"}),
        lambda: client.get("/api/whoami", what="read the connected user's tags"),
        (lambda: early.answer(client)) if early is not None else (lambda: read_definitions(client, wanted)),
        lambda: _access(client, access),
        lambda: [_broker_wide(client, kind, access) for kind in wide],
        first=3,  # the definitions: at N=10,000 it left 30-110 ms after the others, on the plan's critical path
    )
    identity = Identity(client.connection.user, frozenset(tags_of(whoami.get("tags"))))
    actual = Actual(identity, vhosts={item["name"] for item in vhost_list})
    set_capabilities(actual, capabilities)
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
    elif response is not None and single is not None:
        definitions = vhost_definitions(client, single, response, actual.notes)
        restore_internal_exchanges(client, capabilities, definitions, [single], single=True)
    elif response is not None:
        if response.status_code == 500:
            raise BrokerError(what, response.status_code, response.text[:300])
        definitions = response.json()
        restore_internal_exchanges(client, capabilities, definitions, sorted(keep), single=False)
    else:
        definitions = {}
    add_definitions(actual, definitions, default_vhost=single, keep=keep)
    for kind, items in zip(wide, wide_listings, strict=True):
        if items is None:
            refused.append(f"{kind.section.replace('_', ' ')} (they need the {kind.required_tag} tag)")
            continue
        for obj in kind.from_definitions(lambda section, items=items: (("", item) for item in items)):
            actual.objects[obj.key] = obj
    if listed is not None:
        _add_access(actual, *listed, keep=keep)
    else:
        holding.read_recorded(client, actual)  # what holds compare against (topic permissions they record)
    return Reading(actual, tuple(refused), access=listed is not None)


def read_actual(
    client: ManagementClient,
    vhosts: Iterable[str],
    access_control: bool = False,
    broker_wide: Iterable[Kind] = (),
    early: EarlyDefinitions | None = None,
) -> Actual:
    """The state `topo plan` compares: the given vhosts, users and access if the files manage them, and
    the `broker_wide` kinds the files declare."""
    access = Access.REQUIRED if access_control else Access.NONE
    return read_broker(client, list(vhosts), access, broker_wide, early).actual


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
    notes = list(actual.notes)
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


def _concurrently(*calls: Callable[[], Any], first: int = 0) -> list[Any]:
    """Runs the calls at once and returns their results in order (the first error is raised).

    Daemon threads rather than an executor: an executor's threads are joined when the interpreter
    exits, so a read abandoned for a file error would keep topo waiting for a silent broker. The call at
    index `first` starts before the others: the longest request, so that it leaves before the short ones
    (and the file being parsed meanwhile) take the interpreter lock.
    """
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException | None] = [None] * len(calls)

    def run(index: int) -> None:
        try:
            results[index] = calls[index]()
        except BaseException as exc:  # re-raised in the caller's thread below
            errors[index] = exc

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(calls))]
    for thread in (threads[first], *threads[:first], *threads[first + 1 :]):
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


def vhost_definitions(
    client: ManagementClient, vhost: str, response: requests.Response | Unreadable, notes: list[str]
) -> dict[str, Any]:
    """One vhost's definitions, or its listings when the broker cannot give them.

    RabbitMQ 4.x breaks GET /api/definitions/{vhost} for a vhost with non-ASCII characters in its name
    (4.0: HTTP 500; 4.3: HTTP 200 with a truncated body); its listings are still right.
    """
    if isinstance(response, Unreadable):
        problem = response.reason
    else:
        problem = f"HTTP {response.status_code}" if response.status_code != 200 else ""
    if not problem:
        try:
            body = response.json()
        except ValueError:
            problem = f"a truncated body ({len(response.content)} bytes)"
        else:
            if isinstance(body, dict):
                return body
            problem = "a body that is not an object"
    notes.append(
        f"read vhost {vhost!r} from its listings: its definitions (GET /api/definitions/{{vhost}}) came back "
        f"with {problem}, as RabbitMQ 4.x does for vhost names with non-ASCII characters"
    )
    definitions = _listings(client, [vhost])
    definitions.pop(REFUSED, None)
    return definitions


def restore_internal_exchanges(
    client: ManagementClient, capabilities: Capabilities, definitions: dict[str, Any], vhosts: list[str], single: bool
) -> None:
    """Puts back what 4.x definitions leave out: internal exchanges, and the `internal` flag of the others.

    RabbitMQ 4.3's GET /api/definitions omits exchanges with internal: true and the key itself from the
    rest; the exchange listing still has both. Without this, an internal exchange would be planned for
    creation on every run (and never converge).
    """
    if not capabilities.definitions_omit_internal_exchanges or not isinstance(definitions.get("exchanges"), list):
        return
    params = {"disable_stats": "true", "columns": _COLUMNS["exchanges"]}
    if single:
        what = f"list exchanges of vhost {vhosts[0]!r}"
        listed = client.get_or_none(api_path("exchanges", vhosts[0]), what=what, params=params)
    else:
        listed = client.get("/api/exchanges", what="list exchanges", params=params)
    internal = {(item["vhost"], item["name"]) for item in listed or [] if item.get("internal")}
    present = set()
    for item in definitions["exchanges"]:
        where = (vhosts[0] if single else item.get("vhost"), item.get("name"))
        present.add(where)
        item.setdefault("internal", where in internal)
    for item in listed or []:
        if item.get("internal") and (item["vhost"], item["name"]) not in present:
            fields = ("name", "type", "durable", "auto_delete", "internal", "arguments", *([] if single else ["vhost"]))
            entry = {k: item[k] for k in fields if k in item}
            definitions["exchanges"].append(entry)


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
        listings = {}
        for section, columns in _COLUMNS.items():
            params = {"disable_stats": "true", "columns": columns}
            response = client.request(
                "GET", api_path(section, vhost), what=f"list {section} of vhost {vhost!r}", params=params, ok=(401, 404)
            )
            listings[section] = response.json() if response.status_code == 200 else None
            if response.status_code == 401:
                break
        if response.status_code == 401:
            # No permissions on the vhost: RabbitMQ 3.x answers 401, 4.x 404 (as for a missing vhost). Both
            # read as "not there", so the plan names it the same way on every version.
            continue
        for section, listing in listings.items():
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


def internal_queues(client: ManagementClient, vhost: str) -> dict[str, str]:
    """Queues of `vhost` that an internal component owns (RabbitMQ 4.1+ refuses to delete them): name -> owner."""
    listing = client.get_or_none(
        api_path("queues", vhost),
        what=f"list protected queues of vhost {vhost!r}",
        params={"disable_stats": "true", "columns": "name,internal,internal_owner"},
    )
    found = {}
    for queue in listing or []:
        if queue.get("internal") is True:
            owner = queue.get("internal_owner")
            if isinstance(owner, dict) and owner.get("name"):
                found[queue["name"]] = f"owned by {owner.get('kind', 'object')} {owner['name']!r}"
            else:
                found[queue["name"]] = "owned by the broker"
    return found


def consumer_counts(
    client: ManagementClient,
    vhost: str,
    names: set[str] | None = None,
    complete_listing: bool = False,
    own: Mapping[str, int] | None = None,
) -> dict[str, int | None]:
    """Consumers per queue in a vhost (of `names`, or all); None where the broker cannot say.

    Two sources, both refreshed every statistics interval (5 s by default), so both lag subscriptions:
    /api/consumers lists every consumer, but to users tagged neither administrator nor monitoring
    only their own (`complete_listing` says the connected user sees all); the queue listing's
    `consumers` statistic is there for every user, but absent for a queue until its first round
    (or everywhere, when the broker's statistics are disabled). Without a complete listing the
    larger of the two counts, and a queue with neither is None.

    `own`: per queue, how many of topo's own migration shovels consume from it (a killed migration's
    shovel keeps running); they are not the applications' consumers. A shovel consumes through a direct
    connection, listed with the user "none", so in the listing only such consumers are taken off.
    """
    response = client.request(
        "GET", api_path("consumers", vhost), what=f"list consumers in vhost {vhost!r}", ok=(400, 404)
    )
    own = own or {}
    listed: dict[str, int] = {}
    internal: dict[str, int] = {}
    for consumer in response.json() if response.status_code == 200 else []:
        name = (consumer.get("queue") or {}).get("name")
        if name is not None and (names is None or name in names):
            if (consumer.get("channel_details") or {}).get("user") == "none" and internal.get(name, 0) < own.get(
                name, 0
            ):
                internal[name] = internal.get(name, 0) + 1
                continue
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
            counts[name] = max(int(statistic or 0) - own.get(name, 0), listed.get(name, 0), 0)
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
