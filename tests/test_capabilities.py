"""What the broker can do, and the plan-time refusals that follow from it (pure logic, no broker).

The same rules run against real 3.10 and 4.3 nodes in test_integration_versions.py.
"""

from __future__ import annotations

import pytest

from topo.capabilities import Capabilities, from_overview
from topo.compat import ANY_PATCH
from topo.diff import Action, Change
from topo.engine import check_against_broker, check_protected
from topo.errors import ValidationFailed
from topo.state import OFFLINE, Actual, Desired, Key, Kind, Location, Obj


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3.10.8", (3, 10, 8)),
        ("4.3.6", (4, 3, 6)),
        ("4.1.0-rc.1", (4, 1, 0)),
        ("4.0", (4, 0, ANY_PATCH)),
        ("", (0, 0, 0)),
        ("unknown", (0, 0, 0)),
    ],
)
def test_the_release_is_read_by_the_one_version_parser(text: str, expected: tuple[int, int, int]) -> None:
    assert Capabilities(text).release == expected


def test_what_follows_from_the_version() -> None:
    old, new, unknown = Capabilities("3.10.8"), Capabilities("4.3.6"), Capabilities("")
    assert not old.stores_default_queue_type and new.stores_default_queue_type
    assert not old.policy_apply_to_queue_types and new.policy_apply_to_queue_types
    assert "x-local-random" not in old.builtin_exchange_types and "x-local-random" in new.builtin_exchange_types
    assert not old.deletion_protection and new.deletion_protection and not Capabilities("4.0.5").deletion_protection
    assert not Capabilities("4.1.4").protected_users and new.protected_users
    assert not old.always_default_queue_type and new.always_default_queue_type
    # An unknown version is neither old nor new: nothing is refused or dropped for it.
    assert unknown.stores_default_queue_type and not unknown.deletion_protection
    assert unknown.refusals("policy", {"ha-mode": "all"}) == []


def test_built_from_the_overview_and_optional_listings() -> None:
    info = {"rabbitmq_version": "4.3.6", "exchange_types": [{"name": "direct"}, {"name": "x-local-random"}]}
    caps = from_overview(info)
    assert caps.exchange_types == {"direct", "x-local-random"}
    # Listings the user may not read are unknown, not empty.
    assert caps.plugins is None and caps.feature_flags is None and caps.deprecated_feature_names is None
    used = ({"name": "transient_nonexcl_queues", "deprecation_phase": "permitted_by_default"},)
    caps = from_overview(info, {"plugins": frozenset({"rabbitmq_mqtt"}), "deprecated_features_used": used})
    assert caps.plugins == {"rabbitmq_mqtt"} and caps.deprecated_feature_names == ("transient_nonexcl_queues",)


def _desired(*objects: Obj) -> Desired:
    desired = Desired()
    for obj in objects:
        desired.objects[obj.key] = obj
        desired.locations[obj.key] = Location("topology.yaml")
    return desired


def _actual(version: str, *objects: Obj) -> Actual:
    actual = Actual(OFFLINE, capabilities=Capabilities(version), version=version)
    for obj in objects:
        actual.objects[obj.key] = obj
    return actual


def test_removed_policy_keys_and_queue_arguments_are_refused_on_the_version_that_refuses_them() -> None:
    policy = Obj(Key(Kind.POLICY, "v", "mirror"), {"pattern": ".*", "apply-to": "queues", "priority": 0,
                                                     "definition": {"ha-mode": "all", "max-length": 5}})  # fmt: skip
    queue = Obj(Key(Kind.QUEUE, "v", "old"), {"type": "classic", "durable": True, "auto_delete": False,
                                               "arguments": {"x-queue-version": 1}})  # fmt: skip
    desired = _desired(policy, queue)
    check_against_broker(desired, _actual("3.10.8"))  # accepted there
    with pytest.raises(ValidationFailed) as raised:
        check_against_broker(desired, _actual("4.3.6"))
    found = {problem.path: problem.message for problem in raised.value.problems}
    assert set(found) == {"policies['mirror'].definition.ha-mode", "queues['old'].arguments.x-queue-version"}
    assert "use quorum queues" in found["policies['mirror'].definition.ha-mode"]
    assert "use x-queue-version: 2" in found["queues['old'].arguments.x-queue-version"]


def test_protected_objects_are_refused_at_plan_time() -> None:
    vhost = Obj(Key(Kind.VHOST, "keep", "keep"), {"protected_from_deletion": True})
    user = Obj(Key(Kind.USER, "", "svc"), {"tags": ["protected"]})
    queue = Obj(Key(Kind.QUEUE, "v", "owned"), {"type": "classic"})
    changes = [
        Change(Action.DELETE, vhost.key, dict(vhost.attrs), None),
        Change(Action.UPDATE, user.key, dict(user.attrs), {"tags": ["management"]}),
        Change(Action.DELETE, queue.key, dict(queue.attrs), None),
    ]
    desired = _desired()
    with pytest.raises(ValidationFailed) as raised:
        check_protected(desired, changes, _actual("4.3.6", vhost, user, queue), {queue.key: "owned by the broker"})
    messages = {problem.path: problem.message for problem in raised.value.problems}
    assert len(messages) == 3
    assert "vhost 'keep' is protected from deletion" in messages["vhosts['keep']"]
    assert "user 'svc' is tagged protected" in messages["users['svc']"]
    assert "refuses to change it" in messages["users['svc']"]
    assert "queue 'owned' is protected from deletion (owned by the broker)" in messages["queues['owned']"]
    # Before 4.2 `protected` is a tag like any other; an unprotected vhost may be deleted.
    check_protected(desired, changes[1:2], _actual("4.1.4", user))
    check_protected(desired, changes[:1], _actual("4.3.6", Obj(vhost.key, {"protected_from_deletion": False})))


def test_queue_argument_refusals_are_judged_once_per_argument_set_and_value_type() -> None:
    """The cache behind queue_argument_refusals keys on each value's type too: True and 1 hash alike, but
    x-queue-version: true is not x-queue-version: 1. Whatever was asked before, the answer is the uncached one."""
    from topo.capabilities import _queue_argument_refusals

    broker = Capabilities(version="4.3.6")
    cases = [
        ("classic", {"x-queue-version": True}),
        ("classic", {"x-queue-version": 1}),
        ("classic", {"x-queue-version": 1.0}),
        ("classic", {"x-queue-version": 2}),
        ("classic", {"x-message-ttl": 60000, "x-queue-version": 1}),
        ("quorum", {"x-queue-version": 1}),
        ("classic", {"x-dead-letter-routing-keys": ["a"]}),  # a list: not hashable, judged each time
    ]
    for _ in range(2):
        for queue_type, arguments in cases:
            expected = _queue_argument_refusals("4.3.6", queue_type, arguments)
            assert broker.queue_argument_refusals(queue_type, arguments) == expected, (queue_type, arguments)
    assert [name for name, _ in broker.queue_argument_refusals("classic", {"x-queue-version": 1})] == [
        "x-queue-version"
    ]
