"""The plan's "effective policy" note of each created queue: shared between queues the same policies
select (topo/explain.py), it must be exactly what working it out for each queue alone gives."""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

import pytest

from topo.diff import Action
from topo.explain import policies_after, policy_of_new_queue
from topo.policy import Policy
from topo.state import Key, Kind, Obj

PATTERNS = ["^q", "a", "^q1", ".*", "b$", "^(q|r)[0-9]+$", "["]  # "[": a pattern that does not compile
APPLY_TO = ["all", "queues", "classic_queues", "quorum_queues", "streams", "exchanges"]
KEYS: dict[str, list[Any]] = {
    "max-length": [1, 10, 100],
    "message-ttl": [1000, 60000],
    "delivery-limit": [3],
    "queue-mode": ["lazy"],
    "expires": [5000],
}
ARGUMENTS: list[dict[str, Any]] = [
    {},
    {"x-max-length": 1},
    {"x-max-length": True},  # hashes like 1, shown as true
    {"x-max-length": 1.0},
    {"x-max-length": 5, "x-message-ttl": 500},
    {"x-message-ttl": 500},
    {"x-dead-letter-exchange": "dlx"},
    {"x-custom": [1, 2]},  # a list: not hashable
]


def _policies(rng: random.Random, vhost: str) -> dict[Key, Obj]:
    objects = {}
    for n in range(rng.randint(0, 6)):
        operator = rng.random() < 0.3
        kind = Kind.OPERATOR_POLICY if operator else Kind.POLICY
        keys = rng.sample(sorted(KEYS), rng.randint(0, 3))
        attrs = {
            "pattern": rng.choice(PATTERNS),
            "apply-to": rng.choice(APPLY_TO),
            "priority": rng.randint(0, 2),
            "definition": {key: rng.choice(KEYS[key]) for key in keys},
        }
        key = Key(kind, vhost, f"p{n}")
        objects[key] = Obj(key, attrs)
    return objects


def _case(seed: int) -> tuple[dict[Key, str], dict[Key, str]]:
    """The notes policies_after gives, and each queue's own note worked out alone."""
    rng = random.Random(seed)
    vhosts = ["a", "b"]
    on_broker = {k: o for vhost in vhosts for k, o in _policies(rng, vhost).items()}
    in_files = {k: o for vhost in vhosts for k, o in _policies(rng, vhost).items()}
    changes = []
    for n in range(300):
        vhost = rng.choice(vhosts)
        name = rng.choice(["q", "r", "ab", "x"]) + str(rng.randint(0, 30))
        attrs = {"type": rng.choice(["classic", "quorum", "stream"]), "durable": True}
        attrs["arguments"] = dict(rng.choice(ARGUMENTS))
        action = rng.choice([Action.CREATE, Action.REPLACE])
        changes.append(
            SimpleNamespace(kind=Kind.QUEUE, key=Key(Kind.QUEUE, vhost, f"{name}{n}"), after=attrs, action=action)
        )
    deleted = [k for k in on_broker if rng.random() < 0.2]
    changes += [SimpleNamespace(kind=k.kind, key=k, after=None, action=Action.DELETE) for k in deleted]
    version = rng.choice(["3.10.8", "4.3.0", ""])
    actual = SimpleNamespace(objects=on_broker, version=version)
    notes = policies_after(SimpleNamespace(objects=in_files), actual, changes)

    in_force = {k: o for k, o in on_broker.items() if k not in deleted} | in_files
    release = tuple(int(part) for part in version.split(".")) if version else None
    expected = {}
    for change in changes:
        if change.after is None:
            continue
        policies = [Policy.of(o) for o in in_force.values() if o.key.vhost == change.key.vhost]
        note = policy_of_new_queue(policies, Obj(change.key, change.after), release)
        if note:
            expected[change.key] = note
    return notes, expected


@pytest.mark.parametrize("seed", range(40))
def test_the_shared_note_is_each_queues_own(seed: int) -> None:
    notes, expected = _case(seed)
    assert notes == expected


def test_the_cases_reach_every_kind_of_note() -> None:
    texts = [note for seed in range(40) for note in _case(seed)[0].values()]
    assert len(texts) > 2000, len(texts)
    for part in ("operator policy", "tied with", "argument 1 applies", "argument true applies", "argument 1.0 applies"):
        assert any(part in text for text in texts), part
