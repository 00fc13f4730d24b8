"""What each RabbitMQ version removed, denies by default or deprecates, and what it accepts at all.

The one place that answers "what does version X accept": policy and operator-policy keys and their
values (the tables below), queue arguments and their values (the versioned rules in topo.arguments,
read through `queue_arguments_at` and `VersionRules.allowed_values`), what each version removed, denies
or deprecates (CHANGES), and queue shapes. `rules_for(version)` answers for one broker version;
`topo lint` (the upgrade check), validation and plan-time refusal (through Capabilities) consult it.

Every fact below was read in rabbitmq-server's source at the release tags named (deps/rabbit/src
unless a path says otherwise) — not taken from memory:
- policy keys: the `policy_validator` / `operator_policy_validator` registrations (rabbit_policies.erl,
  rabbit_mirror_queue_misc.erl, rabbit_queue_location_validator.erl, rabbit_classic_queue.erl,
  rabbit_quorum_queue.erl, the federation and sharding plugins) at v3.10.8 ... v4.3.5;
- queue arguments: each queue type's `capabilities()` `queue_arguments` (rabbit_classic_queue.erl,
  rabbit_quorum_queue.erl, rabbit_stream_queue.erl); rabbit_amqqueue:check_declare_arguments/3 refuses
  an argument that another type lists and this type does not, and accepts arguments no type lists;
- deprecations: the `-rabbit_deprecated_feature` attributes and their `deprecation_phase`.
A version is matched by (major, minor, patch); facts are given for the newest patch of each minor
unless a patch is named.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Literal

from topo import arguments
from topo.arguments import QUEUE_ARGUMENTS, QUEUE_TYPES, ArgumentRule, check_argument

Version = arguments.Version  # (major, minor, patch)

# "4.3" (no patch) stands for every 4.3.x: it is judged as the newest patch release of the line.
ANY_PATCH = 9999
# The newest release line this table was checked against: rabbitmq-server's source up to v4.3.5, and
# Debian's 4.3.6-1 build probed on a real node.
NEWEST_KNOWN: Version = (4, 3, ANY_PATCH)

_VERSION = re.compile(r"^\s*v?(\d+)\.(\d+)(?:\.(\d+))?(?:[-+~][0-9A-Za-z.+~-]*)?\s*$")


# Cached: the plan asks the broker's version about each queue (20,000 parses at N=10,000, 14 ms).
@functools.lru_cache(maxsize=256)
def parse_version(text: str) -> Version:
    """'3.10.8' -> (3, 10, 8); '4.3.6-1' (a package version) -> (4, 3, 6); '4.0' -> every 4.0.x (the newest)."""
    match = _VERSION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a RabbitMQ version (expected MAJOR.MINOR or MAJOR.MINOR.PATCH, e.g. 4.0)")
    major, minor, patch = match.groups()
    return int(major), int(minor), ANY_PATCH if patch is None else int(patch)


def release_of(text: str) -> Version | None:
    """What a broker reports ("3.10.8", "4.1.0-rc.1") as a version; None when it reports none or no version."""
    try:
        return parse_version(text)
    except ValueError:
        return None


def version_text(version: Version) -> str:
    major, minor, patch = version
    return f"{major}.{minor}" if patch == ANY_PATCH else f"{major}.{minor}.{patch}"


class Severity(StrEnum):
    # Ordered from worst to mildest; REMOVED and DENIED make the broker refuse the declaration.
    REMOVED = "removed"
    DENIED = "denied by default"
    DEPRECATED = "deprecated"


REFUSED = frozenset({Severity.REMOVED, Severity.DENIED})


class Subject(StrEnum):
    POLICY_KEY = "policy key"
    QUEUE_ARGUMENT = "queue argument"
    QUEUE_SHAPE = "transient (non-durable), non-exclusive queue"


@dataclass(frozen=True, slots=True)
class Stage:
    since: Version
    severity: Severity
    note: str = ""  # what happens at this stage, when the severity alone does not say it


@dataclass(frozen=True, slots=True)
class Change:
    id: str  # stable: lint findings and docs/lint.md name it
    subject: Subject
    keys: tuple[str, ...]  # policy keys or argument names; () for a queue shape
    stages: tuple[Stage, ...]  # in version order
    what: str
    replacement: str
    values: tuple[Any, ...] | None = None  # only these values of the keys; None: any value
    feature: str | None = None  # the broker's deprecated-feature name (/api/deprecated-features)
    source: str = ""  # where in RabbitMQ's source this was verified

    def stage_at(self, version: Version) -> Stage | None:
        current = None
        for stage in self.stages:
            if stage.since <= version:
                current = stage
        return current

    def matches(self, key: str, value: Any) -> bool:
        if key not in self.keys:
            return False
        if self.values is None:
            return True
        # RabbitMQ tells 1 from "1" and from true: compare types too.
        return any(type(value) is type(allowed) and value == allowed for allowed in self.values)


HA_KEYS = (
    "ha-mode",
    "ha-params",
    "ha-sync-mode",
    "ha-sync-batch-size",
    "ha-promote-on-shutdown",
    "ha-promote-on-failure",
)
LAZY_NOTE = "classic queues have kept messages on disk like lazy queues since 3.12, so it has no effect"

CHANGES: tuple[Change, ...] = (
    Change(
        "classic-queue-mirroring",
        Subject.POLICY_KEY,
        HA_KEYS,
        (
            Stage((3, 13, 0), Severity.DEPRECATED),
            Stage((4, 0, 0), Severity.REMOVED, '400 "not recognised policy settings"'),
        ),
        "classic queue mirroring was removed in RabbitMQ 4.0",
        "use quorum queues (type: quorum) or streams for replicated data, and drop the ha-* keys",
        feature="classic_queue_mirroring",
        source="rabbit_mirror_queue_misc.erl: deprecated feature classic_queue_mirroring permitted_by_default "
        "at v3.13.0, removed at v4.0.0; no ha-* validator is registered from v4.0.0",
    ),
    Change(
        "queue-master-locator",
        Subject.POLICY_KEY,
        ("queue-master-locator",),
        (Stage((4, 0, 0), Severity.DEPRECATED), Stage((4, 3, 0), Severity.DENIED)),
        "deprecated since RabbitMQ 4.0, denied by default from 4.3",
        "use queue-leader-locator (client-local or balanced)",
        feature="queue_master_locator",
        source="rabbit_queue_location.erl: deprecated feature queue_master_locator permitted_by_default at "
        "v4.0.0, denied_by_default at v4.3.0; rabbit_classic_queue:validate_policy/1 refuses it when denied",
    ),
    Change(
        "x-queue-master-locator",
        Subject.QUEUE_ARGUMENT,
        ("x-queue-master-locator",),
        (Stage((4, 0, 0), Severity.DEPRECATED), Stage((4, 3, 0), Severity.DENIED)),
        "deprecated since RabbitMQ 4.0, denied by default from 4.3",
        "use x-queue-leader-locator (client-local or balanced), which classic queues accept from 4.0",
        feature="queue_master_locator",
        source="rabbit_classic_queue:validate_arguments/1 (v4.0.0+) refuses it when queue_master_locator is "
        "not permitted; the feature is denied_by_default from v4.3.0",
    ),
    Change(
        "queue-mode",
        Subject.POLICY_KEY,
        ("queue-mode",),
        (Stage((3, 12, 0), Severity.DEPRECATED),),
        "has no effect since RabbitMQ 3.12",
        "drop the queue-mode key: " + LAZY_NOTE,
        source="rabbit_variable_queue.erl at v3.12.0: 'there is no distinction between default and lazy "
        "queues'; rabbit_policies.erl still validates queue-mode (default|lazy) at v4.3.5",
    ),
    Change(
        "x-queue-mode",
        Subject.QUEUE_ARGUMENT,
        ("x-queue-mode",),
        (
            Stage((3, 12, 0), Severity.DEPRECATED),
            Stage((4, 3, 0), Severity.DEPRECATED, "4.3 no longer checks its value"),
        ),
        "has no effect since RabbitMQ 3.12",
        "drop x-queue-mode (" + LAZY_NOTE + "); queue arguments are immutable, so removing it re-creates "
        "the queue: do it while the queue is empty",
        source="rabbit_variable_queue.erl at v3.12.0; check_queue_mode removed from rabbit_amqqueue:declare_args/0 "
        "at v4.3.0 (commit a67de22527)",
    ),
    Change(
        "x-queue-version-1",
        Subject.QUEUE_ARGUMENT,
        ("x-queue-version",),
        (
            Stage((4, 0, 0), Severity.DEPRECATED, "the value is ignored"),
            Stage((4, 3, 0), Severity.REMOVED, "the broker answers \"unsupported queue version '1'\""),
        ),
        "classic queue storage v1 was removed: ignored from RabbitMQ 4.0, refused from 4.3",
        "use x-queue-version: 2, or drop the argument (2 is the default); queue arguments are immutable, so the "
        "queue is re-created: do it while the queue is empty",
        values=(1,),
        source="rabbit_variable_queue:set_queue_version/2 ignores the version at v4.0.0; "
        "rabbit_amqqueue:check_queue_version/2 accepts only 2 from v4.3.0 (commit a67de22527)",
    ),
    Change(
        "queue-version-1",
        Subject.POLICY_KEY,
        ("queue-version",),
        (Stage((4, 0, 0), Severity.DEPRECATED, "the value is ignored"),),
        "classic queue storage v1 was removed: no effect since RabbitMQ 4.0",
        "use queue-version: 2, or drop the key (2 is the default)",
        values=(1,),
        source="rabbit_variable_queue:set_queue_version/2 ignores the version at v4.0.0; rabbit_policies.erl "
        "still accepts queue-version 1 at v4.3.5",
    ),
    Change(
        "transient-nonexclusive-queue",
        Subject.QUEUE_SHAPE,
        (),
        (
            Stage((3, 13, 0), Severity.DEPRECATED),
            Stage((4, 3, 0), Severity.DENIED),
            Stage((4, 3, 6), Severity.DEPRECATED, "4.3.6 permits it by default again"),
        ),
        "deprecated since RabbitMQ 3.13 (denied by default in 4.3.0 to 4.3.5)",
        "make it durable (durable: true; add x-expires to remove it when unused), or let the application "
        "declare it as an exclusive queue",
        feature="transient_nonexcl_queues",
        source="rabbit_amqqueue.erl: deprecated feature transient_nonexcl_queues permitted_by_default at "
        "v3.13.0, denied_by_default at v4.3.0 (commit 9b3b332a38) to v4.3.5; declare/7 refuses non-durable "
        "non-exclusive queues when it is not permitted. Debian's 4.3.6-1 build has permitted_by_default "
        "again (its rabbit_amqqueue.beam's attribute; probed: /api/deprecated-features/used reports it "
        "permitted_by_default and such a queue is declared with 201)",
    ),
)


def default_delivery_limit(version: Version) -> int | None:
    """The delivery limit a quorum queue gets when nothing sets one (None: unlimited): 20 from 4.0, a
    message redelivered more often is dropped, or dead-lettered where the queue has a dead-letter target
    (the x-delivery-limit rule in topo.arguments)."""
    limit = QUEUE_ARGUMENTS["x-delivery-limit"].default_at(version)
    return limit if isinstance(limit, int) else None


# A topic permission on an exchange that does not exist: 3.10.8 and 4.0.5 store it (201), 4.3.6 refuses it
# (400 no_such_exchange; both probed on real nodes). 4.1 and 4.2 were not tried: refused from 4.1, because
# a plan that refuses early costs a declaration, and an apply refused halfway a half-changed broker.
TOPIC_PERMISSION_NEEDS_EXCHANGE: Version = (4, 1, 0)


@dataclass(frozen=True, slots=True)
class DeprecatedFeature:
    name: str
    stages: tuple[Stage, ...]
    replacement: str


# Every deprecated feature the broker reports through /api/deprecated-features(/used), with its phases
# (the -rabbit_deprecated_feature attributes at v3.13.7, v4.0.9, v4.1.8, v4.2.9, v4.3.5).
DEPRECATED_FEATURES: dict[str, DeprecatedFeature] = {
    feature.name: feature
    for feature in (
        DeprecatedFeature(
            "classic_queue_mirroring",
            (Stage((3, 13, 0), Severity.DEPRECATED), Stage((4, 0, 0), Severity.REMOVED)),
            "quorum queues or streams instead of ha-* mirroring policies",
        ),
        DeprecatedFeature(
            "transient_nonexcl_queues",
            (
                Stage((3, 13, 0), Severity.DEPRECATED),
                Stage((4, 3, 0), Severity.DENIED),
                Stage((4, 3, 6), Severity.DEPRECATED),
            ),
            "durable queues (with x-expires for cleanup) or exclusive queues",
        ),
        DeprecatedFeature(
            "global_qos",
            (Stage((3, 13, 0), Severity.DEPRECATED), Stage((4, 3, 0), Severity.DENIED)),
            "per-consumer prefetch (basic.qos with global=false)",
        ),
        DeprecatedFeature(
            "ram_node_type",
            (Stage((3, 13, 0), Severity.DEPRECATED), Stage((4, 3, 0), Severity.REMOVED)),
            "disc nodes only",
        ),
        DeprecatedFeature(
            "management_metrics_collection",
            (Stage((3, 13, 0), Severity.DEPRECATED),),
            "the Prometheus plugin (rabbitmq_prometheus) for metrics",
        ),
        DeprecatedFeature(
            "queue_master_locator",
            (Stage((4, 0, 0), Severity.DEPRECATED), Stage((4, 3, 0), Severity.DENIED)),
            "queue-leader-locator / x-queue-leader-locator (client-local or balanced)",
        ),
        DeprecatedFeature(
            "amqp_address_v1",
            (Stage((4, 0, 0), Severity.DEPRECATED), Stage((4, 3, 0), Severity.DENIED)),
            "AMQP 1.0 address format v2 (/exchanges/..., /queues/...)",
        ),
        DeprecatedFeature(
            "amqp_filter_set_bug",
            (Stage((4, 1, 0), Severity.DEPRECATED), Stage((4, 3, 0), Severity.DENIED)),
            "AMQP 1.0 filter sets encoded as the specification says",
        ),
    )
}


# ---- what each version accepts at all --------------------------------------------------------------

# (since, added, removed): applied in order, so each version's set is the base plus every step up to it.
_Step = tuple[Version, frozenset[str], frozenset[str]]


def _step(since: Version, added: str = "", removed: str = "") -> _Step:
    return since, frozenset(added.split()), frozenset(removed.split())


_HA = " ".join(HA_KEYS)
POLICY_KEY_STEPS: tuple[_Step, ...] = (
    _step(
        (3, 10, 0),
        "alternate-exchange dead-letter-exchange dead-letter-routing-key dead-letter-strategy delivery-limit "
        "expires initial-cluster-size max-age max-in-memory-bytes max-in-memory-length max-length "
        "max-length-bytes message-ttl overflow queue-leader-locator queue-master-locator queue-mode "
        "queue-version stream-max-segment-size-bytes " + _HA,
    ),
    _step((3, 12, 0), "consumer-timeout"),
    _step((3, 13, 0), "stream-filter-size-bytes target-group-size"),
    _step((4, 0, 0), removed=_HA),
    _step((4, 3, 0), "consumer-disconnected-timeout delayed-retry-type delayed-retry-min delayed-retry-max"),
)
OPERATOR_POLICY_KEY_STEPS: tuple[_Step, ...] = (
    _step(
        (3, 10, 0),
        "delivery-limit expires max-in-memory-bytes max-in-memory-length max-length max-length-bytes message-ttl",
    ),
    _step((3, 11, 0), "ha-mode ha-params ha-sync-mode queue-version"),
    _step((3, 12, 0), "overflow"),
    _step((3, 13, 0), "target-group-size"),
    _step((4, 0, 0), "queue-master-locator", "ha-mode ha-params ha-sync-mode"),
    _step((4, 3, 0), "delayed-retry-type delayed-retry-min delayed-retry-max"),
)
# Policy keys that exist only while their plugin is enabled (the broker refuses them otherwise).
PLUGIN_POLICY_KEYS: dict[str, str] = {
    "federation-upstream": "rabbitmq_federation",
    "federation-upstream-pattern": "rabbitmq_federation",
    "federation-upstream-set": "rabbitmq_federation",
    "routing-key": "rabbitmq_sharding",
    "shards-per-node": "rabbitmq_sharding",
}


def queue_arguments_at(version: Version) -> Mapping[str, frozenset[str]]:
    """Per queue type, the arguments a broker of `version` lists for it (each queue type's capabilities()
    queue_arguments), from the versioned rules in topo.arguments; x-queue-type is every type's."""
    table: dict[str, set[str]] = {queue_type: {"x-queue-type"} for queue_type in QUEUE_TYPES}
    for name, rule in QUEUE_ARGUMENTS.items():
        for queue_type in rule.types_at(version):
            table[queue_type].add(name)
    # Read-only: rules_for shares one table between every caller.
    return MappingProxyType({queue_type: frozenset(names) for queue_type, names in table.items()})


def _value(kind: str, **limits: Any) -> ArgumentRule:
    return ArgumentRule(kind, frozenset(), **limits)


_NON_NEGATIVE = _value("int", minimum=0)
# The values each version accepts for a policy key (rabbit_policies:validate_policy0/2, v3.10.8 .. v4.3.5,
# and for ha-*, queue-master-locator and federation the validators of rabbit_mirror_queue_misc,
# rabbit_queue_location_validator and the federation plugin, each tried against a 3.10.8 node:
# tests/test_refused.py): (since, rule), the last step at or before a version applies. A key the version
# does not know at all is caught by POLICY_KEY_STEPS first. ha-params depends on ha-mode (topo.policies).
POLICY_VALUE_STEPS: dict[str, tuple[tuple[Version, ArgumentRule], ...]] = {
    "ha-mode": (((3, 10, 0), _value("str", choices=("all", "exactly", "nodes"))),),
    "ha-sync-mode": (((3, 10, 0), _value("str", choices=("manual", "automatic"))),),
    "ha-sync-batch-size": (((3, 10, 0), _value("int", minimum=1)),),
    "ha-promote-on-shutdown": (((3, 10, 0), _value("str", choices=("when-synced", "always"))),),
    "ha-promote-on-failure": (((3, 10, 0), _value("str", choices=("when-synced", "always"))),),
    "queue-master-locator": (((3, 10, 0), _value("str", choices=("min-masters", "client-local", "random"))),),
    "federation-upstream": (((3, 10, 0), _value("str")),),
    "federation-upstream-set": (((3, 10, 0), _value("str")),),
    "federation-upstream-pattern": (((3, 10, 0), _value("str")),),
    "alternate-exchange": (((3, 10, 0), _value("str")),),
    "dead-letter-exchange": (((3, 10, 0), _value("str")),),
    "dead-letter-routing-key": (((3, 10, 0), _value("str")),),
    "dead-letter-strategy": (((3, 10, 0), _value("str", choices=("at-most-once", "at-least-once"))),),
    "message-ttl": (((3, 10, 0), _NON_NEGATIVE),),
    "expires": (((3, 10, 0), _value("int", minimum=1)),),
    "max-length": (((3, 10, 0), _NON_NEGATIVE),),
    "max-length-bytes": (((3, 10, 0), _NON_NEGATIVE),),
    "max-in-memory-length": (((3, 10, 0), _NON_NEGATIVE),),
    "max-in-memory-bytes": (((3, 10, 0), _NON_NEGATIVE),),
    "queue-mode": (((3, 10, 0), _value("str", choices=("default", "lazy"))),),
    "queue-version": (((3, 10, 0), _value("int", minimum=1, maximum=2)),),
    "overflow": (((3, 10, 0), _value("str", choices=("drop-head", "reject-publish", "reject-publish-dlx"))),),
    # 4.0 accepts any integer: a negative delivery limit means unlimited.
    "delivery-limit": (((3, 10, 0), _NON_NEGATIVE), ((4, 0, 0), _value("int"))),
    "max-age": (((3, 10, 0), _value("str", pattern=r"^0*[1-9][0-9]*[YMDhms]$")),),
    "queue-leader-locator": (
        ((3, 10, 0), _value("str", choices=("client-local", "balanced", "random", "least-leaders"))),
    ),
    "initial-cluster-size": (((3, 10, 0), _NON_NEGATIVE),),
    "stream-max-segment-size-bytes": (((3, 10, 0), _value("int", minimum=0, maximum=3_000_000_000)),),
    "consumer-timeout": (((3, 12, 0), _NON_NEGATIVE),),
    "stream-filter-size-bytes": (((3, 13, 0), _value("int", minimum=16, maximum=255)),),
    "consumer-disconnected-timeout": (((4, 3, 0), _NON_NEGATIVE),),
}


def policy_value_rule(key: str, version: Version) -> ArgumentRule | None:
    """The rule `version` checks a policy key's value with; None when it checks none."""
    found = None
    for since, value_rule in POLICY_VALUE_STEPS.get(key, ()):
        if since <= version:
            found = value_rule
    return found


def _apply_steps(steps: Iterable[_Step], version: Version) -> frozenset[str]:
    keys: set[str] = set()
    for since, added, removed in steps:
        if since <= version:
            keys |= added
            keys -= removed
    return frozenset(keys)


@dataclass(frozen=True, slots=True)
class Problem:
    """What one version says about one policy key, queue argument or queue shape."""

    change: Change
    stage: Stage
    key: str | None = None
    value: Any = None
    version: Version = (0, 0, 0)

    @property
    def severity(self) -> Severity:
        return self.stage.severity

    @property
    def refused(self) -> bool:
        """The broker of this version refuses the declaration (unless its configuration permits it)."""
        return self.stage.severity in REFUSED

    def message(self) -> str:
        """The problem in words, e.g. "policy key ha-mode: classic queue mirroring was removed in RabbitMQ 4.0"."""
        if self.key is None:
            subject = self.change.subject.value
        elif self.change.values is None:
            subject = f"{self.change.subject.value} {self.key}"
        else:
            subject = f"{self.change.subject.value} {self.key}: {self.value!r}"
        return f"{subject}: {self.change.what}"

    def consequence(self, version: str) -> str:
        """What the version does about it, e.g. "RabbitMQ 4.3 refuses it unless its configuration permits it"."""
        if self.severity is Severity.REMOVED:
            text = f"RabbitMQ {version} refuses it"
        elif self.severity is Severity.DENIED:
            permit = f"deprecated_features.permit.{self.change.feature} = true" if self.change.feature else "it"
            text = f"RabbitMQ {version} refuses it unless its configuration says {permit}"
        else:
            text = f"RabbitMQ {version} accepts it"
        return f"{text} ({self.stage.note})" if self.stage.note else text


@dataclass(frozen=True, slots=True)
class VersionRules:
    """Everything one broker version accepts, refuses or warns about in a topology."""

    version: Version
    policy_keys: frozenset[str]
    operator_policy_keys: frozenset[str]
    queue_arguments: Mapping[str, frozenset[str]]
    changes: tuple[Change, ...] = field(default=CHANGES, repr=False)

    @property
    def topic_permission_needs_exchange(self) -> bool:
        """True when this version refuses a topic permission on an exchange that does not exist."""
        return self.version >= TOPIC_PERMISSION_NEEDS_EXCHANGE

    def _problem(self, change: Change, key: str | None, value: Any) -> Problem | None:
        stage = change.stage_at(self.version)
        return Problem(change, stage, key, value, self.version) if stage else None

    def _keyed(self, subject: Subject, items: Mapping[str, Any]) -> list[Problem]:
        problems = []
        for key, value in items.items():
            for change in self.changes:
                if change.subject is subject and change.matches(key, value):
                    problem = self._problem(change, key, value)
                    if problem:
                        problems.append(problem)
        return problems

    def policy_problems(self, definition: Mapping[str, Any]) -> list[Problem]:
        """Removed, denied and deprecated keys (and values) in a policy or operator policy definition."""
        return self._keyed(Subject.POLICY_KEY, definition)

    def queue_argument_problems(self, arguments: Mapping[str, Any]) -> list[Problem]:
        return self._keyed(Subject.QUEUE_ARGUMENT, arguments)

    def queue_shape_problems(self, durable: bool, exclusive: bool = False) -> list[Problem]:
        problems = []
        if not durable and not exclusive:
            for change in self.changes:
                if change.id == "transient-nonexclusive-queue" and (problem := self._problem(change, None, None)):
                    problems.append(problem)
        return problems

    def unknown_policy_keys(
        self, definition: Mapping[str, Any], operator: bool = False, plugins: Iterable[str] | None = None
    ) -> list[str]:
        """Keys this version has no validator for ("not recognised policy settings").

        Plugin keys count as known unless `plugins` (the enabled plugins) is given and lacks their plugin;
        operator policies have no plugin keys.
        """
        known = self.operator_policy_keys if operator else self.policy_keys
        enabled = None if plugins is None else set(plugins)
        unknown = []
        for key in definition:
            if key in known:
                continue
            plugin = None if operator else PLUGIN_POLICY_KEYS.get(key)
            if plugin is not None and (enabled is None or plugin in enabled):
                continue
            unknown.append(key)
        return unknown

    def refused_queue_arguments(self, queue_type: str, arguments: Mapping[str, Any]) -> list[str]:
        """Arguments this version refuses for `queue_type`: those another queue type takes and this one does not.

        Arguments no queue type lists (plugins' own) are accepted by every type, as
        rabbit_amqqueue:check_declare_arguments/3 does.
        """
        mine = self.queue_arguments.get(queue_type, frozenset())
        everyone = frozenset().union(*self.queue_arguments.values())
        return [name for name in arguments if name in everyone and name not in mine]

    def policy_value_problems(self, definition: Mapping[str, Any]) -> list[tuple[str, str]]:
        """(key, reason) for each value this version's policy validation refuses ("is not a valid ...")."""
        problems = []
        for key, value in definition.items():
            value_rule = policy_value_rule(key, self.version)
            if value_rule is not None and (reason := check_argument(key, value, value_rule)):
                problems.append((key, reason))
        return problems

    def allowed_values(self, argument: str) -> tuple[Any, ...] | None:
        """The values this version accepts for an argument whose allowed values changed between versions."""
        rule = QUEUE_ARGUMENTS.get(argument)
        return None if rule is None else rule.values_at(self.version)


def rules_for(version: Version | str) -> VersionRules:
    if isinstance(version, str):
        version = parse_version(version)
    return _rules_at(version)


# One broker's rules, built once: a plan checks each of its 10,000 queues against them, and building
# them anew each time was 0.55 of a 1.1 s cProfile of build_plan (N=10,000). They are immutable.
@functools.lru_cache(maxsize=64)
def _rules_at(version: Version) -> VersionRules:
    return VersionRules(
        version=version,
        policy_keys=_apply_steps(POLICY_KEY_STEPS, version),
        operator_policy_keys=_apply_steps(OPERATOR_POLICY_KEY_STEPS, version),
        queue_arguments=queue_arguments_at(version),
    )


def deprecated_feature_stage(name: str, version: Version) -> Stage | None:
    feature = DEPRECATED_FEATURES.get(name)
    if feature is None:
        return None
    current = None
    for stage in feature.stages:
        if stage.since <= version:
            current = stage
    return current


# ---- plan-time refusal ----------------------------------------------------------------------------

Where = Literal["policy", "operator_policy", "queue_argument"]


def refusals(where: Where, items: Mapping[str, Any], version: tuple[int, ...]) -> list[tuple[str, str]]:
    """(key, reason) for each key of `items` (a policy definition or queue arguments) that a broker of
    `version` refuses, so that a plan can refuse it before any change.

    Refused: removed and denied-by-default keys and arguments (with the replacement), policy values the
    version's validation refuses, and keys operator policies of that version do not know. Unknown keys of
    ordinary policies are not refused here (plugins add their own keys); `topo lint` reports them.
    """
    padded = tuple(version[:3]) + (ANY_PATCH,) * (3 - len(version[:3]))
    rules = rules_for((padded[0], padded[1], padded[2]))
    shown = version_text(rules.version)
    problems = rules.queue_argument_problems(items) if where == "queue_argument" else rules.policy_problems(items)
    found: dict[str, str] = {}
    for problem in problems:
        if problem.refused and problem.key is not None and problem.key not in found:
            found[problem.key] = f"{problem.message()}; {problem.consequence(shown)}; {problem.change.replacement}"
    if where != "queue_argument":
        for key, reason in rules.policy_value_problems(items):
            found.setdefault(key, f"{key} {reason}; RabbitMQ {shown} refuses it")
    if where == "operator_policy":
        for key in rules.unknown_policy_keys(items, operator=True):
            found.setdefault(key, f"operator policies of RabbitMQ {shown} have no key {key} (400 not recognised)")
    return [(key, found[key]) for key in items if key in found]
