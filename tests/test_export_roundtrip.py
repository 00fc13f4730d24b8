"""The round trip on generated broker states covering every object kind and option topo manages.

The state is put on the broker by RabbitMQ's own import plus a few management API calls (not by topo),
then: `topo export` -> `topo plan` shows no changes -> empty the broker -> `topo apply` -> the broker's
definitions equal the original, object by object (see roundtrip.comparable).
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from cli_runner import Result, run_topo
from roundtrip import ADMIN, EmptyBroker, differences
from topo.passwords import hash_password

# Names that need quoting in YAML, escaping from ${VAR} expansion, or percent-encoding in URLs.
NASTY = [
    "a b",
    "ünïcødé",
    "with/slash",
    "100%",
    "#hash",
    "colon: space",
    "${HOME}",
    "$${x}",
    "true",
    "123",
    "- dash",
    "'quote",
    '"double',
    "emoji 🐇",
    "[x]",
    "{y}",
    "a,b",
    "null",
    "~",
    "? q",
    "*star",
    "&amp",
    "!bang",
    "trailing ",
]
QUEUE_ARGUMENTS = {
    "classic": [
        {"x-message-ttl": 60000, "x-dead-letter-exchange": "dlx", "x-dead-letter-routing-key": "dead"},
        {"x-max-priority": 10, "x-queue-mode": "lazy"},
        {"x-max-length": 1000, "x-overflow": "reject-publish-dlx", "x-expires": 3600000},
        {"x-single-active-consumer": True, "x-custom-plugin-setting": "kept as is"},
        {},
    ],
    "quorum": [
        {"x-delivery-limit": 5, "x-dead-letter-exchange": "dlx", "x-dead-letter-strategy": "at-least-once"},
        {"x-max-length": 10, "x-overflow": "reject-publish", "x-quorum-initial-group-size": 1},
        {},
    ],
    "stream": [{"x-max-age": "7D", "x-max-length-bytes": 100000000, "x-stream-max-segment-size-bytes": 1000000}, {}],
}
EXCHANGE_TYPES = ["direct", "fanout", "topic", "headers"]


def generate(seed: int, amqp_port: int) -> tuple[dict[str, Any], dict[str, str]]:
    """A definitions document, and the plaintext password of each user (the test knows them)."""
    rng = random.Random(seed)
    vhosts = ["/", f"gen-{seed}", f"v ü/{seed} ${{X}}"]
    definitions: dict[str, Any] = {key: [] for key in ("users", "vhosts", "permissions", "topic_permissions")}
    definitions.update({key: [] for key in ("parameters", "policies", "queues", "exchanges", "bindings")})
    passwords: dict[str, str] = {}
    names = iter(NASTY * 10)
    for number, algorithm in enumerate(["sha256", "sha512", "md5", "sha256"]):
        user = f"user-{number}" if number else next(names)
        passwords[user] = f"pw {number} ü:@/%"
        tags = [["administrator"], ["management", "policymaker"], ["monitoring", "custom-tag"], []][number]
        definitions["users"].append(
            {
                "name": user,
                "password_hash": hash_password(passwords[user], f"rabbit_password_hashing_{algorithm}"),
                "hashing_algorithm": f"rabbit_password_hashing_{algorithm}",
                "tags": ",".join(tags),
            }
        )
    # A user without a password (certificate authentication).
    definitions["users"].append({"name": "no-password", "password_hash": "", "tags": ""})
    users = [user["name"] for user in definitions["users"]]
    for vhost in vhosts:
        definitions["vhosts"].append({"name": vhost})
        exchanges = ["dlx"] + [f"ex-{n}" for n in range(rng.randint(3, 6))] + [next(names)]
        for name in exchanges:
            kind = "fanout" if name == "dlx" else rng.choice(EXCHANGE_TYPES)
            arguments = {"alternate-exchange": "dlx"} if rng.random() < 0.3 and name != "dlx" else {}
            definitions["exchanges"].append(
                {
                    "vhost": vhost,
                    "name": name,
                    "type": kind,
                    "durable": rng.random() < 0.8,
                    "auto_delete": rng.random() < 0.1,
                    "internal": rng.random() < 0.1,
                    "arguments": arguments,
                }
            )
        queues = []
        for queue_type, options in QUEUE_ARGUMENTS.items():
            for index, arguments in enumerate(options):
                name = f"{queue_type}-{index}" if rng.random() < 0.8 else next(names)
                durable = queue_type != "classic" or rng.random() < 0.7
                arguments = {**arguments, "x-queue-type": queue_type} if queue_type != "classic" else arguments
                definitions["queues"].append(
                    {
                        "vhost": vhost,
                        "name": name,
                        "durable": durable,
                        "auto_delete": queue_type == "classic" and not durable and rng.random() < 0.5,
                        "arguments": arguments,
                    }
                )
                queues.append(name)
        for _ in range(rng.randint(5, 15)):
            source = rng.choice(exchanges)
            to_exchange = rng.random() < 0.2
            destination = rng.choice(exchanges if to_exchange else queues)
            arguments = {"x-match": rng.choice(["all", "any"]), "format": "pdf"} if rng.random() < 0.2 else {}
            definitions["bindings"].append(
                {
                    "vhost": vhost,
                    "source": source,
                    "destination": destination,
                    "destination_type": "exchange" if to_exchange else "queue",
                    "routing_key": rng.choice(["", "orders.#", "a.*.c", next(names)]),
                    "arguments": arguments,
                }
            )
        definitions["policies"].append(
            {
                "vhost": vhost,
                "name": next(names),
                "pattern": "^classic-",
                "apply-to": "queues",
                "priority": rng.randint(0, 10),
                "definition": {"max-length": 100, "overflow": "reject-publish"},
            }
        )
        definitions["policies"].append(
            {"vhost": vhost, "name": "ae", "pattern": "^ex-", "apply-to": "exchanges", "priority": 0,
             "definition": {"alternate-exchange": "dlx"}}
        )  # fmt: skip
        definitions["parameters"].append(
            {"vhost": vhost, "component": "operator_policy", "name": "cap",
             "value": {"pattern": ".*", "apply-to": "queues", "priority": 1, "definition": {"max-length": 100000}}}
        )  # fmt: skip
        definitions["parameters"].append(
            {"vhost": vhost, "component": "vhost-limits", "name": "limits",
             "value": {"max-connections": rng.randint(10, 100), "max-queues": 500}}
        )  # fmt: skip
        encoded = "p%40ss%2Fw0rd"  # p@ss/w0rd, percent-encoded as a URI needs it
        definitions["parameters"].append(
            {"vhost": vhost, "component": "shovel", "name": next(names),
             "value": {"src-protocol": "amqp091", "src-uri": f"amqp://shoveller:{encoded}@localhost:{amqp_port}",
                       "src-queue": "never-declared-source", "dest-protocol": "amqp091", "dest-uri": "amqp://",
                       "dest-exchange": "ex-0", "ack-mode": "on-confirm", "src-delete-after": "never"}}
        )  # fmt: skip
        definitions["parameters"].append(
            {"vhost": vhost, "component": "federation-upstream", "name": "upstream-1",
             "value": {"uri": [f"amqp://fed:{encoded}@localhost:{amqp_port}", "amqp://localhost"], "max-hops": 2,
                       "expires": 3600000}}
        )  # fmt: skip
        definitions["parameters"].append(
            {"vhost": vhost, "component": "federation-upstream-set", "name": "all-upstreams",
             "value": [{"upstream": "upstream-1"}, {"upstream": "missing-is-fine", "max-hops": 1}]}
        )  # fmt: skip
        for user in rng.sample(users, 3):
            definitions["permissions"].append(
                {"vhost": vhost, "user": user, "configure": rng.choice([".*", "^$", "^app\\."]), "write": ".*",
                 "read": next(names).replace("*", "\\*").replace("[", "\\[").replace("{", "\\{").replace("?", "\\?")}
            )  # fmt: skip
        for user in rng.sample(users, 2):
            for exchange in ("amq.topic", exchanges[1]):
                definitions["topic_permissions"].append(
                    {"vhost": vhost, "user": user, "exchange": exchange, "write": "^sensors\\.", "read": ".*"}
                )
    return definitions, passwords


def _topo(broker: EmptyBroker, *args: str, env: dict[str, str] | None = None) -> Result:
    return run_topo(*args, env={**broker.env(), **(env or {})})


def _set_up(broker: EmptyBroker, definitions: dict[str, Any]) -> dict[str, Any]:
    """The state S: RabbitMQ's import, then what the import cannot set (vhost metadata, user limits)."""
    broker.reset()
    response = broker.import_definitions(json.dumps(definitions))
    assert response.status_code == 204, response.text
    for number, vhost in enumerate(v["name"] for v in definitions["vhosts"]):
        body = {"description": f"generated vhost {number}: ${{not a variable}}", "tags": "gen,t-" + str(number)}
        broker.request("PUT", "vhosts", vhost, json={**body, "tracing": number == 1})
    broker.request("PUT", "user-limits", "user-1", "max-connections", json={"value": 7})
    broker.request("PUT", "user-limits", "user-1", "max-channels", json={"value": 70})
    return broker.state()


def _variables(stderr: str) -> list[str]:
    return re.findall(r"^  (TOPO_[A-Z0-9_]+)  ", stderr, re.MULTILINE)


def _environment(variables: list[str], passwords: dict[str, str]) -> dict[str, str]:
    """Values for the export's placeholders: user passwords by name, the shovel/federation one by kind."""
    env = {}
    for name in variables:
        if name.startswith(("TOPO_SHOVEL_", "TOPO_FEDERATION_")):
            env[name] = "p%40ss%2Fw0rd"
            continue
        user = next(
            u for u in passwords if name == f"TOPO_USER_{re.sub(r'[^A-Z0-9]+', '_', u.upper()).strip('_')}_PASSWORD"
        )
        env[name] = passwords[user]
    return env


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_generated_state_round_trips(seed: int, empty_broker: EmptyBroker, tmp_path: Path) -> None:
    definitions, passwords = generate(seed, empty_broker.node.amqp_port)
    before = _set_up(empty_broker, definitions)

    exported = tmp_path / "export.yaml"
    # The generated states hold every option, auto-delete and x-expires too: keep what clients would own.
    result = _topo(empty_broker, "export", "--include-client-owned", "-o", str(exported))
    assert result.code == 0, result.output
    text = exported.read_text(encoding="utf-8")
    # No secret reaches the file or the terminal: neither hashes, nor URI passwords.
    for user in definitions["users"]:
        if user["password_hash"]:
            assert user["password_hash"] not in text + result.output
    assert "p%40ss" not in text + result.output
    variables = _variables(result.stderr)
    # The round trip's administrator is a user of the broker too, so it is exported like the others.
    env = _environment(variables, {**passwords, ADMIN: empty_broker.password})
    # One per user with a password; per vhost, one in the shovel's URI and one in a federation URI.
    assert len(variables) == len(passwords) + 1 + 2 * len(definitions["vhosts"]), (result.stderr, text)

    plan = _topo(empty_broker, "plan", "--detailed-exitcode", "-f", str(exported), env=env)
    assert plan.code == 0, plan.output
    again = _topo(empty_broker, "export", "--include-client-owned").stdout
    assert again == text, "exporting twice must give identical bytes"

    empty_broker.reset()
    applied = _topo(empty_broker, "apply", "--auto-approve", "-f", str(exported), env=env)
    assert applied.code == 0, applied.output
    after = empty_broker.state()
    # Passwords were given as plaintext: topo sends a hash with a new salt. They must still log in.
    for user, password in passwords.items():
        key = json.dumps(["user", user], ensure_ascii=False)
        assert before[key].pop("password_hash") != after[key].pop("password_hash")
        assert empty_broker.password_is(user, password), user
    assert differences(before, after) == []
    assert _topo(empty_broker, "plan", "--detailed-exitcode", "-f", str(exported), env=env).code == 0


def test_keep_hashes_round_trips_byte_for_byte(empty_broker: EmptyBroker, tmp_path: Path) -> None:
    definitions, _ = generate(4, empty_broker.node.amqp_port)
    before = _set_up(empty_broker, definitions)
    exported = tmp_path / "export.yaml"
    result = _topo(empty_broker, "export", "--keep-hashes", "--include-client-owned", "-o", str(exported))
    assert result.code == 0, result.output
    env = {name: "p%40ss%2Fw0rd" for name in _variables(result.stderr)}
    assert all(name.startswith(("TOPO_SHOVEL_", "TOPO_FEDERATION_")) for name in env)
    empty_broker.reset()
    applied = _topo(empty_broker, "apply", "--auto-approve", "-f", str(exported), env=env)
    assert applied.code == 0, applied.output
    assert differences(before, empty_broker.state()) == []


def test_export_of_some_vhosts_without_users(empty_broker: EmptyBroker, tmp_path: Path) -> None:
    definitions, passwords = generate(5, empty_broker.node.amqp_port)
    _set_up(empty_broker, definitions)
    vhost = definitions["vhosts"][2]["name"]
    result = _topo(empty_broker, "export", "--vhost", vhost, "--no-users")
    assert result.code == 0, result.output
    document = yaml.safe_load(result.stdout)
    assert list(document["vhosts"]) == [vhost.replace("${", "$${")]
    assert "users" not in document
    assert "permissions" not in document["vhosts"][vhost.replace("${", "$${")]

    # With users: only those with access to the vhost, and the plan against the broker is empty.
    result = _topo(empty_broker, "export", "--vhost", vhost, "-o", str(tmp_path / "one.yaml"))
    assert result.code == 0, result.output
    document = yaml.safe_load((tmp_path / "one.yaml").read_text(encoding="utf-8"))
    # On the broker, not in the generated file: the broker also granted the vhost's creator access.
    access = empty_broker.request("GET", "permissions") + empty_broker.request("GET", "topic-permissions")
    with_access = {p["user"] for p in access if p["vhost"] == vhost}
    assert with_access > {p["user"] for p in definitions["permissions"] if p["vhost"] == vhost}
    assert set(document["users"]) == {u.replace("${", "$${") for u in with_access}
    env = _environment(_variables(result.stderr), {**passwords, ADMIN: empty_broker.password})
    plan = _topo(empty_broker, "plan", "--detailed-exitcode", "-f", str(tmp_path / "one.yaml"), env=env)
    assert plan.code == 0, plan.output


def test_unknown_vhost_is_named(empty_broker: EmptyBroker) -> None:
    empty_broker.reset()
    result = _topo(empty_broker, "export", "--vhost", "nope")
    assert result.code == 1
    assert "no vhost 'nope' on the broker" in result.stderr
    assert result.stdout == ""
