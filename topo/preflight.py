"""What the broker would refuse, found before the first request: a plan must not fail halfway.

Two passes: `offline` needs only the files (run by validate and plan), `against_broker` also needs the
broker's state and the planned changes (run by plan). Both return problems, never raise, so that every
problem is reported at once. `explain` adds to the plan the reasons a reader needs (what a vhost delete
destroys, why an untyped queue is replaced). Checks that cannot be made in advance are listed in
docs/topology.md ("What plan cannot check in advance").
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from topo.arguments import EXCHANGE_ARGUMENTS, QUEUE_ARGUMENTS
from topo.compat import ANY_PATCH, NEWEST_KNOWN, TOPIC_PERMISSION_NEEDS_EXCHANGE, version_text
from topo.errors import Problem, TopoError
from topo.normalize import tags_of
from topo.policies import definition_problems, near_miss
from topo.salvage import raw_at
from topo.state import Actual, Desired, Key, Kind, Location

if TYPE_CHECKING:
    from topo.client import ManagementClient
    from topo.diff import Change


def _path_text(path: tuple[Any, ...]) -> str:
    from topo.load import format_path  # load imports this module

    return format_path(path)


def _problem(desired: Desired, key: Key, path: tuple[Any, ...], sub: tuple[Any, ...], reason: str) -> Problem:
    where = desired.locations.get(key)
    if where is None:
        return Problem("?", None, _path_text((*path, *sub)), reason)
    line = Location(where.file, where.root, (*where.path, *sub)).line
    return Problem(where.file, line, _path_text((*where.path, *sub)), reason)


def _user_of(key: Key, attrs: dict[str, Any]) -> str:
    return key.name if key.kind is Kind.PERMISSION else attrs["user"]


def offline(desired: Desired) -> list[Problem]:
    """Problems found in the files alone; appends warnings (legal but probably wrong) to desired."""
    problems: list[Problem] = []
    for key, obj in desired.objects.items():
        if key.kind in (Kind.PERMISSION, Kind.TOPIC_PERMISSION):
            user = _user_of(key, obj.attrs)
            if Key(Kind.USER, "", user) in desired.absent:
                reason = (
                    f"user {user!r} is declared absent in the files: deleting the user deletes its access, so this "
                    "would never converge (declare the entry absent, or keep the user)"
                )
                problems.append(_problem(desired, key, (), (), reason))
            if key.kind is Kind.TOPIC_PERMISSION and Key(Kind.EXCHANGE, key.vhost, obj.attrs["exchange"]) in (
                desired.absent
            ):
                reason = f"exchange {obj.attrs['exchange']!r} is declared absent in vhost {key.vhost!r}"
                problems.append(_problem(desired, key, (), (), reason))
        elif key.kind in (Kind.QUEUE, Kind.EXCHANGE):
            _argument_warnings(desired, key, obj.attrs["arguments"])
        elif key.kind is Kind.PARAMETER:
            for field, reason in _uri_problems(obj.attrs["value"]):
                problems.append(_problem(desired, key, (), (field,), reason))
        if key.kind is Kind.TOPIC_PERMISSION:
            exchange = desired.objects.get(Key(Kind.EXCHANGE, key.vhost, obj.attrs["exchange"]))
            if exchange is not None and exchange.attrs["type"] != "topic":
                desired.warnings.append(
                    f"{desired.locations.get(key)}: topic permission of {obj.attrs['user']!r} on exchange "
                    f"{obj.attrs['exchange']!r}, which is a {exchange.attrs['type']} exchange: RabbitMQ applies "
                    "topic permissions to topic exchanges only"
                )
    return problems


OLDEST_SUPPORTED = (3, 10, ANY_PATCH)


def policy_problems_on_every_version(operator: bool, definition: dict[str, Any]) -> list[tuple[str, str]]:
    """The parts of a policy definition that every RabbitMQ version topo knows refuses (a misspelt key, a
    TTL written as text): `validate` can report those without a broker. What only some versions refuse
    (ha-* on 4.x, a key newer than 3.10) waits for `plan`, which knows the broker's version."""
    oldest = dict(definition_problems(definition, operator, OLDEST_SUPPORTED))
    newest = dict(definition_problems(definition, operator, NEWEST_KNOWN))
    span = f"RabbitMQ {version_text(OLDEST_SUPPORTED)} to {version_text(NEWEST_KNOWN)}"
    suffix = f"checked for RabbitMQ {version_text(OLDEST_SUPPORTED)}"
    return [
        (field, reason.replace(suffix, f"refused by every version topo knows ({span})"))
        for field, reason in oldest.items()
        if field in newest
    ]


def policy_problems_offline(desired: Desired) -> list[Problem]:
    """For `validate`: the policy definitions no broker would take. (`plan` checks them for the broker's
    version instead, and `topo lint` for a target version, so the load itself leaves them alone.)"""
    problems = []
    for key, obj in desired.objects.items():
        if key.kind in (Kind.POLICY, Kind.OPERATOR_POLICY):
            definition = obj.attrs.get("definition") or {}
            for field, reason in policy_problems_on_every_version(key.kind is Kind.OPERATOR_POLICY, definition):
                problems.append(_problem(desired, key, (), ("definition", field), reason))
    return problems


URI_FIELDS = ("src-uri", "dest-uri", "uri")


def _uri_problems(value: Any) -> list[tuple[str, str]]:
    """Shovel and federation URIs the plugins refuse: another scheme than amqp/amqps, a bad port.
    (Their query parameters are the plugins' to check.) Never echoes a URI: it may hold a password."""
    if not isinstance(value, dict):
        return []
    problems = []
    for field in URI_FIELDS:
        uris = value.get(field)
        for index, uri in enumerate(uris if isinstance(uris, list) else [uris] if uris is not None else []):
            which = f"the {index + 1}. URI" if isinstance(uris, list) else "the URI"
            if not isinstance(uri, str):
                problems.append((field, f"{which} must be a string"))
                continue
            scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
            if scheme not in ("amqp", "amqps"):
                problems.append((field, f"{which} must start with amqp:// or amqps://"))
                continue
            # The port by hand: urlsplit refuses both a non-number and a number out of range alike.
            host = urlsplit(uri).netloc.rpartition("@")[2].rpartition("]")[2]
            port = host.rpartition(":")[2] if ":" in host else ""
            if port and not port.isdigit():
                # Usually a password with / @ : # ? in it, which ends the host part early.
                problems.append(
                    (
                        field,
                        f"{which} does not parse (its port is not a number): percent-encode @ / : # ? and "
                        "spaces in the user and password",
                    )
                )
            elif port and not 0 < int(port) < 65536:
                problems.append((field, f"{which} has an invalid port: use a number from 1 to 65535"))
    return problems


def _argument_warnings(desired: Desired, key: Key, arguments: dict[str, Any]) -> None:
    """Arguments RabbitMQ does not know are stored and do nothing (classic queues and exchanges keep
    them; quorum queues and streams reject them, which the model already refuses)."""
    known = QUEUE_ARGUMENTS if key.kind is Kind.QUEUE else EXCHANGE_ARGUMENTS
    for name in arguments:
        if name in known:
            continue
        close = near_miss(name, list(known)) or (f"x-{name}" if f"x-{name}" in known else None)
        # Unknown x- queue arguments are worth a word even without a near miss; other names may be a
        # plugin's (exchange types such as x-consistent-hash read arguments of their own).
        if close is None and not (key.kind is Kind.QUEUE and name.startswith("x-")):
            continue
        hint = f"did you mean {close!r}?" if close else "a plugin may read it"
        desired.warnings.append(
            f"{desired.locations.get(key)}: {key.kind.value} {key.name!r} has argument {name!r}, which RabbitMQ "
            f"does not know ({hint}): the broker stores it, and it does nothing otherwise"
        )


def against_broker(
    desired: Desired, actual: Actual, changes: list[Change], warnings: list[str] | None = None
) -> list[Problem]:
    """Problems only the broker's state shows: what a request would be refused for. Appends to
    `warnings` what the broker accepts but is probably wrong."""
    from topo.diff import Action  # the diff (holding, migrate) is for plans: validate does without it

    problems: list[Problem] = []
    warnings = [] if warnings is None else warnings
    deleted = {c.key for c in changes if c.action is Action.DELETE}
    can_list_users = "administrator" in actual.my_tags
    for key in sorted(desired.external):
        if key not in actual.objects:
            where = "does not exist on the broker" if key.vhost in actual.vhosts else "is in a vhost the broker lacks"
            reason = (
                f"external {key.kind.value} {key.name!r} {where} (vhost {key.vhost!r}); topo does not create "
                "external objects: create it first, or declare it here without external: true"
            )
            problems.append(_problem(desired, key, (), (), reason))
    for key, obj in desired.objects.items():
        if key.kind in (Kind.PERMISSION, Kind.TOPIC_PERMISSION) and can_list_users:
            user = Key(Kind.USER, "", _user_of(key, obj.attrs))
            if user not in desired.objects and (user not in actual.objects or user in deleted):
                reason = (
                    f"user {user.name!r} exists neither in the files nor on the broker: the broker refuses "
                    "access for it (vhost_or_user_not_found); declare the user under users:"
                )
                problems.append(_problem(desired, key, (), (), reason))
        if key.kind is Kind.TOPIC_PERMISSION:
            problem = _topic_exchange_check(desired, actual, key, obj.attrs, deleted, warnings)
            if problem is not None:
                problems.append(problem)
    problems.extend(_queue_limit_problems(desired, actual, changes))
    return problems


def _topic_exchange_check(
    desired: Desired, actual: Actual, key: Key, attrs: dict[str, Any], deleted: set[Key], warnings: list[str]
) -> Problem | None:
    """A topic permission on an exchange that exists nowhere. Whether the broker refuses it depends on its
    version (compat.TOPIC_PERMISSION_NEEDS_EXCHANGE): then it is a problem. Older versions store it, and
    applications may declare the exchange later, so it is a warning there. A near miss is probably a typo."""
    name = attrs["exchange"]
    exchange = Key(Kind.EXCHANGE, key.vhost, name)
    if name == "" or name.startswith("amq.") or exchange in desired.objects or exchange in desired.external:
        return None
    if exchange in actual.objects and exchange not in deleted:
        return None
    names = sorted(
        {k.name for k in (*desired.objects, *actual.objects) if k.kind is Kind.EXCHANGE and k.vhost == key.vhost}
    )
    close = near_miss(name, names)
    hint = f" (did you mean {close!r}?)" if close else ""
    nowhere = f"exchange {name!r}, which exists neither in the files nor on the broker (vhost {key.vhost!r}){hint}"
    if actual.capabilities.topic_permission_needs_exchange:
        reason = (
            f"topic permission of {attrs['user']!r} on {nowhere}: RabbitMQ {actual.capabilities.version} refuses "
            "a topic permission for a missing exchange (no_such_exchange); declare the exchange, or mark it "
            "`external: true` once it exists"
        )
        return _problem(desired, key, (), (), reason)
    broker = " ".join(filter(None, ("RabbitMQ", actual.capabilities.version)))
    newer, newer_minor, _ = TOPIC_PERMISSION_NEEDS_EXCHANGE
    warnings.append(
        f"{desired.locations.get(key)}: topic permission of {attrs['user']!r} on {nowhere}: {broker} stores it, "
        f"and it applies only once such an exchange exists (RabbitMQ {newer}.{newer_minor} and newer refuse it)"
    )
    return None


def _queue_limit_problems(desired: Desired, actual: Actual, changes: list[Change]) -> list[Problem]:
    """A vhost's max-queues limit (declared, or the broker's) that the planned queues would exceed: the
    broker refuses each queue beyond it ("queue limit in vhost ... is reached")."""
    from topo.diff import Action  # the diff (holding, migrate) is for plans: validate does without it

    problems = []
    for vhost in desired.vhosts:
        limit_key = Key(Kind.VHOST_LIMIT, vhost, "max-queues")
        limit = desired.objects.get(limit_key) or (
            None if limit_key in desired.absent else actual.objects.get(limit_key)
        )
        if limit is None or type(limit.attrs["value"]) is not int or limit.attrs["value"] < 0:
            continue
        queues = {k for k in actual.objects if k.kind is Kind.QUEUE and k.vhost == vhost}
        for change in changes:
            if change.kind is Kind.QUEUE and change.key.vhost == vhost:
                if change.action is Action.CREATE:
                    queues.add(change.key)
                elif change.action is Action.DELETE:
                    queues.discard(change.key)
        created = any(c.kind is Kind.QUEUE and c.action is Action.CREATE and c.key.vhost == vhost for c in changes)
        if created and len(queues) > limit.attrs["value"]:
            reason = (
                f"vhost {vhost!r} would have {len(queues)} queues, more than its max-queues limit of "
                f"{limit.attrs['value']}: the broker refuses the queues beyond it; raise the limit or declare fewer"
            )
            key = limit_key if limit_key in desired.locations else Key(Kind.VHOST, vhost, vhost)
            problems.append(_problem(desired, key, (), (), reason))
    return problems


def refuse_before_reading(client: ManagementClient, desired: Desired, manages_access: bool) -> None:
    """A user without the administrator tag whose files declare users or permissions: refused before
    the listings that would fail (the README promises the refusal comes first)."""
    if not manages_access:
        return
    whoami = client.get("/api/whoami", what="read the connected user's tags")
    tags = tags_of(whoami.get("tags"))
    if "administrator" in tags:
        return
    kinds = sorted({key.kind.value for key in (*desired.objects, *desired.absent) if key.kind in _ACCESS})
    kinds += [f"{kind.value}s of vhost {vhost!r}" for kind, vhost in sorted(desired.access)][:5]
    user = client.connection.user
    raise TopoError(
        f"user {user!r} (tags: {', '.join(tags) or 'none'}) may not manage users and permissions, which the files "
        f"declare ({', '.join(kinds)}): that needs the administrator tag.\n"
        "Run topo as a user with that tag, or leave users and permissions out of the files."
    )


_ACCESS = frozenset({Kind.USER, Kind.USER_LIMIT})


def explain(changes: list[Change], desired: Desired, actual: Actual) -> list[Change]:
    """The changes, with reasons a reader needs that the diff cannot know: what a vhost delete takes
    with it, and why a queue declared without a type is replaced."""
    from topo.diff import Action  # the diff (holding, migrate) is for plans: validate does without it

    contents: dict[str, dict[Kind, int]] = {}
    for key in actual.objects:
        if key.kind is not Kind.VHOST:
            counts = contents.setdefault(key.vhost, {})
            counts[key.kind] = counts.get(key.kind, 0) + 1
    explained = []
    for change in changes:
        if change.kind is Kind.VHOST and change.action is Action.DELETE:
            held = contents.get(change.key.vhost, {})
            parts = [_count(n, kind) for kind, n in sorted(held.items(), key=lambda item: (-item[1], item[0]))]
            what = ", ".join(parts) if parts else "nothing topo manages"
            change = replace(change, reason=f"{change.reason or 'declared absent'}; destroys everything in it: {what}")
        elif change.kind is Kind.QUEUE and change.action is Action.REPLACE:
            before, after = change.before or {}, change.after or {}
            if before.get("type") != after.get("type") and not _declares_type(desired, change.key):
                if after.get("type") == "classic" and not _vhost_default(desired, change.key):
                    why = "declared without type, and its vhost sets no default_queue_type (any more), so it is classic"
                else:
                    why = f"declared without type, so it takes the vhost's default_queue_type {after.get('type')!r}"
                change = replace(change, reason=f"{change.reason}; {why}")
        explained.append(change)
    return explained


def _count(number: int, kind: Kind) -> str:
    noun = {Kind.VHOST_LIMIT: "limit", Kind.OPERATOR_POLICY: "operator policy"}.get(kind, kind.value.replace("_", " "))
    if number != 1:
        noun = noun[:-1] + "ies" if noun.endswith("y") else noun + "s"
    return f"{number} {noun}"


def _declares_type(desired: Desired, key: Key) -> bool:
    where = desired.locations.get(key)
    spec = raw_at(where.root, where.path) if where else None
    return not isinstance(spec, dict) or "type" in spec


def _vhost_default(desired: Desired, key: Key) -> bool:
    where = desired.locations.get(key)
    spec = raw_at(where.root, ("vhosts", key.vhost)) if where else None
    return isinstance(spec, dict) and spec.get("default_queue_type") is not None


def own_password_change(changes: list[Change], me: str) -> Change | None:
    """The change of the connected user's own password, if the plan has one: it must run last."""
    from topo.diff import Action  # the diff (holding, migrate) is for plans: validate does without it

    for change in changes:
        own = change.kind is Kind.USER and change.key.name == me and change.action is Action.UPDATE
        if own and "password" in change.changed_fields():
            return change
    return None


def with_new_password(client: ManagementClient, change: Change) -> ManagementClient | None:
    """A client that logs in with the password the change sets, or None when the files give only a hash."""
    plaintext = getattr((change.after or {}).get("password"), "plaintext", None)
    if plaintext is None:
        return None
    from topo.client import ManagementClient  # requests: only when logging in again, not for validate

    return ManagementClient(replace(client.connection, password=plaintext))
