"""`topo export` from a definitions file: what a person would write, the same bytes every time, no secrets.

No broker: small definitions files are written to tmp_path and go through read_definitions and
build_export, or through the CLI's `export --from-definitions`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cli_runner import run_topo
from topo.definitions import read_definitions
from topo.export import ExportResult, ExportScope, build_export
from topo.load import load_topology
from topo.state import Key, Kind, same_value
from topo.yamlload import load_yaml

SHA256 = "rabbit_password_hashing_sha256"
SHA512 = "rabbit_password_hashing_sha512"
MD5 = "rabbit_password_hashing_md5"
# Real hashes (fixed salts) of "orders-pw", "billing-pw" and "legacy-pw": the reader checks their length.
HASH = "AQIDBKmjPX3DJDtAeit+dvv4vb5TSAUZrWABshVvYP8haWRS"
HASH_512 = "BQYHCIVWmB3fIS4ApCA8fZkaQrrq+1QdqhY3AfWDqHWTJUr5lN4FzNhT+2FxCnH7Fk2WBnYPnZ+guijZA4o0D44WvZg="
HASH_MD5 = "CQoLDMVsy+Z5bcXg864PTJ+1NTk="


def queue(name: str, vhost: str = "/", **fields: Any) -> dict[str, Any]:
    return {"name": name, "vhost": vhost, "durable": True, "auto_delete": False, "arguments": {}, **fields}


def exchange(name: str, kind: str, vhost: str = "/", **fields: Any) -> dict[str, Any]:
    base = {"name": name, "vhost": vhost, "type": kind, "durable": True, "auto_delete": False, "internal": False}
    return {**base, "arguments": {}, **fields}


def binding(source: str, destination: str, routing_key: str = "", vhost: str = "/", **fields: Any) -> dict[str, Any]:
    base = {"source": source, "vhost": vhost, "destination": destination, "destination_type": "queue"}
    return {**base, "routing_key": routing_key, "arguments": {}, **fields}


def user(name: str, password_hash: str = HASH, algorithm: str = SHA256, tags: Any = "") -> dict[str, Any]:
    return {"name": name, "password_hash": password_hash, "hashing_algorithm": algorithm, "tags": tags}


def write(tmp_path: Path, definitions: dict[str, Any], name: str = "definitions.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(definitions, indent=2), encoding="utf-8")
    return path


def export(
    tmp_path: Path,
    definitions: dict[str, Any],
    keep_hashes: bool = False,
    name: str = "definitions.json",
    scope: ExportScope | None = None,
) -> ExportResult:
    read = read_definitions(str(write(tmp_path, definitions, name)))
    return build_export(read.actual, read.vhosts, read.has_users, keep_hashes, "a test", read.notes, scope)


def parsed(result: ExportResult) -> Any:
    """The exported document as topo reads it, with ${VARIABLE} read as <VARIABLE>.

    A sentinel rather than the placeholder itself: an escaped `$${VARIABLE}` reads back as `${VARIABLE}`,
    so only a value that differs shows that a placeholder really is one.
    """
    env = {name: f"<{name}>" for name in result.variables.names}
    data, problems = load_yaml(result.text, "export.yaml", env=env)
    assert problems == []
    return data


def reordered(value: Any) -> Any:
    """The same JSON with every object's keys in reverse order (lists keep theirs: their order is data)."""
    if isinstance(value, dict):
        return {key: reordered(item) for key, item in reversed(value.items())}
    if isinstance(value, list):
        return [reordered(item) for item in value]
    return value


def shuffled(definitions: dict[str, Any]) -> dict[str, Any]:
    """Objects in reverse order within each section, and every key order reversed."""
    return {
        key: list(reversed(reordered(items))) if isinstance(items, list) else reordered(items)
        for key, items in reversed(definitions.items())
    }


# ---- defaults, types ---------------------------------------------------------------------------------


DEFAULTS = {
    "vhosts": [{"name": "/"}],
    "exchanges": [
        exchange("plain", "direct"),
        exchange("odd", "topic", durable=False, auto_delete=True, internal=True, arguments={"alternate-exchange": "x"}),
        exchange("x", "fanout"),
    ],
    "queues": [
        queue("orders"),
        queue("scratch", durable=False, auto_delete=True, arguments={"x-max-length": 10}),
        queue("jobs", arguments={"x-queue-type": "quorum"}),
        queue("events", type="stream", arguments={"x-max-age": "7D"}),
    ],
    "bindings": [
        binding("plain", "orders"),
        binding("odd", "plain", "k", destination_type="exchange"),
    ],
    "policies": [
        {"vhost": "/", "name": "p-all", "pattern": "^orders$", "apply-to": "all", "priority": 0,
         "definition": {"max-length": 100}},
        {"vhost": "/", "name": "p-queues", "pattern": "^scratch$", "apply-to": "queues", "priority": 5,
         "definition": {"message-ttl": 1000, "expires": 60000}},
    ],
}  # fmt: skip


def test_defaults_are_left_out(tmp_path: Path) -> None:
    # The auto-delete exchange and queue are the clients' by default: kept here to see their flags written.
    document = parsed(export(tmp_path, DEFAULTS, scope=ExportScope(include_client_owned=True)))
    assert document == {
        "version": 1,
        "vhosts": {
            "/": {
                "exchanges": {
                    "odd": {
                        "type": "topic",
                        "durable": False,
                        "auto_delete": True,
                        "internal": True,
                        "arguments": {"alternate-exchange": "x"},
                    },
                    "plain": {"type": "direct"},
                    "x": {"type": "fanout"},
                },
                "queues": {
                    "events": {"type": "stream", "arguments": {"x-max-age": "7D"}},
                    "jobs": {"type": "quorum"},
                    "orders": {},
                    "scratch": {"durable": False, "auto_delete": True, "arguments": {"x-max-length": 10}},
                },
                "bindings": [
                    {"source": "odd", "destination": "plain", "destination_type": "exchange", "routing_key": "k"},
                    {"source": "plain", "destination": "orders"},
                ],
                "policies": {
                    "p-all": {"pattern": "^orders$", "definition": {"max-length": 100}},
                    "p-queues": {
                        "pattern": "^scratch$",
                        "apply-to": "queues",
                        "priority": 5,
                        "definition": {"expires": 60000, "message-ttl": 1000},
                    },
                },
            }
        },
    }


def test_exchange_type_is_written_even_when_it_is_the_default(tmp_path: Path) -> None:
    text = export(tmp_path, DEFAULTS).text
    assert "      plain:\n        type: direct\n" in text


def test_plugin_exchange_type_comes_with_a_comment(tmp_path: Path) -> None:
    definitions = {"exchanges": [exchange("later", "x-delayed-message", arguments={"x-delayed-type": "direct"})]}
    text = export(tmp_path, definitions).text
    assert (
        "      # Type x-delayed-message comes from a plugin: enable it on every target broker.\n"
        "      later:\n"
        "        type: x-delayed-message\n"
    ) in text


def test_classic_queue_is_spelt_out_where_the_vhost_defaults_to_quorum(tmp_path: Path) -> None:
    definitions = {
        "vhosts": [{"name": "/"}, {"name": "q", "default_queue_type": "quorum"}],
        "queues": [
            queue("classic"),
            queue("quorum", type="quorum"),
            queue("classic", "q"),
            queue("quorum", "q", type="quorum"),
            queue("transient", "q", durable=False),
        ],
    }
    vhosts = parsed(export(tmp_path, definitions))["vhosts"]
    assert vhosts["/"]["queues"] == {"classic": {}, "quorum": {"type": "quorum"}}
    assert vhosts["q"]["default_queue_type"] == "quorum"
    # Left without `type`, these would be created as quorum queues in q.
    assert vhosts["q"]["queues"] == {
        "classic": {"type": "classic"},
        "quorum": {},
        "transient": {"type": "classic", "durable": False},
    }


# ---- stable bytes, sorted order ----------------------------------------------------------------------


EVERYTHING = {
    "users": [user("ops", tags="administrator"), user("app"), user("cert", password_hash="")],
    "vhosts": [
        {"name": "shop", "description": "Web shop", "tags": "prod,eu",
         "limits": {"max-queues": 10, "max-connections": 5}},
        {"name": "/"},
    ],
    "permissions": [
        {"user": "ops", "vhost": "shop", "configure": ".*", "write": ".*", "read": ".*"},
        {"user": "app", "vhost": "shop", "configure": "", "write": "^orders", "read": "^orders"},
    ],
    "topic_permissions": [{"user": "app", "vhost": "shop", "exchange": "shop", "write": "^a", "read": "^b"}],
    "exchanges": [exchange("shop", "topic", "shop"), exchange("dlx", "fanout", "shop")],
    "queues": [
        queue("orders", "shop", arguments={"x-message-ttl": 60000, "x-dead-letter-exchange": "dlx", "x-max-length": 9}),
        queue("dead", "shop"),
        queue("tasks"),
    ],
    "bindings": [
        binding("shop", "orders", "order.#", "shop"),
        binding("dlx", "dead", "", "shop"),
        binding("shop", "orders", "invoice.*", "shop"),
    ],
    "policies": [
        {"vhost": "shop", "name": "ha", "pattern": ".*", "apply-to": "queues", "priority": 1,
         "definition": {"max-length": 1000, "overflow": "reject-publish"}},
    ],
}  # fmt: skip


def test_the_same_input_gives_the_same_bytes(tmp_path: Path) -> None:
    read = read_definitions(str(write(tmp_path, EVERYTHING)))
    first = build_export(read.actual, read.vhosts, True, False, "a test", [])
    second = build_export(read.actual, read.vhosts, True, False, "a test", [])
    again = export(tmp_path, EVERYTHING)
    assert first.text == second.text == again.text
    assert first.variables.names == again.variables.names


def test_key_and_object_order_of_the_input_does_not_change_the_output(tmp_path: Path) -> None:
    original = export(tmp_path, EVERYTHING, name="a.json")
    other = export(tmp_path, shuffled(EVERYTHING), name="b.json")
    assert other.text == original.text
    assert other.variables.names == original.variables.names


def test_key_order_inside_parameter_values_does_not_change_the_output(tmp_path: Path) -> None:
    definitions = {
        "parameters": [
            {"vhost": "/", "component": "shovel", "name": "move", "value": {
                "src-uri": "amqp://src.example", "src-queue": "in", "dest-uri": "amqp://dest.example",
                "dest-queue": "out", "dest-publish-properties": {"delivery_mode": 2, "priority": 1}}},
            {"vhost": "/", "component": "federation-upstream", "name": "a", "value": {"uri": "amqp://a.example"}},
            {"vhost": "/", "component": "federation-upstream-set", "name": "both", "value": [
                {"upstream": "a", "exchange": "x", "max-hops": 2}, {"upstream": "b", "queue": "q"}]},
        ]
    }  # fmt: skip
    original = export(tmp_path, definitions, name="a.json")
    other = export(tmp_path, shuffled(definitions), name="b.json")
    assert other.text == original.text


def test_vhosts_queues_bindings_and_users_are_sorted(tmp_path: Path) -> None:
    definitions = {
        "users": [user(name, password_hash="") for name in ("zed", "Bob", "alice")],
        "vhosts": [{"name": name} for name in ("zeta", "/", "alpha", "Beta")],
        "queues": [queue(name, "alpha") for name in ("b", "a", "C", "a.b", "a-b")],
        "exchanges": [exchange(name, "topic", "alpha") for name in ("y", "x")],
        "bindings": [
            binding("y", "a", "2", "alpha"),
            binding("x", "b", "", "alpha"),
            binding("x", "a", "z", "alpha"),
            binding("x", "a", "m", "alpha"),
            binding("y", "x", "", "alpha", destination_type="exchange"),
            binding("x", "C", "", "alpha"),
        ],
    }
    document = parsed(export(tmp_path, definitions))
    assert list(document["users"]) == ["Bob", "alice", "zed"]
    assert list(document["vhosts"]) == ["/", "Beta", "alpha", "zeta"]
    alpha = document["vhosts"]["alpha"]
    assert list(alpha["queues"]) == ["C", "a", "a-b", "a.b", "b"]
    assert list(alpha["exchanges"]) == ["x", "y"]
    # By source, then destination type, destination and routing key.
    assert [(b["source"], b["destination"], b.get("routing_key", "")) for b in alpha["bindings"]] == [
        ("x", "C", ""),
        ("x", "a", "m"),
        ("x", "a", "z"),
        ("x", "b", ""),
        ("y", "x", ""),  # exchange before queue: the type sorts before the name
        ("y", "a", "2"),
    ]


# ---- users and secrets -------------------------------------------------------------------------------


def test_user_passwords_become_placeholders_with_collision_suffixes(tmp_path: Path) -> None:
    definitions = {"users": [user("a_b"), user("ops", tags="administrator"), user("a-b"), user("svc.billing@eu")]}
    result = export(tmp_path, definitions)
    assert parsed(result)["users"] == {
        "a-b": {"password": "<TOPO_USER_A_B_PASSWORD>"},
        # `a-b` and `a_b` would share one variable; the later one (by name) gets a suffix.
        "a_b": {"password": "<TOPO_USER_A_B_PASSWORD_2>"},
        "ops": {"password": "<TOPO_USER_OPS_PASSWORD>", "tags": ["administrator"]},
        "svc.billing@eu": {"password": "<TOPO_USER_SVC_BILLING_EU_PASSWORD>"},
    }
    assert result.variables.names == {
        "TOPO_USER_A_B_PASSWORD": "password of user 'a-b'",
        "TOPO_USER_A_B_PASSWORD_2": "password of user 'a_b'",
        "TOPO_USER_OPS_PASSWORD": "password of user 'ops'",
        "TOPO_USER_SVC_BILLING_EU_PASSWORD": "password of user 'svc.billing@eu'",
    }
    assert result.variables.known == {}  # only the user knows these
    assert HASH not in result.text
    assert "password_hash" not in result.text


@pytest.mark.parametrize("password", ["s3cret", "123456", "true", "12:30", "0x1F", "null"])
def test_password_placeholder_reads_back_as_the_string_in_the_environment(tmp_path: Path, password: str) -> None:
    # An unquoted ${VAR} is read again as YAML (so `${MAX:-100}` can be a number); a password must stay
    # a string whatever it looks like.
    result = export(tmp_path, {"users": [user("app")]})
    path = tmp_path / "export.yaml"
    path.write_text(result.text, encoding="utf-8")
    desired = load_topology([str(path)], env={"TOPO_USER_APP_PASSWORD": password}).desired
    assert desired.objects[Key(Kind.USER, "", "app")].attrs["password"].plaintext == password


def test_keep_hashes_keeps_the_hash_and_a_non_default_algorithm(tmp_path: Path) -> None:
    definitions = {
        "users": [
            user("app"),
            user("billing", HASH_512, SHA512, tags=["management"]),
            user("legacy", HASH_MD5, MD5),
            {"name": "implicit", "password_hash": HASH, "tags": ""},  # no hashing_algorithm: sha256
        ]
    }
    result = export(tmp_path, definitions, keep_hashes=True)
    assert parsed(result)["users"] == {
        "app": {"password_hash": HASH},
        "billing": {"password_hash": HASH_512, "hashing_algorithm": SHA512, "tags": ["management"]},
        "implicit": {"password_hash": HASH},
        "legacy": {"password_hash": HASH_MD5, "hashing_algorithm": MD5},
    }
    assert result.variables.names == {}
    assert SHA256 not in result.text


@pytest.mark.parametrize("keep_hashes", [False, True])
def test_user_without_password_has_a_comment_and_no_password(tmp_path: Path, keep_hashes: bool) -> None:
    definitions = {"users": [user("cert", password_hash="", tags="monitoring"), user("bare", password_hash="")]}
    result = export(tmp_path, definitions, keep_hashes=keep_hashes)
    comment = "  # No password: this user logs in with a certificate or another auth backend.\n"
    assert f"{comment}  bare: {{}}\n" in result.text
    assert f"{comment}  cert:\n    tags: [monitoring]\n" in result.text
    assert parsed(result)["users"] == {"bare": {}, "cert": {"tags": ["monitoring"]}}
    assert result.variables.names == {}


URIS = {
    "vhosts": [{"name": "/"}],
    "parameters": [
        {"vhost": "/", "component": "shovel", "name": "move", "value": {
            "src-protocol": "amqp091",
            "src-uri": "amqp://shovel-user:s3cr%40t@source.example:5672/%2F",
            "src-queue": "in",
            "dest-protocol": "amqp091",
            "dest-uri": ["amqp://dest-user:d3stpw@dest-a.example/${literal}", "amqps://dest-b.example"],
            "dest-queue": "out",
        }},
        {"vhost": "/", "component": "federation-upstream", "name": "origin", "value": {
            "uri": "amqps://fed-user:f3dpw@upstream.example:5671/%2Fprod?heartbeat=10",
            "expires": 3600000,
        }},
    ],
}  # fmt: skip


def test_uri_passwords_become_placeholders_and_user_and_host_stay(tmp_path: Path) -> None:
    result = export(tmp_path, URIS)
    vhost = parsed(result)["vhosts"]["/"]
    assert vhost["shovels"] == {
        "move": {
            "dest-protocol": "amqp091",
            "dest-queue": "out",
            "dest-uri": [
                "amqp://dest-user:<TOPO_SHOVEL_MOVE_DEST_PASSWORD_1>@dest-a.example/${literal}",
                "amqps://dest-b.example",
            ],
            "src-protocol": "amqp091",
            "src-queue": "in",
            "src-uri": "amqp://shovel-user:<TOPO_SHOVEL_MOVE_SRC_PASSWORD>@source.example:5672/%2F",
        }
    }
    assert vhost["federation_upstreams"] == {
        "origin": {
            "expires": 3600000,
            "uri": "amqps://fed-user:<TOPO_FEDERATION_ORIGIN_PASSWORD>@upstream.example:5671/%2Fprod?heartbeat=10",
        }
    }
    # The literal `${` that was in the URI is escaped; the placeholder is not.
    assert "amqp://dest-user:${TOPO_SHOVEL_MOVE_DEST_PASSWORD_1}@dest-a.example/$${literal}" in result.text
    assert result.variables.known == {
        "TOPO_SHOVEL_MOVE_SRC_PASSWORD": "s3cr%40t",
        "TOPO_SHOVEL_MOVE_DEST_PASSWORD_1": "d3stpw",
        "TOPO_FEDERATION_ORIGIN_PASSWORD": "f3dpw",
    }
    assert result.variables.names["TOPO_SHOVEL_MOVE_SRC_PASSWORD"] == (
        "password of 'shovel-user' in the URI of shovel 'move' in vhost '/' (percent-encoded)"
    )


def test_uri_placeholder_gives_back_the_uri_with_the_password(tmp_path: Path) -> None:
    result = export(tmp_path, URIS)
    path = tmp_path / "export.yaml"
    path.write_text(result.text, encoding="utf-8")
    env = {**result.variables.known, "TOPO_SHOVEL_MOVE_SRC_PASSWORD": "123"}  # a number must stay text
    desired = load_topology([str(path)], env=env).desired
    shovel = desired.objects[Key(Kind.PARAMETER, "/", '["shovel","move"]')].attrs["value"]
    assert shovel["src-uri"] == "amqp://shovel-user:123@source.example:5672/%2F"
    assert shovel["dest-uri"][0] == "amqp://dest-user:d3stpw@dest-a.example/${literal}"


SECRETS = [HASH, HASH_512, "s3cr%40t", "s3cr@t", "d3stpw", "f3dpw"]


def test_no_secret_reaches_the_document_or_the_variable_listing(tmp_path: Path) -> None:
    definitions = {**URIS, "users": [user("app"), user("billing", HASH_512, SHA512)]}
    result = export(tmp_path, definitions)
    shown = "\n".join([result.text, *result.variables.names, *result.variables.names.values(), *result.notes])
    assert [secret for secret in SECRETS if secret in shown] == []


def test_no_secret_reaches_the_output_of_the_command(tmp_path: Path) -> None:
    path = write(tmp_path, {**URIS, "users": [user("app"), user("billing", HASH_512, SHA512)]})
    result = run_topo("export", "--from-definitions", str(path))
    assert result.code == 0, result.output
    assert [secret for secret in SECRETS if secret in result.output] == []
    assert "TOPO_SHOVEL_MOVE_SRC_PASSWORD" in result.stderr


# ---- the export reads back as what it came from -------------------------------------------------------


def test_export_loads_back_as_the_objects_it_was_made_from(tmp_path: Path) -> None:
    read = read_definitions(str(write(tmp_path, EVERYTHING)))
    result = build_export(read.actual, read.vhosts, True, True, "a test", [])
    path = tmp_path / "export.yaml"
    path.write_text(result.text, encoding="utf-8")
    desired = load_topology([str(path)], env={}).desired
    assert set(desired.objects) == set(read.actual.objects)
    for key, obj in read.actual.objects.items():
        wanted = desired.objects[key].attrs
        differing = [name for name, value in wanted.items() if not same_value(obj.attrs.get(name), value)]
        assert differing == [], key


# ---- the CLI -----------------------------------------------------------------------------------------


def test_export_to_a_file_lists_the_variables_on_stderr(tmp_path: Path) -> None:
    path = write(tmp_path, EVERYTHING, "defs.json")
    out = tmp_path / "topology.yaml"
    result = run_topo("export", "--from-definitions", str(path), "-o", str(out))
    assert result.code == 0, result.output
    assert result.stdout == ""
    text = out.read_text(encoding="utf-8")
    assert text.startswith("# Exported by topo from definitions file defs.json.\n")
    read = read_definitions(str(path))
    assert text == build_export(read.actual, read.vhosts, True, False, "definitions file defs.json", []).text
    assert "Set these environment variables before topo plan or apply:\n" in result.stderr
    assert "  TOPO_USER_APP_PASSWORD  password of user 'app'\n" in result.stderr
    assert "  TOPO_USER_OPS_PASSWORD  password of user 'ops'\n" in result.stderr
    assert f"Wrote {out}." in result.stderr


def test_export_without_users_leaves_out_users_and_permissions(tmp_path: Path) -> None:
    path = write(tmp_path, EVERYTHING)
    result = run_topo("export", "--from-definitions", str(path), "--no-users")
    assert result.code == 0, result.output
    assert "\nusers:" not in result.stdout
    assert "permissions:" not in result.stdout
    assert "TOPO_USER_" not in result.output
    assert "    queues:\n      dead: {}\n" in result.stdout


def test_export_of_one_vhost(tmp_path: Path) -> None:
    path = write(tmp_path, EVERYTHING)
    result = run_topo("export", "--from-definitions", str(path), "--vhost", "/", "--keep-hashes")
    assert result.code == 0, result.output
    data, problems = load_yaml(result.stdout, "out.yaml", env={})
    assert problems == []
    assert list(data["vhosts"]) == ["/"]
    assert data["vhosts"]["/"] == {"queues": {"tasks": {}}}
    # Only users with access to the exported vhosts come along: none has access to "/".
    assert "users" not in data
    result = run_topo("export", "--from-definitions", str(path), "--vhost", "shop", "--keep-hashes")
    assert result.code == 0, result.output
    data, problems = load_yaml(result.stdout, "out.yaml", env={})
    assert problems == []
    assert sorted(data["users"]) == ["app", "ops"]
    assert data["users"]["app"] == {"password_hash": HASH}


def test_export_of_a_vhost_the_file_does_not_have(tmp_path: Path) -> None:
    path = write(tmp_path, EVERYTHING)
    result = run_topo("export", "--from-definitions", str(path), "--vhost", "nope")
    assert result.code == 1
    assert f"{path} has no vhost 'nope'" in result.stderr
    assert result.stdout == ""


# ---- found in review: states RabbitMQ holds that an export must reproduce ------------------------------


def test_topic_permissions_are_exported_without_regular_permissions(tmp_path: Path) -> None:
    definitions = {
        "users": [user("app")],
        "vhosts": [{"name": "/"}],
        "topic_permissions": [{"user": "app", "vhost": "/", "exchange": "amq.topic", "write": "^a", "read": "^b"}],
    }
    document = parsed(export(tmp_path, definitions))
    assert document["vhosts"]["/"] == {"topic_permissions": {"app": {"amq.topic": {"write": "^a", "read": "^b"}}}}


def test_a_limit_of_minus_one_is_no_limit(tmp_path: Path) -> None:
    # The broker keeps -1 in its record after `topo apply` (or rabbitmqctl) removes a limit.
    definitions = {
        "users": [{**user("app"), "limits": {"max-connections": -1, "max-channels": 5}}],
        "vhosts": [{"name": "/"}],
        "parameters": [{"vhost": "/", "component": "vhost-limits", "name": "limits", "value": {"max-queues": -1}}],
    }
    document = parsed(export(tmp_path, definitions))
    assert document["users"]["app"]["limits"] == {"max-channels": 5}
    assert "limits" not in document["vhosts"]["/"]


@pytest.mark.parametrize("value", [1e20, 1.5e-7, 2.0, -0.5])
def test_float_arguments_read_back_as_the_same_float(tmp_path: Path, value: float) -> None:
    definitions = {"queues": [queue("q", arguments={"x-plugin-weight": value})]}
    document = parsed(export(tmp_path, definitions))
    loaded = document["vhosts"]["/"]["queues"]["q"]["arguments"]["x-plugin-weight"]
    assert type(loaded) is float and loaded == value


def test_user_without_password_keeps_no_algorithm(tmp_path: Path) -> None:
    definitions = {"users": [user("cert", password_hash="", algorithm=MD5)], "vhosts": [{"name": "/"}]}
    assert parsed(export(tmp_path, definitions, keep_hashes=True))["users"]["cert"] == {}


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("amqp://u:p@ss@host/v", "amqp://u:${TOPO_SHOVEL_S_SRC_PASSWORD}@host/v"),
        ("amqp://u:two words@host", "amqp://u:${TOPO_SHOVEL_S_SRC_PASSWORD}@host"),
        ("amqp://user@corp:secretpw@host", "amqp://user@corp:${TOPO_SHOVEL_S_SRC_PASSWORD}@host"),
    ],
)
def test_the_whole_uri_password_becomes_the_placeholder(tmp_path: Path, uri: str, shown: str) -> None:
    # RabbitMQ accepts unencoded @ and spaces in these URIs: the userinfo ends at the last @.
    value = {"src-uri": uri, "src-queue": "a", "dest-uri": "amqp://", "dest-queue": "b"}
    definitions = {"parameters": [{"vhost": "/", "component": "shovel", "name": "s", "value": value}]}
    result = export(tmp_path, definitions)
    assert f'src-uri: "{shown}"' in result.text
    password = uri.split("://", 1)[1].rpartition("@")[0].partition(":")[2]
    assert password not in result.text
    assert result.variables.known["TOPO_SHOVEL_S_SRC_PASSWORD"] == password


def test_placeholder_names_depend_on_the_object_alone(tmp_path: Path) -> None:
    def upstream(vhost: str) -> dict[str, Any]:
        value = {"uri": ["amqp://a:pw1@h1", "amqp://h2", "amqp://b:pw2@h3"]}
        return {"vhost": vhost, "component": "federation-upstream", "name": "dc-2", "value": value}

    definitions = {"vhosts": [{"name": "/"}, {"name": "eu"}], "parameters": [upstream("/"), upstream("eu")]}
    names = list(export(tmp_path, definitions).variables.names)
    assert names == [
        "TOPO_FEDERATION_DC_2_PASSWORD_1",
        "TOPO_FEDERATION_DC_2_PASSWORD_3",
        "TOPO_FEDERATION_EU_DC_2_PASSWORD_1",
        "TOPO_FEDERATION_EU_DC_2_PASSWORD_3",
    ]
