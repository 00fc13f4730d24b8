"""The whole loop, wired: desired + broker -> plan; plan -> apply -> verify. No printing here."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from topo import holding, migrate, migrate_checks, preflight
from topo.apply import Progress, apply_plan, execute
from topo.client import ManagementClient
from topo.diff import Action, Change, diff
from topo.errors import ApplyFailed, BrokerError, NotConverged, Problem, TopoError, ValidationFailed
from topo.explain import policies_after
from topo.kinds import definition
from topo.normalize import tags_of
from topo.plan import Held, Plan, Step, where
from topo.read import broker_wide_kinds, consumer_counts, internal_queues, message_counts, read_actual
from topo.render import display_name
from topo.state import Actual, Desired, Key, Kind, Location


def manages_access(desired: Desired) -> bool:
    """The files declare users or access entries (or other broker-wide objects): reading them needs
    listings beyond the vhosts' own."""
    return declares_users_or_access(desired) or bool(broker_wide(desired))


def broker_wide(desired: Desired) -> list[Kind]:
    """The broker-wide kinds (global parameters) the files declare: only those are read and managed."""
    declared = {key.kind for key in (*desired.objects, *desired.absent)}
    return [kind for kind in broker_wide_kinds() if kind in declared]


def declares_users_or_access(desired: Desired) -> bool:
    users = any(key.kind in (Kind.USER, Kind.USER_LIMIT) for key in (*desired.objects, *desired.absent))
    return users or bool(desired.access)


def read_desired_scope(client: ManagementClient, desired: Desired) -> Actual:
    """What the broker has of everything the files manage."""
    return read_actual(client, scope(desired), declares_users_or_access(desired), broker_wide(desired))


def scope(desired: Desired) -> list[str]:
    return [*desired.vhosts, *desired.absent_vhosts]


def check_against_broker(
    desired: Desired, actual: Actual, changes: list[Change] | None = None, warnings: list[str] | None = None
) -> None:
    """What this broker would refuse in the files, before anything is changed: each kind decides (an
    exchange type needs its plugin, a policy's apply-to a version), and preflight.py checks what needs
    the planned changes too (users, external objects, limits); `warnings` gets what is only suspicious."""
    problems = preflight.against_broker(desired, actual, changes or [], warnings)
    for key, obj in desired.objects.items():
        where = desired.locations.get(key)
        for path, reason in definition(key.kind).broker_problems(obj, actual.capabilities):
            problems.append(_problem(where, path, reason))
    if problems:
        raise ValidationFailed(problems)


def check_protected(
    desired: Desired, changes: Iterable[Change], actual: Actual, protected_queues: dict[Key, str] | None = None
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


def _protected_queues(client: ManagementClient, changes: Iterable[Change], actual: Actual) -> dict[Key, str]:
    """Queues the plan deletes or replaces that the broker protects from deletion (read only then)."""
    if not actual.capabilities.protected_queues:
        return {}
    vhosts = {c.key.vhost for c in changes if c.kind is Kind.QUEUE and c.action in (Action.DELETE, Action.REPLACE)}
    found = {}
    for vhost in vhosts:
        for name, owner in internal_queues(client, vhost).items():
            found[Key(Kind.QUEUE, vhost, name)] = owner
    return found


def _problem(where: Location | None, path: str, reason: str) -> Problem:
    return Problem(where.file if where else "?", where.line if where else None, path, reason)


def check_privileges(changes: Iterable[Change], actual: Actual) -> None:
    """Refuses, before any request, a plan the connected user's tags do not allow."""
    if "administrator" in actual.my_tags:
        return
    missing = []
    for change in changes:
        tag = definition(change.kind).required_tag
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


def adapt_to_broker(desired: Desired, actual: Actual) -> tuple[Desired, list[str]]:
    """The desired state as this broker can store it (so nothing is planned forever), with warnings.

    A new Desired: the one given is left as it was (a plan never changes its inputs)."""
    warnings = []
    objects = {}
    for key, obj in desired.objects.items():
        adapted, warning = definition(key.kind).adapt(obj, actual.capabilities)
        objects[key] = adapted
        if warning:
            warnings.append(warning)
    return replace(desired, objects=objects), warnings


def build_plan(client: ManagementClient, desired: Desired, actual: Actual | None = None) -> Plan:
    """The plan; `actual` may be a read of exactly this scope made in advance (see cli)."""
    if actual is None:
        preflight.refuse_before_reading(client, desired, declares_users_or_access(desired))
        actual = read_desired_scope(client, desired)
    adapted, adapt_warnings = adapt_to_broker(desired, actual)
    result = diff(adapted, actual)
    warnings = [*desired.warnings, *actual.notes, *adapt_warnings]
    check_against_broker(desired, actual, result.changes, warnings)
    check_protected(desired, result.changes, actual, _protected_queues(client, result.changes, actual))
    check_privileges(result.changes, actual)
    sees_all = bool(actual.my_tags & {"administrator", "monitoring"})
    held = _count_messages(client, result.changes, warnings, sees_all, migrate.shovel_sources(actual))
    migrations = migrate.plan(
        desired,
        actual,
        result.changes,
        held,
        lambda v, n: message_counts(client, v, n),
        lambda planned: migrate_checks.problems(client, actual, planned),
    )
    result.changes[:] = migrate.without_moved_bindings(result.changes, migrations, actual)
    policies = policies_after(desired, actual, result.changes)
    changes = preflight.explain(result.changes, desired, actual)
    return Plan(
        tuple(changes),
        tuple(result.unmanaged),
        tuple(warnings),
        me=actual.me,
        held=held,
        effective_policies=policies,
        holds=result.holds,
        migrations=migrations,
    )


def _count_messages(
    client: ManagementClient,
    changes: list[Change],
    warnings: list[str],
    sees_all: bool,
    own_shovels: dict[str, dict[str, int]],
) -> dict[Key, Held]:
    """Message and consumer counts, only for the objects the plan destroys that hold messages (a queue;
    every queue of a vhost it deletes). `sees_all`: the connected user may list every consumer
    (administrator or monitoring tag); what the broker cannot say about consumers goes to `warnings`.
    `own_shovels`: per vhost and queue, topo's migration shovels reading it: not counted as consumers."""
    destructive = [
        c for c in changes if c.action in (Action.DELETE, Action.REPLACE) and definition(c.kind).holds_messages
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
    subscribed = {
        vhost: consumer_counts(
            client, vhost, None if vhost in whole_vhosts else wanted.get(vhost), sees_all, own_shovels.get(vhost)
        )
        for vhost in whole_vhosts | set(wanted)
    }
    unknown: dict[str, set[str]] = {}
    held = {}
    for change in destructive:
        found = counts[change.key.vhost]
        values = [found.get(change.key.name, 0)] if change.kind is Kind.QUEUE else list(found.values())
        consumers = subscribed[change.key.vhost]
        listed = {change.key.name: consumers.get(change.key.name)} if change.kind is Kind.QUEUE else consumers
        for name, count in listed.items():
            if count is None:
                unknown.setdefault(change.key.vhost, set()).add(name)
        # A count the broker cannot give is treated as messages: refusing is the safe mistake.
        held[change.key] = Held(
            sum(v for v in values if v is not None),
            any(v is None for v in values),
            sum(count or 0 for count in listed.values()),
        )
    for vhost, names in sorted(unknown.items()):
        shown = ", ".join(map(repr, sorted(names)[:5])) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        warnings.append(
            f"vhost {vhost!r}: the broker has no consumer statistics yet for queue(s) {shown} (they arrive every "
            "few seconds, or statistics are disabled on the broker): counted as unused; plan again to be sure"
        )
    return held


NOT_VERIFIED = "not verified"


def apply_and_verify(
    client: ManagementClient,
    desired: Desired,
    plan: Plan,
    *,
    allow_data_loss: bool,
    allow_disruption: bool = False,
    progress: Progress | None = None,
    notes: list[str] | None = None,
    report: migrate.Report | None = None,
) -> int:
    plan.raise_if_unsafe(allow_data_loss, plan.me, allow_disruption)
    # The connected user's own password changes last: every request after it would be refused.
    own = preflight.own_password_change(plan.changes, plan.me)
    rest = replace(plan, changes=tuple(c for c in plan.changes if c is not own)) if own else plan
    made: list[tuple[str, str]] = []  # the holds this apply recorded before its replaces (vhost, name)

    def run(changes: Plan) -> int:
        return apply_plan(
            client,
            changes,
            allow_data_loss=allow_data_loss,
            allow_disruption=allow_disruption,
            progress=progress,
            made=made,
        )

    count = migrate.apply(client, rest, run, allow_disruption, report) if rest.migrations else run(rest)
    if own is not None:
        step = Step(own, Action.UPDATE)
        try:
            execute(client, step, allow_data_loss)
        except BrokerError as exc:
            raise ApplyFailed(f"apply stopped: {exc}\n  done: {count} of {count + 1} steps; failed: 1") from None
        count += 1
        relogged = preflight.with_new_password(client, own)
        if relogged is None:
            if notes is not None:
                notes.append(
                    f"{NOT_VERIFIED}: the password of {plan.me!r}, the user topo is connected as, changed to the "
                    "password_hash in the files: the old password no longer works, and topo cannot log in again"
                )
            return count
        if notes is not None:
            notes.append(
                f"the password of {plan.me!r}, the user topo is connected as, changed: the old password no longer "
                "works (topo verified with the new one); update wherever topo's password is set"
            )
        client = relogged
    try:
        verified = verify(client, desired)
        # Only holds this apply made or planned with: another apply's may still be needed by it.
        holding.release(client, [*made, *((h.vhost, h.name) for h in plan.holds)], desired, verified)
    except BrokerError as exc:
        raise ApplyFailed(
            f"all {count} steps were applied, but reading the broker back to verify them failed: {exc}\n"
            "  Run topo plan to check: it shows anything still to do."
        ) from None
    return count


def release_seen(client: ManagementClient, desired: Desired, plan: Plan, actual: Actual) -> None:
    """An empty plan that saw holds: an apply was killed after restoring what they record, before it
    deleted them. `actual` is the read the plan was made from."""
    if plan.holds:
        holding.release(client, [(h.vhost, h.name) for h in plan.holds], desired, actual)


def verify(client: ManagementClient, desired: Desired) -> Actual:
    """Reads the broker again: anything still different was silently ignored or changed meanwhile.
    Returns the read (what holds are released against)."""
    actual = read_desired_scope(client, desired)
    remaining = diff(adapt_to_broker(desired, actual)[0], actual).changes
    if remaining:
        lines = "\n".join(
            f"  {c.action.value} {c.kind.value} {display_name(c.key, c.after or c.before)}{where(c.key)}"
            for c in remaining[:20]
        )
        raise NotConverged(
            f"the broker did not converge: {len(remaining)} change(s) still pending after apply:\n{lines}\n"
            "The broker accepted the requests but kept a different state (or something changed it meanwhile).",
            remaining,
        )
    return actual
