"""Broker -> actual state, with as few requests as possible.

One GET of definitions (per vhost when only one is managed), plus /api/vhosts for metadata that
definitions lack, plus limits and operator policies, which definitions do not carry. Message counts are
fetched later, only for queues the plan would destroy.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

import requests

from topo.capabilities import Capabilities, read_capabilities
from topo.client import ManagementClient, api_path
from topo.errors import BrokerError, TopoError
from topo.normalize import (
    PARAMETER_SECTIONS,
    binding_from_broker,
    exchange_from_broker,
    limit_obj,
    parameter_obj,
    permission_obj,
    policy_from_broker,
    queue_from_broker,
    set_limits,
    strings_in,
    tags_of,
    topic_permission_obj,
    user_from_broker,
    user_limit_obj,
    vhost_from_broker,
)
from topo.redact import register_url_secret
from topo.state import ACCESS_KINDS, Actual, Kind, Obj


def set_capabilities(actual: Actual, capabilities: Capabilities) -> None:
    actual.capabilities = capabilities
    actual.version = capabilities.version
    actual.exchange_types = set(capabilities.exchange_types)


def read_actual(client: ManagementClient, vhosts: Iterable[str], access_control: bool = False) -> Actual:
    """Everything topo compares, for the given vhosts (those that exist).

    Three requests, sent at once: the overview (version, exchange types), the vhost list (metadata
    that definitions lack) and the definitions themselves, which also carry operator policies and
    limits (as parameters). Definitions of one vhost when only one is managed, else of the broker.
    """
    wanted = list(dict.fromkeys(vhosts))
    keep = set(wanted)
    notes: list[str] = []
    capabilities, vhost_list, definitions, access, whoami = _concurrently(
        lambda: read_capabilities(client, _concurrently),
        lambda: client.get("/api/vhosts", what="list vhosts", params={"disable_stats": "true"}),
        lambda: _definitions(client, wanted, notes) if wanted else None,
        lambda: _access(client) if access_control else None,
        lambda: client.get("/api/whoami", what="read the connected user's tags"),
    )
    actual = Actual(me=client.connection.user, my_tags=set(tags_of(whoami.get("tags"))), notes=notes)
    if access is not None:
        _add_access(actual, *access, keep=keep)
    for item in vhost_list:
        actual.vhosts.add(item["name"])
        if item["name"] in keep:
            _add(actual, vhost_from_broker(item))
    set_capabilities(actual, capabilities)
    if definitions is not None:
        restore_internal_exchanges(client, capabilities, definitions, wanted, single=len(wanted) == 1)
        add_definitions(actual, definitions, default_vhost=wanted[0], keep=keep & actual.vhosts)
    return actual


def read_for_export(
    client: ManagementClient, only: list[str] | None, with_users: bool
) -> tuple[Actual, list[str], bool, list[str]]:
    """Everything on the broker (or in the `only` vhosts), for export.

    Returns the state, the vhosts exported, whether users and permissions are in it, and notes for the
    user. Definitions need an administrator; anyone else gets the per-object listings of the vhosts it
    can see, without users and permissions.
    """
    notes: list[str] = []
    # One vhost: its own definitions (smaller on a busy broker), with users and access listed alongside.
    single = only[0] if only is not None and len(set(only)) == 1 else None
    path, what = ("/api/definitions", "read definitions")
    if single is not None:
        path, what = api_path("definitions", single), f"read definitions of vhost {single!r}"
    capabilities, vhost_list, response, access = _concurrently(
        lambda: read_capabilities(client, _concurrently),
        lambda: client.get("/api/vhosts", what="list vhosts", params={"disable_stats": "true"}),
        lambda: client.request("GET", path, what=what, ok=(400, 401, 404, 500)),
        lambda: _access_if_allowed(client) if single is not None and with_users else None,
    )
    names = [item["name"] for item in vhost_list]
    missing = [name for name in only or [] if name not in names]
    if missing:
        raise TopoError(
            f"no vhost {', '.join(map(repr, missing))} on the broker, or {client.connection.user!r} has no "
            f"permissions on it (vhosts visible: {', '.join(map(repr, sorted(names))) or 'none'})"
        )
    selected = sorted(set(only or names))
    actual = Actual(me=client.connection.user, vhosts=set(names))
    set_capabilities(actual, capabilities)
    for item in vhost_list:
        if item["name"] in selected:
            _add(actual, vhost_from_broker(item))
    if response.status_code in (400, 404) or (response.status_code == 500 and single is None):
        raise BrokerError(what, response.status_code, response.text[:300])
    # Definitions (and, for one vhost, users) are for administrators: others get what they may list.
    if response.status_code == 401:
        definitions = _listings(client, selected)
    else:
        definitions = vhost_definitions(client, single, response, notes) if single is not None else response.json()
        restore_internal_exchanges(client, capabilities, definitions, selected, single=single is not None)
    if with_users and (response.status_code == 401 or (single is not None and access is None)):
        notes.append(
            f"users and permissions left out: reading them needs the administrator tag, "
            f"which {client.connection.user!r} does not have"
        )
        with_users = False
    if with_users and access is not None:
        definitions["users"], definitions["permissions"], definitions["topic_permissions"] = access
    refused = definitions.pop(REFUSED, [])
    if refused:
        notes.append(
            f"left out what {client.connection.user!r} may not read (tags: policymaker for shovels and "
            f"federation, administrator for operator policies and limits): {', '.join(refused)}"
        )
    add_definitions(actual, definitions, default_vhost=single, keep=set(selected))
    if with_users:
        section = ("users", "permissions", "topic_permissions")
        _add_access(actual, *(definitions.get(name) or [] for name in section), keep=set(selected))
        if only is not None:
            keep_users_with_access(actual, selected)
    return actual, selected, with_users, notes


def _access_if_allowed(client: ManagementClient) -> list[Any] | None:
    """Users, permissions and topic permissions, or None when the user may not list them."""
    try:
        return _access(client)
    except BrokerError as exc:
        if exc.status != 401:
            raise
        return None


def _add_access(
    actual: Actual, users: list[Any], permissions: list[Any], topic_permissions: list[Any], keep: set[str]
) -> None:
    """Users with their limits, and their permissions and topic permissions in the `keep` vhosts."""
    for item in users:
        _add(actual, user_from_broker(item))
        for name, value in set_limits(item.get("limits")):
            _add(actual, user_limit_obj(item["name"], name, value))
    for item in permissions:
        if item.get("vhost") in keep:
            _add(actual, permission_obj(item["vhost"], item["user"], item["configure"], item["write"], item["read"]))
    for item in topic_permissions:
        if item.get("vhost") in keep:
            _add(
                actual, topic_permission_obj(item["vhost"], item["user"], item["exchange"], item["write"], item["read"])
            )


def keep_users_with_access(actual: Actual, vhosts: list[str]) -> None:
    """Leaves only the users with permissions or topic permissions in `vhosts` (and their limits)."""
    wanted = set(vhosts)
    users = {
        obj.key.name if obj.kind is Kind.PERMISSION else obj.attrs["user"]
        for obj in actual.objects.values()
        if obj.kind in ACCESS_KINDS and obj.key.vhost in wanted
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


def _access(client: ManagementClient) -> list[Any]:
    """Users, permissions and topic permissions (administrator-only listings)."""
    try:
        return _concurrently(
            lambda: client.get("/api/users", what="list users"),
            lambda: client.get("/api/permissions", what="list permissions"),
            lambda: client.get("/api/topic-permissions", what="list topic permissions"),
        )
    except BrokerError as exc:
        if exc.status != 401:
            raise
        raise BrokerError(
            exc.action,
            exc.status,
            f"{exc.reason}; the files declare users or permissions, which only a user tagged administrator "
            f"may manage ({client.connection.user!r} is not)",
        ) from None


def _definitions(client: ManagementClient, wanted: list[str], notes: list[str]) -> dict[str, Any]:
    if len(wanted) == 1:
        path = api_path("definitions", wanted[0])
        what = f"read definitions of vhost {wanted[0]!r}"
        # A vhost that does not exist yet answers 400 vhost_not_found (or 404): nothing to read then.
        response = client.request("GET", path, what=what, ok=(400, 401, 404, 500))
        if response.status_code == 401:
            return _listings(client, wanted)
        if response.status_code in (400, 404):
            return {}
        return vhost_definitions(client, wanted[0], response, notes)
    response = client.request("GET", "/api/definitions", what="read definitions", ok=(401,))
    return _listings(client, wanted) if response.status_code == 401 else response.json()


def vhost_definitions(
    client: ManagementClient, vhost: str, response: requests.Response, notes: list[str]
) -> dict[str, Any]:
    """One vhost's definitions, or its listings when the broker cannot give them.

    RabbitMQ 4.x breaks GET /api/definitions/{vhost} for a vhost with non-ASCII characters in its name
    (4.0: HTTP 500; 4.3: HTTP 200 with a truncated body); its listings are still right.
    """
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
    if single:
        listed = client.get_or_none(
            api_path("exchanges", vhosts[0]),
            what=f"list exchanges of vhost {vhosts[0]!r}",
            params={"disable_stats": "true", "columns": _COLUMNS["exchanges"]},
        )
    else:
        listed = client.get(
            "/api/exchanges", what="list exchanges", params={"disable_stats": "true", "columns": _COLUMNS["exchanges"]}
        )
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


def add_definitions(actual: Actual, definitions: dict[str, Any], default_vhost: str | None, keep: set[str]) -> None:
    """Adds the objects of a definitions export (whole broker or one vhost) in the `keep` vhosts."""

    def items(section: str) -> Iterable[tuple[str, dict[str, Any]]]:
        for item in definitions.get(section) or []:
            vhost = item.get("vhost", default_vhost)
            if vhost in keep:
                yield vhost, item

    for vhost, item in items("exchanges"):
        _add(actual, exchange_from_broker(vhost, item))
    for vhost, item in items("queues"):
        _add(actual, queue_from_broker(vhost, item))
    exported_queues = {(vhost, item["name"]) for vhost, item in items("queues") if not item.get("exclusive")}
    for vhost, item in items("bindings"):
        # Definitions leave out exclusive queues but not their bindings: a binding to a queue that is not
        # listed belongs to a connected client's exclusive queue, which topo never touches.
        if item.get("destination_type") == "queue" and (vhost, item["destination"]) not in exported_queues:
            continue
        _add(actual, binding_from_broker(vhost, item))
    for vhost, item in items("policies"):
        _add(actual, policy_from_broker(Kind.POLICY, vhost, item))
    for vhost, item in items("parameters"):
        component, value = item.get("component"), item.get("value")
        if component == "operator_policy" and isinstance(value, dict):
            _add(actual, policy_from_broker(Kind.OPERATOR_POLICY, vhost, {"name": item["name"], **value}))
        elif component in PARAMETER_SECTIONS:
            for text in strings_in(value):
                register_url_secret(text)  # shovel and federation URIs carry credentials
            _add(actual, parameter_obj(vhost, component, item["name"], value))
        elif component == "vhost-limits" and isinstance(value, dict):
            # After its last limit is removed the broker keeps the parameter with the value [].
            for name, limit in set_limits(value):
                _add(actual, limit_obj(vhost, name, limit))


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
