"""What RabbitMQ accepts in a policy's or operator policy's definition: its keys, their values.

The broker refuses a policy with an unknown key ("... are not recognised policy settings") or a bad
value, so these are checked offline, before any request. The key lists are the validators RabbitMQ
3.10 registers (rabbit_registry:lookup_all(policy_validator) and (operator_policy_validator) on a
running node, from rabbit_policies.erl, rabbit_mirror_queue_misc.erl, rabbit_queue_location_validator,
rabbit_quorum_queue, rabbit_classic_queue, rabbit_stream_queue and the federation plugin); the value
rules were each tried against a 3.10.8 node (tests/test_preflight.py proves the table against the node).
"""

from __future__ import annotations

import difflib
import re
from typing import Any

from topo.arguments import ArgumentRule, check_argument


def _rule(value: str, **kwargs: Any) -> ArgumentRule:
    return ArgumentRule(value, frozenset(), **kwargs)


POLICY_KEYS: dict[str, ArgumentRule] = {
    "alternate-exchange": _rule("str"),
    "dead-letter-exchange": _rule("str"),
    "dead-letter-routing-key": _rule("str"),
    "dead-letter-strategy": _rule("str", choices=("at-most-once", "at-least-once")),
    "message-ttl": _rule("int", minimum=0),
    "expires": _rule("int", minimum=1),
    "max-length": _rule("int", minimum=0),
    "max-length-bytes": _rule("int", minimum=0),
    "max-in-memory-length": _rule("int", minimum=0),
    "max-in-memory-bytes": _rule("int", minimum=0),
    "delivery-limit": _rule("int", minimum=0),
    "overflow": _rule("str", choices=("drop-head", "reject-publish", "reject-publish-dlx")),
    "queue-mode": _rule("str", choices=("default", "lazy")),
    "queue-version": _rule("int", minimum=1, maximum=2),
    "queue-master-locator": _rule("str", choices=("min-masters", "client-local", "random")),
    "queue-leader-locator": _rule("str", choices=("client-local", "balanced", "random", "least-leaders")),
    "max-age": _rule("str", pattern=r"^[0-9]+[YMDhms]$"),
    "stream-max-segment-size-bytes": _rule("int", minimum=0),
    "initial-cluster-size": _rule("int", minimum=0),
    # Classic queue mirroring (rabbit_mirror_queue_misc): ha-params, see _ha_problems.
    "ha-mode": _rule("str", choices=("all", "exactly", "nodes")),
    "ha-params": _rule("int"),
    "ha-sync-mode": _rule("str", choices=("manual", "automatic")),
    "ha-sync-batch-size": _rule("int", minimum=1),
    "ha-promote-on-shutdown": _rule("str", choices=("when-synced", "always")),
    "ha-promote-on-failure": _rule("str", choices=("when-synced", "always")),
    # The federation plugin's keys (valid only while rabbitmq_federation is enabled).
    "federation-upstream": _rule("str"),
    "federation-upstream-set": _rule("str"),
    "federation-upstream-pattern": _rule("str"),
}

# Operator policies accept only these (rabbit_policies registers operator_policy_validator for them).
OPERATOR_POLICY_KEYS = (
    "delivery-limit",
    "expires",
    "max-in-memory-bytes",
    "max-in-memory-length",
    "max-length",
    "max-length-bytes",
    "message-ttl",
)

FEDERATION_KEYS = ("federation-upstream", "federation-upstream-set", "federation-upstream-pattern")
_HA_DEPENDENT = ("ha-params", "ha-sync-mode", "ha-sync-batch-size", "ha-promote-on-shutdown", "ha-promote-on-failure")


def near_miss(name: str, known: list[str] | tuple[str, ...]) -> str | None:
    """The known name `name` is probably a misspelling of, if any (max-lenght -> max-length)."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
    return close[0] if close else None


def definition_problems(definition: dict[str, Any], operator: bool = False) -> list[tuple[str, str]]:
    """(key, reason) for each part of a definition the broker would refuse."""
    allowed = list(OPERATOR_POLICY_KEYS) if operator else sorted(POLICY_KEYS)
    what = "an operator policy" if operator else "a policy"
    problems: list[tuple[str, str]] = []
    for key, value in definition.items():
        if key not in allowed:
            close = near_miss(key, allowed)
            if close:
                hint = f"did you mean {close!r}?"
            elif operator and key in POLICY_KEYS:
                hint = f"operator policies accept only {', '.join(allowed)}"
            else:
                hint = f"allowed: {', '.join(allowed)}"
            problems.append((key, f"not a key RabbitMQ accepts in {what} ({hint})"))
            continue
        if key == "ha-params":
            continue  # its type depends on ha-mode
        reason = check_argument(key, value, POLICY_KEYS[key])
        if reason:
            problems.append((key, reason))
        elif key == "federation-upstream-pattern":
            try:
                re.compile(value)
            except re.error as exc:
                problems.append((key, f"{value!r} is not a valid regular expression: {exc}"))
    if not operator:
        problems.extend(_ha_problems(definition))
    return problems


def _ha_problems(definition: dict[str, Any]) -> list[tuple[str, str]]:
    mode = definition.get("ha-mode")
    dependent = [key for key in _HA_DEPENDENT if key in definition]
    if mode is None:
        return [(key, "needs ha-mode in the same definition") for key in dependent]
    params = definition.get("ha-params")
    if mode == "all" and "ha-params" in definition:
        return [("ha-params", 'ha-mode "all" takes no ha-params')]
    if mode == "exactly" and (type(params) is not int or params < 1):
        return [("ha-params", 'ha-mode "exactly" needs ha-params: an integer >= 1 (the number of replicas)')]
    if mode == "nodes" and (
        not isinstance(params, list) or not params or not all(isinstance(node, str) for node in params)
    ):
        return [("ha-params", 'ha-mode "nodes" needs ha-params: a non-empty list of node names')]
    return []
