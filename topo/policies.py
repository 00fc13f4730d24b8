"""What a broker of a given version accepts in a policy's or operator policy's definition.

The broker refuses a policy with an unknown key ("... are not recognised policy settings") or a bad
value, so these are checked before any request. The facts live in compat.py's version table, each with
the versions that accept it: the keys (POLICY_KEY_STEPS, OPERATOR_POLICY_KEY_STEPS, PLUGIN_POLICY_KEYS),
their values (POLICY_VALUE_STEPS) and what a version removed or denies (CHANGES). This module applies
them to one definition: removed keys with their replacement, unknown keys with a "did you mean", values,
the ha- dependencies (ha-params' type depends on ha-mode) and plugin keys whose plugin is not enabled.
tests/test_refused.py proves the outcome against a real 3.10 and 4.3 node.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import Any

from topo import compat
from topo.arguments import check_argument

FEDERATION_KEYS = ("federation-upstream", "federation-upstream-set", "federation-upstream-pattern")
_HA_DEPENDENT = ("ha-params", "ha-sync-mode", "ha-sync-batch-size", "ha-promote-on-shutdown", "ha-promote-on-failure")
# The version assumed when the broker's is unknown (a definitions file without one): the oldest supported.
BASELINE: compat.Version = (3, 10, compat.ANY_PATCH)


def near_miss(name: str, known: list[str] | tuple[str, ...]) -> str | None:
    """The known name `name` is probably a misspelling of, if any (max-lenght -> max-length)."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
    return close[0] if close else None


def definition_problems(
    definition: dict[str, Any],
    operator: bool = False,
    version: compat.Version | None = None,
    plugins: Iterable[str] | None = None,
) -> list[tuple[str, str]]:
    """(key, reason) for each part of a definition a broker of `version` would refuse, in the
    definition's order (a key that is missing, ha-params for ha-mode exactly, comes last).

    `plugins` are the broker's enabled plugins; None when unknown (plugin keys are then accepted).
    """
    rules = compat.rules_for(version or BASELINE)
    known = rules.operator_policy_keys if operator else rules.policy_keys
    enabled = None if plugins is None else frozenset(plugins)
    what = "an operator policy" if operator else "a policy"
    shown = compat.version_text(rules.version) if version is not None else f"{BASELINE[0]}.{BASELINE[1]}"
    found: dict[str, str] = {}
    # Removed or denied by this version: the table's message says what replaces it.
    if version is not None:
        refused = {p.key for p in rules.policy_problems(definition) if p.refused}
        where: compat.Where = "operator_policy" if operator else "policy"
        for key, reason in compat.refusals(where, definition, version):
            if key in refused:
                found[key] = reason
    for key, value in definition.items():
        if key in found:
            continue
        plugin = None if operator else compat.PLUGIN_POLICY_KEYS.get(key)
        if plugin is not None and key not in known:
            if enabled is not None and plugin not in enabled:
                found[key] = f"needs the {plugin} plugin, which is not enabled on the broker"
            elif key == "federation-upstream-pattern" and isinstance(value, str):
                try:
                    re.compile(value)
                except re.error as exc:
                    found[key] = f"{value!r} is not a valid regular expression: {exc}"
        elif key not in known:
            allowed = sorted(known)
            close = near_miss(key, allowed)
            if close:
                hint = f"did you mean {close!r}?"
            elif operator and key in rules.policy_keys:
                hint = f"operator policies accept only {', '.join(allowed)}"
            else:
                hint = f"allowed: {', '.join(allowed)}"
            found[key] = f"not a key RabbitMQ accepts in {what} ({hint}); checked for RabbitMQ {shown}"
            continue
        if key == "ha-params":
            continue  # its type depends on ha-mode: below
        value_rule = compat.policy_value_rule(key, rules.version)
        if value_rule is not None and (reason := check_argument(key, value, value_rule)):
            found[key] = reason
    if not operator and "ha-mode" in known:
        for key, reason in _ha_problems(definition):
            found.setdefault(key, reason)
    order = list(definition)
    return sorted(found.items(), key=lambda item: order.index(item[0]) if item[0] in order else len(order))


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
