"""The object kinds topo manages, and the registry that lists them.

Each member of `Kind` is one line of the registry: its value names the module that says everything about
the kind (topo/kinds/<value>.py, exporting `DEFINITION`). The members' order is the order people read
them in (plans, exports); the order changes are applied in is derived from each kind's `depends_on`
(see topo/kinds/order.py), never written down.
"""

from __future__ import annotations

import importlib
from enum import StrEnum
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from topo.kinds.base import KindDef


class Kind(StrEnum):
    VHOST = "vhost"
    VHOST_LIMIT = "vhost_limit"
    POLICY = "policy"
    OPERATOR_POLICY = "operator_policy"
    EXCHANGE = "exchange"
    QUEUE = "queue"
    BINDING = "binding"
    PARAMETER = "parameter"  # a plugin's runtime parameter: shovels, federation upstreams and sets
    PERMISSION = "permission"
    TOPIC_PERMISSION = "topic_permission"
    USER = "user"
    USER_LIMIT = "user_limit"
    GLOBAL_PARAMETER = "global_parameter"  # a broker-wide runtime parameter: cluster_name, MQTT mappings...


@cache
def definition(kind: Kind) -> KindDef:
    """The module that describes `kind` (imported on first use: the kind modules import the state)."""
    module = importlib.import_module(f"topo.kinds.{kind.value}")
    found: KindDef = module.DEFINITION
    if found.kind is not kind:
        raise RuntimeError(f"topo/kinds/{kind.value}.py describes {found.kind}, not {kind}")
    return found


def registry() -> list[KindDef]:
    """Every kind, in reading order."""
    return [definition(kind) for kind in Kind]


def rank(kind: Kind) -> int:
    """Position in reading order: plans list vhosts, limits, policies, exchanges, queues... in this order."""
    return _RANKS[kind]


_RANKS = {kind: index for index, kind in enumerate(Kind)}
