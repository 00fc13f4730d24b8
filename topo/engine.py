"""The whole loop, wired: desired + broker -> plan; plan -> apply -> verify. No printing here."""

from __future__ import annotations

from topo.apply import Progress, apply_plan
from topo.client import ManagementClient
from topo.diff import Action, Change, diff
from topo.errors import NotConverged, Problem, TopoError, ValidationFailed
from topo.normalize import tags_of
from topo.plan import Plan
from topo.read import internal_queues, message_counts, read_actual
from topo.render import display_name
from topo.state import Actual, Desired, Key, Kind, Location


def manages_access(desired: Desired) -> bool:
    users = any(key.kind in (Kind.USER, Kind.USER_LIMIT) for key in (*desired.objects, *desired.absent))
    return users or bool(desired.access)


def scope(desired: Desired) -> list[str]:
    return [*desired.vhosts, *desired.absent_vhosts]


def check_against_broker(desired: Desired, actual: Actual) -> None:
    """Checks that need the broker (see capabilities.Capabilities): plugin exchange types must be enabled
    there, policy apply-to values newer than the broker (3.12+) and keys, arguments and values the broker
    removed or denies (topo.compat: ha-* on 4.x, ...) are refused before any change."""
    caps = actual.capabilities
    problems = []
    for key, obj in desired.objects.items():
        where = desired.locations.get(key)
        if key.kind is Kind.EXCHANGE and actual.exchange_types and obj.attrs["type"] not in actual.exchange_types:
            reason = (
                f"exchange type {obj.attrs['type']!r} is not enabled on the broker (available: "
                f"{', '.join(sorted(actual.exchange_types))}); enable the plugin that provides it"
            )
            problems.append(_problem(where, f"exchanges[{key.name!r}].type", reason))
        elif key.kind in (Kind.POLICY, Kind.OPERATOR_POLICY):
            section = "policies" if key.kind is Kind.POLICY else "operator_policies"
            if not caps.policy_apply_to_queue_types and obj.attrs["apply-to"] not in ("all", "queues", "exchanges"):
                reason = (
                    f"apply-to {obj.attrs['apply-to']!r} needs RabbitMQ 3.12+ (the broker runs {actual.version}); "
                    "use all, queues or exchanges"
                )
                problems.append(_problem(where, f"{section}[{key.name!r}].apply-to", reason))
            for name, reason in caps.refusals(key.kind.value, obj.attrs.get("definition") or {}):
                problems.append(_problem(where, f"{section}[{key.name!r}].definition.{name}", reason))
        elif key.kind is Kind.VHOST and obj.attrs.get("protected_from_deletion") and not caps.deletion_protection:
            reason = f"deletion protection needs RabbitMQ 4.0.6+ (the broker runs {actual.version}); leave it out"
            problems.append(_problem(where, f"vhosts[{key.name!r}].protected_from_deletion", reason))
        elif key.kind is Kind.QUEUE:
            for name, reason in caps.refusals("queue_argument", obj.attrs.get("arguments") or {}):
                problems.append(_problem(where, f"queues[{key.name!r}].arguments.{name}", reason))
    if problems:
        raise ValidationFailed(problems)


def check_protected(
    desired: Desired, changes: list[Change], actual: Actual, protected_queues: dict[Key, str] | None = None
) -> None:
    """Refuses, before any request, changes the broker refuses to protected objects: deleting a vhost
    protected from deletion (4.0.6+), changing or deleting a user tagged `protected` (4.2+), and deleting
    or replacing a queue an internal component owns (4.1+; `protected_queues`: key -> its owner)."""
    problems = []
    for change in changes:
        have = actual.objects.get(change.key)
        if have is None:
            continue
        where = desired.locations.get(change.key)
        owner = (protected_queues or {}).get(change.key)
        if owner is not None and change.action in (Action.DELETE, Action.REPLACE):
            reason = (
                f"queue {change.key.name!r} is protected from deletion ({owner}): RabbitMQ {actual.version} "
                f"refuses to {change.action.value} it; leave it to its owner (declare it as it is, or not at all)"
            )
            problems.append(_problem(where, f"queues[{change.key.name!r}]", reason))
        elif change.kind is Kind.VHOST and change.action is Action.DELETE and have.attrs.get("protected_from_deletion"):
            reason = (
                f"vhost {change.key.name!r} is protected from deletion: RabbitMQ refuses to delete it (412). "
                "Set protected_from_deletion: false and apply first, then delete it"
            )
            problems.append(_problem(where, f"vhosts[{change.key.name!r}]", reason))
        elif (
            change.kind is Kind.USER
            and actual.capabilities.protected_users
            and "protected" in tags_of(have.attrs.get("tags"))
        ):
            verb = "delete" if change.action is Action.DELETE else "change"
            reason = (
                f"user {change.key.name!r} is tagged protected: RabbitMQ {actual.version} refuses to {verb} it "
                "through the HTTP API; leave it out of the files, or remove the tag with rabbitmqctl first"
            )
            problems.append(_problem(where, f"users[{change.key.name!r}]", reason))
    if problems:
        raise ValidationFailed(problems)


def _problem(where: Location | None, path: str, reason: str) -> Problem:
    return Problem(where.file if where else "?", where.line if where else None, path, reason)


# The user tag RabbitMQ requires to change each kind (exchanges, queues and bindings need permissions
# on the vhost instead, which the broker checks per request).
REQUIRED_TAG = {
    Kind.VHOST: "administrator",
    Kind.VHOST_LIMIT: "administrator",
    Kind.OPERATOR_POLICY: "administrator",
    Kind.USER: "administrator",
    Kind.USER_LIMIT: "administrator",
    Kind.PERMISSION: "administrator",
    Kind.TOPIC_PERMISSION: "administrator",
    Kind.POLICY: "policymaker",
    Kind.PARAMETER: "policymaker",
}


def check_privileges(changes: list[Change], actual: Actual) -> None:
    """Refuses, before any request, a plan the connected user's tags do not allow."""
    if "administrator" in actual.my_tags:
        return
    missing = []
    for change in changes:
        tag = REQUIRED_TAG.get(change.kind)
        if tag and tag not in actual.my_tags:
            name = display_name(change.key, change.after or change.before)
            why = f"needs the {tag} tag"
            if change.kind is Kind.VHOST and change.action is Action.CREATE:
                # A non-administrator sees only the vhosts it has permissions on.
                why = f"does not exist or {actual.me!r} has no permissions on it; creating a vhost {why}"
            missing.append(f"  {change.action.value} {change.kind.value} {name}: {why}")
    if missing:
        shown = "\n".join(missing[:20]) + (f"\n  … and {len(missing) - 20} more" if len(missing) > 20 else "")
        tags = ", ".join(sorted(actual.my_tags)) or "none"
        raise TopoError(
            f"user {actual.me!r} (tags: {tags}) may not make these changes:\n{shown}\n"
            "Run topo as a user with those tags, or leave these objects out of the files."
        )


def adapt_to_broker(desired: Desired, actual: Actual) -> list[str]:
    """Drops what this broker version cannot store (so it is not planned forever), with a warning."""
    warnings = []
    if not actual.capabilities.stores_default_queue_type:
        for key in desired.vhosts:
            obj = desired.objects.get(Key(Kind.VHOST, key, key))
            if obj is not None and obj.attrs.pop("default_queue_type", None) is not None:
                warnings.append(
                    f"vhost {key!r}: RabbitMQ {actual.version} does not store default_queue_type (3.11+); "
                    "topo still uses it as the type of queues declared without one"
                )
    return warnings


def build_plan(client: ManagementClient, desired: Desired, actual: Actual | None = None) -> Plan:
    """The plan; `actual` may be a read of exactly this scope made in advance (see cli)."""
    if actual is None:
        actual = read_actual(client, scope(desired), manages_access(desired))
    check_against_broker(desired, actual)
    warnings = [*desired.warnings, *actual.notes, *adapt_to_broker(desired, actual)]
    result = diff(desired, actual)
    check_protected(desired, result.changes, actual, _protected_queues(client, result.changes, actual))
    check_privileges(result.changes, actual)
    _count_messages(client, result.changes)
    return Plan(result.changes, result.unmanaged, warnings, me=actual.me)


def _protected_queues(client: ManagementClient, changes: list[Change], actual: Actual) -> dict[Key, str]:
    """Queues the plan deletes or replaces that the broker protects from deletion (read only then)."""
    if not actual.capabilities.protected_queues:
        return {}
    vhosts = {c.key.vhost for c in changes if c.kind is Kind.QUEUE and c.action in (Action.DELETE, Action.REPLACE)}
    return {
        Key(Kind.QUEUE, vhost, name): owner
        for vhost in vhosts
        for name, owner in internal_queues(client, vhost).items()
    }


def _count_messages(client: ManagementClient, changes: list[Change]) -> None:
    """Message counts, only for the queues the plan destroys (all queues of a vhost it deletes)."""
    destructive = [
        c for c in changes if c.action in (Action.DELETE, Action.REPLACE) and c.kind in (Kind.QUEUE, Kind.VHOST)
    ]
    whole_vhosts = {c.key.vhost for c in destructive if c.kind is Kind.VHOST}
    wanted: dict[str, set[str]] = {}
    for change in destructive:
        if change.kind is Kind.QUEUE:
            wanted.setdefault(change.key.vhost, set()).add(change.key.name)
    counts = {
        vhost: message_counts(client, vhost, None if vhost in whole_vhosts else wanted.get(vhost))
        for vhost in whole_vhosts | set(wanted)
    }
    for change in destructive:
        found = counts[change.key.vhost]
        values = [found.get(change.key.name, 0)] if change.kind is Kind.QUEUE else list(found.values())
        change.messages = sum(v for v in values if v is not None)
        # A count the broker cannot give is treated as messages: refusing is the safe mistake.
        change.messages_unknown = any(v is None for v in values)


def apply_and_verify(
    client: ManagementClient,
    desired: Desired,
    plan: Plan,
    *,
    allow_data_loss: bool,
    progress: Progress | None = None,
) -> int:
    plan.raise_if_unsafe(allow_data_loss, plan.me)
    count = apply_plan(client, plan, allow_data_loss=allow_data_loss, progress=progress)
    verify(client, desired)
    return count


def verify(client: ManagementClient, desired: Desired) -> None:
    """Reads the broker again: anything still different was silently ignored or changed meanwhile."""
    remaining = diff(desired, read_actual(client, scope(desired), manages_access(desired))).changes
    if remaining:
        lines = "\n".join(
            f"  {c.action.value} {c.kind.value} {display_name(c.key, c.after or c.before)} in vhost {c.key.vhost!r}"
            for c in remaining[:20]
        )
        raise NotConverged(
            f"the broker did not converge: {len(remaining)} change(s) still pending after apply:\n{lines}\n"
            "The broker accepted the requests but kept a different state (or something changed it meanwhile)."
        )
