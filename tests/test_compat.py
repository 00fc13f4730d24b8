"""The version table (topo.compat): what each RabbitMQ version removed, denies, deprecates and accepts."""

from __future__ import annotations

import pytest

from topo.compat import (
    ANY_PATCH,
    CHANGES,
    DEPRECATED_FEATURES,
    HA_KEYS,
    Severity,
    default_delivery_limit,
    deprecated_feature_stage,
    parse_version,
    refusals,
    rules_for,
    version_text,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4.0", (4, 0, ANY_PATCH)),
        ("4.0.0", (4, 0, 0)),
        ("3.10.8", (3, 10, 8)),
        ("v4.3.5", (4, 3, 5)),
        ("4.3.6-1", (4, 3, 6)),
        ("4.0.0-rc.1", (4, 0, 0)),
        (" 3.13 ", (3, 13, ANY_PATCH)),
    ],
)
def test_parse_version(text: str, expected: tuple[int, int, int]) -> None:
    assert parse_version(text) == expected


@pytest.mark.parametrize("text", ["", "4", "four", "4.x", "4.0.0.0", "4..0"])
def test_parse_version_refuses_what_is_not_a_version(text: str) -> None:
    with pytest.raises(ValueError, match="is not a RabbitMQ version"):
        parse_version(text)


def test_version_text() -> None:
    assert version_text(parse_version("4.0")) == "4.0"
    assert version_text((4, 0, 0)) == "4.0.0"
    assert version_text((3, 10, 8)) == "3.10.8"


def severities(problems: list) -> dict[str, Severity]:
    return {problem.key: problem.severity for problem in problems}


def test_ha_keys_deprecated_in_3_13_removed_in_4_0() -> None:
    definition = {key: "x" for key in HA_KEYS}
    assert rules_for("3.12").policy_problems(definition) == []
    assert set(severities(rules_for("3.13").policy_problems(definition)).values()) == {Severity.DEPRECATED}
    removed = rules_for("4.0").policy_problems(definition)
    assert severities(removed) == {key: Severity.REMOVED for key in HA_KEYS}
    assert all(problem.refused for problem in removed)
    assert "quorum queues" in removed[0].change.replacement


def test_ha_keys_are_policy_keys_until_4_0_and_never_after() -> None:
    for version in ("3.10", "3.11", "3.12", "3.13.7"):
        assert set(HA_KEYS) <= rules_for(version).policy_keys
    for version in ("4.0", "4.1", "4.2", "4.3.6"):
        assert not set(HA_KEYS) & rules_for(version).policy_keys
        assert rules_for(version).unknown_policy_keys({"ha-mode": "all", "max-length": 1}) == ["ha-mode"]


def test_operator_policy_keys_per_version() -> None:
    # 3.10 had no ha-* operator policy validators; 3.11 added three; 4.0 removed them.
    assert rules_for("3.10").unknown_policy_keys({"ha-mode": "all"}, operator=True) == ["ha-mode"]
    assert rules_for("3.11").unknown_policy_keys({"ha-mode": "all", "queue-version": 2}, operator=True) == []
    assert rules_for("3.11").unknown_policy_keys({"overflow": "drop-head"}, operator=True) == ["overflow"]
    assert rules_for("3.12").unknown_policy_keys({"overflow": "drop-head"}, operator=True) == []
    assert rules_for("4.0").unknown_policy_keys({"ha-mode": "all", "queue-master-locator": "x"}, operator=True) == [
        "ha-mode"
    ]


def test_plugin_policy_keys_need_their_plugin_when_plugins_are_known() -> None:
    rules = rules_for("3.10")
    definition = {"federation-upstream-set": "all", "shards-per-node": 2}
    assert rules.unknown_policy_keys(definition) == []
    assert rules.unknown_policy_keys(definition, plugins=["rabbitmq_federation"]) == ["shards-per-node"]
    assert rules.unknown_policy_keys(definition, operator=True) == ["federation-upstream-set", "shards-per-node"]


def test_new_policy_keys_appear_in_their_version() -> None:
    assert "consumer-timeout" not in rules_for("3.11").policy_keys
    assert "consumer-timeout" in rules_for("3.12").policy_keys
    assert "target-group-size" in rules_for("3.13").policy_keys
    assert "delayed-retry-type" not in rules_for("4.2").policy_keys
    assert "delayed-retry-type" in rules_for("4.3").policy_keys


def test_queue_master_locator_deprecated_in_4_0_denied_in_4_3() -> None:
    assert rules_for("3.13").policy_problems({"queue-master-locator": "min-masters"}) == []
    (deprecated,) = rules_for("4.0").policy_problems({"queue-master-locator": "min-masters"})
    assert deprecated.severity is Severity.DEPRECATED and not deprecated.refused
    (denied,) = rules_for("4.3").policy_problems({"queue-master-locator": "min-masters"})
    assert denied.severity is Severity.DENIED and denied.refused
    assert "queue-leader-locator" in denied.change.replacement
    (argument,) = rules_for("4.3").queue_argument_problems({"x-queue-master-locator": "client-local"})
    assert argument.severity is Severity.DENIED and "x-queue-leader-locator" in argument.change.replacement


def test_queue_mode_deprecated_from_3_12() -> None:
    assert rules_for("3.11").policy_problems({"queue-mode": "lazy"}) == []
    assert severities(rules_for("3.12").policy_problems({"queue-mode": "lazy"})) == {"queue-mode": Severity.DEPRECATED}
    (problem,) = rules_for("4.3").queue_argument_problems({"x-queue-mode": "lazy"})
    assert problem.severity is Severity.DEPRECATED and not problem.refused
    assert "no longer checks" in problem.consequence("4.3")
    assert problem.message() == "queue argument x-queue-mode: has no effect since RabbitMQ 3.12"


def test_queue_version_1_ignored_from_4_0_refused_from_4_3_and_2_is_fine() -> None:
    assert rules_for("3.13").queue_argument_problems({"x-queue-version": 1}) == []
    (ignored,) = rules_for("4.0").queue_argument_problems({"x-queue-version": 1})
    assert ignored.severity is Severity.DEPRECATED
    (refused,) = rules_for("4.3").queue_argument_problems({"x-queue-version": 1})
    assert refused.severity is Severity.REMOVED and refused.refused
    assert "x-queue-version: 2" in refused.change.replacement
    assert "x-queue-version: 1" in refused.message()
    assert refused.consequence("4.3").startswith("RabbitMQ 4.3 refuses it")
    assert rules_for("4.3").queue_argument_problems({"x-queue-version": 2}) == []
    # RabbitMQ tells 1 from true and "1": only the integer is the removed value.
    assert rules_for("4.3").queue_argument_problems({"x-queue-version": True}) == []
    assert rules_for("4.3").queue_argument_problems({"x-queue-version": "1"}) == []
    # The policy key keeps accepting 1 (rabbit_policies.erl at v4.3.5): deprecated, never refused.
    (policy,) = rules_for("4.3").policy_problems({"queue-version": 1})
    assert policy.severity is Severity.DEPRECATED


def test_allowed_argument_values_per_version() -> None:
    assert rules_for("3.10").allowed_values("x-queue-version") == (1, 2)
    assert rules_for("4.2").allowed_values("x-queue-version") == (1, 2)
    assert rules_for("4.3").allowed_values("x-queue-version") == (2,)
    assert rules_for("4.2").allowed_values("x-queue-mode") == ("default", "lazy")
    assert rules_for("4.3").allowed_values("x-queue-mode") is None
    assert rules_for("4.3").allowed_values("x-message-ttl") is None


def test_transient_non_exclusive_queues() -> None:
    assert rules_for("3.12").queue_shape_problems(durable=False) == []
    (deprecated,) = rules_for("3.13").queue_shape_problems(durable=False)
    assert deprecated.severity is Severity.DEPRECATED
    for version in ("4.3.0", "4.3.5"):
        (denied,) = rules_for(version).queue_shape_problems(durable=False)
        assert denied.severity is Severity.DENIED and denied.refused
        assert "deprecated_features.permit.transient_nonexcl_queues = true" in denied.consequence(version)
    assert denied.change.feature == "transient_nonexcl_queues"
    # 4.3.6 (Debian's build, probed) permits them by default again; "4.3" means the newest 4.3.x.
    for version in ("4.3.6", "4.3"):
        (again,) = rules_for(version).queue_shape_problems(durable=False)
        assert again.severity is Severity.DEPRECATED and "4.3.6 permits it" in again.consequence(version)
    assert rules_for("4.3.0").queue_shape_problems(durable=False, exclusive=True) == []
    assert rules_for("4.3.0").queue_shape_problems(durable=True) == []


def test_refused_queue_arguments_follow_check_declare_arguments() -> None:
    rules = rules_for("3.10")
    # Another type's argument is refused; an argument no type knows (a plugin's) is accepted.
    assert rules.refused_queue_arguments("quorum", {"x-max-priority": 5, "x-custom": 1}) == ["x-max-priority"]
    assert rules.refused_queue_arguments("classic", {"x-delivery-limit": 5}) == ["x-delivery-limit"]
    assert rules.refused_queue_arguments("stream", {"x-max-age": "7D", "x-max-length": 5}) == ["x-max-length"]
    # Classic queues take x-queue-leader-locator from 4.0.
    assert rules.refused_queue_arguments("classic", {"x-queue-leader-locator": "balanced"}) == [
        "x-queue-leader-locator"
    ]
    assert rules_for("4.0").refused_queue_arguments("classic", {"x-queue-leader-locator": "balanced"}) == []
    # Stream filters from 4.2, the quorum consumer timeout argument from 4.3.2.
    assert "x-stream-filter-size-bytes" in rules_for("4.2").queue_arguments["stream"]
    assert "x-consumer-timeout" not in rules_for("4.3.1").queue_arguments["quorum"]
    assert "x-consumer-timeout" in rules_for("4.3.2").queue_arguments["quorum"]


def test_queue_argument_rules_carry_the_versions_that_accept_them() -> None:
    from topo.arguments import QUEUE_ARGUMENTS
    from topo.capabilities import Capabilities

    leader = QUEUE_ARGUMENTS["x-queue-leader-locator"]
    assert leader.types_at((3, 13, 7)) == {"quorum", "stream"}
    assert leader.types_at((4, 0, 0)) == {"classic", "quorum", "stream"}
    assert QUEUE_ARGUMENTS["x-queue-version"].values_at((4, 2, 0)) == (1, 2)
    assert QUEUE_ARGUMENTS["x-queue-version"].values_at((4, 3, 0)) == (2,)
    assert QUEUE_ARGUMENTS["x-delivery-limit"].default_at((3, 13, 7)) is None
    assert QUEUE_ARGUMENTS["x-delivery-limit"].default_at((4, 0, 0)) == 20
    # The 3.10 lists are the rules' base: the offline checks of the files are unchanged by later versions.
    assert rules_for("3.10").queue_arguments["classic"] == {
        *(name for name, rule in QUEUE_ARGUMENTS.items() if "classic" in rule.queue_types),
        "x-queue-type",
    }
    # Plan-time, through Capabilities: an argument the broker's version gives other queue types only
    # (probed on 4.3.6: 400 "invalid arg 'x-consumer-timeout' ... of queue type rabbit_classic_queue").
    refused = dict(Capabilities("4.3.6").queue_argument_refusals("classic", {"x-consumer-timeout": 60000}))
    assert "takes x-consumer-timeout for quorum queues only, not for classic queues" in refused["x-consumer-timeout"]
    assert Capabilities("4.3.6").queue_argument_refusals("quorum", {"x-consumer-timeout": 60000}) == []
    assert Capabilities("3.10.8").queue_argument_refusals("classic", {"x-consumer-timeout": 60000}) == []
    assert Capabilities("4.3.6").queue_argument_refusals("classic", {"x-queue-leader-locator": "balanced"}) == []
    assert [n for n, _ in Capabilities("4.3.6").queue_argument_refusals("classic", {"x-queue-version": 1})] == [
        "x-queue-version"
    ]
    assert Capabilities("").queue_argument_refusals("classic", {"x-consumer-timeout": 1}) == []


def test_default_delivery_limit() -> None:
    assert default_delivery_limit((3, 13, 7)) is None
    assert default_delivery_limit((4, 0, 0)) == 20
    assert default_delivery_limit((4, 3, 6)) == 20


def test_deprecated_features() -> None:
    assert deprecated_feature_stage("classic_queue_mirroring", (4, 0, 0)).severity is Severity.REMOVED
    assert deprecated_feature_stage("transient_nonexcl_queues", (4, 2, 0)).severity is Severity.DEPRECATED
    assert deprecated_feature_stage("transient_nonexcl_queues", (4, 3, 0)).severity is Severity.DENIED
    assert deprecated_feature_stage("transient_nonexcl_queues", (4, 3, 6)).severity is Severity.DEPRECATED
    assert deprecated_feature_stage("global_qos", (3, 12, 0)) is None
    assert deprecated_feature_stage("no_such_feature", (4, 0, 0)) is None
    assert all(feature.replacement for feature in DEPRECATED_FEATURES.values())


def test_table_is_well_formed() -> None:
    ids = [change.id for change in CHANGES]
    assert len(ids) == len(set(ids))
    for change in CHANGES:
        assert change.stages and change.what and change.replacement and change.source
        assert [stage.since for stage in change.stages] == sorted(stage.since for stage in change.stages)
        if change.feature:
            assert change.feature in DEPRECATED_FEATURES


def test_policy_values_per_version() -> None:
    definition = {
        "delivery-limit": -1,
        "message-ttl": "60000",
        "max-age": "0D",
        "expires": 0,
        "overflow": "drop-tail",
        "queue-version": True,
        "alternate-exchange": "ae",
        "max-length": 5,
        "ha-mode": "all",  # validated elsewhere: not this check's business
    }
    problems = dict(rules_for("3.10").policy_value_problems(definition))
    assert set(problems) == {"delivery-limit", "message-ttl", "max-age", "expires", "overflow", "queue-version"}
    assert problems["message-ttl"] == "must be an integer >= 0, got str '60000'"
    assert problems["queue-version"] == "must be an integer from 1 to 2, got bool True"
    # 4.0 accepts a negative delivery limit; keys a version does not know have no value rule there.
    assert "delivery-limit" not in dict(rules_for("4.0").policy_value_problems(definition))
    assert rules_for("3.11").policy_value_problems({"consumer-timeout": -5}) == []
    assert rules_for("3.12").policy_value_problems({"consumer-timeout": -5}) == [
        ("consumer-timeout", "must be an integer >= 0, got -5")
    ]
    assert rules_for("3.13").policy_value_problems({"stream-filter-size-bytes": 300}) != []
    assert rules_for("4.3").policy_value_problems({"max-age": "7D", "stream-max-segment-size-bytes": 500_000_000}) == []


def test_refusals_for_plan_time() -> None:
    policy = {"ha-mode": "all", "queue-mode": "lazy", "max-length": 5, "message-ttl": "1", "federation-upstream": "x"}
    assert refusals("policy", policy, (3, 10, 8)) == [
        ("message-ttl", "message-ttl must be an integer >= 0, got str '1'; RabbitMQ 3.10.8 refuses it")
    ]
    found = dict(refusals("policy", policy, (4, 0, 5)))
    assert list(found) == ["ha-mode", "message-ttl"]
    assert found["ha-mode"].startswith("policy key ha-mode: classic queue mirroring was removed in RabbitMQ 4.0; ")
    assert "quorum queues" in found["ha-mode"]
    # Operator policies never take queue-mode; queue-master-locator is denied from 4.3 only.
    operator = {"queue-mode": "lazy", "queue-master-locator": "min-masters"}
    assert [key for key, _ in refusals("operator_policy", operator, (4, 0, 5))] == ["queue-mode"]
    assert [key for key, _ in refusals("operator_policy", operator, (4, 3))] == ["queue-mode", "queue-master-locator"]
    arguments = {"x-queue-version": 1, "x-queue-master-locator": "min-masters", "x-queue-mode": "lazy"}
    assert refusals("queue_argument", arguments, (4, 2, 0)) == []
    refused = dict(refusals("queue_argument", arguments, (4, 3, 6)))
    assert list(refused) == ["x-queue-version", "x-queue-master-locator"]
    assert "deprecated_features.permit.queue_master_locator = true" in refused["x-queue-master-locator"]
