"""Definitions files -> actual state: every quirk real exports have is read, every import error is named.

Each file under tests/definitions/ holds one quirk or one error. No broker, no network: only
topo.definitions and the CLI's `export --from-definitions`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_runner import run_topo
from topo.definitions import FromDefinitions, read_definitions
from topo.errors import Problem, ValidationFailed
from topo.passwords import Password
from topo.state import Key, Kind, binding_key

DEFINITIONS = Path(__file__).parent / "definitions"
SHA256 = "rabbit_password_hashing_sha256"
HASH = "AQIDBKmjPX3DJDtAeit+dvv4vb5TSAUZrWABshVvYP8haWRS"  # salt 01020304, sha256 of "orders-pw"


def read(name: str) -> FromDefinitions:
    return read_definitions(str(DEFINITIONS / name))


def problems_of(name: str) -> list[Problem]:
    with pytest.raises(ValidationFailed) as caught:
        read(name)
    return caught.value.problems


def attrs_of(result: FromDefinitions) -> dict[Key, dict[str, object]]:
    return {key: obj.attrs for key, obj in result.actual.objects.items()}


def vhost_attrs(description: str = "", tags: list[str] | None = None) -> dict[str, object]:
    return {"description": description, "tags": tags or [], "tracing": False, "default_queue_type": None}


ROOT = Key(Kind.VHOST, "/", "/")

# ---- quirks: accepted, as RabbitMQ accepts them --------------------------------------------------------

QUIRKS = (
    "tags_string.json",
    "tags_list.json",
    "tags_empty.json",
    "queue_type_top_level.json",
    "queue_type_argument.json",
    "vhost_limits_empty_list.json",
    "vhost_limits_object.json",
    "missing_arguments.json",
    "missing_internal.json",
    "missing_hashing_algorithm.json",
    "extra_keys.json",
    "partial_no_vhost.json",
    "server_named_queues.json",
    "parameters_null_with_vhost_limits.json",
)


@pytest.mark.parametrize(
    ("name", "user", "tags"),
    [
        ("tags_string.json", "ops", ["administrator", "monitoring"]),  # "monitoring, administrator"
        ("tags_list.json", "ops", ["management", "policymaker"]),
        ("tags_empty.json", "app", []),
    ],
)
def test_user_tags_in_every_spelling(name: str, user: str, tags: list[str]) -> None:
    result = read(name)
    assert attrs_of(result) == {Key(Kind.USER, "", user): {"tags": tags, "password": Password(HASH, SHA256)}}
    assert result.has_users
    assert result.vhosts == []
    assert result.notes == []


def test_queue_type_given_only_at_top_level() -> None:
    # RabbitMQ 3.13 exports write the type beside the arguments, not in x-queue-type.
    result = read("queue_type_top_level.json")
    assert attrs_of(result) == {
        ROOT: vhost_attrs(),
        Key(Kind.QUEUE, "/", "orders"): {
            "type": "quorum",
            "durable": True,
            "auto_delete": False,
            "arguments": {"x-delivery-limit": 5},
        },
    }


def test_queue_type_given_only_as_argument() -> None:
    result = read("queue_type_argument.json")
    assert attrs_of(result)[Key(Kind.QUEUE, "/", "events")] == {
        "type": "stream",
        "durable": True,
        "auto_delete": False,
        "arguments": {"x-max-age": "7D"},  # the type is an attribute, not an argument, on both sides
    }


def test_vhost_limits_as_empty_list() -> None:
    # 3.13 writes `"limits": []` on a vhost without limits.
    result = read("vhost_limits_empty_list.json")
    assert attrs_of(result) == {ROOT: vhost_attrs("Default virtual host")}
    assert result.vhosts == ["/"]


def test_vhost_limits_as_object() -> None:
    result = read("vhost_limits_object.json")
    assert attrs_of(result) == {
        Key(Kind.VHOST, "shop", "shop"): vhost_attrs(),
        Key(Kind.VHOST_LIMIT, "shop", "max-connections"): {"value": 10},
        Key(Kind.VHOST_LIMIT, "shop", "max-queues"): {"value": 200},
    }
    assert result.vhosts == ["shop"]


def test_missing_arguments_mean_none() -> None:
    result = read("missing_arguments.json")
    assert attrs_of(result) == {
        ROOT: vhost_attrs(),
        Key(Kind.QUEUE, "/", "orders"): {"type": "classic", "durable": True, "auto_delete": False, "arguments": {}},
        Key(Kind.EXCHANGE, "/", "shop"): {
            "type": "topic",
            "durable": True,
            "auto_delete": False,
            "internal": False,
            "arguments": {},
        },
        binding_key("/", "shop", "queue", "orders", "order.*", {}): {
            "source": "shop",
            "destination_type": "queue",
            "destination": "orders",
            "routing_key": "order.*",
            "arguments": {},
        },
    }


def test_missing_internal_means_false() -> None:
    result = read("missing_internal.json")
    assert attrs_of(result)[Key(Kind.EXCHANGE, "/", "shop")] == {
        "type": "fanout",
        "durable": False,
        "auto_delete": True,
        "internal": False,
        "arguments": {},
    }


def test_missing_hashing_algorithm_means_sha256() -> None:
    result = read("missing_hashing_algorithm.json")
    password = attrs_of(result)[Key(Kind.USER, "", "app")]["password"]
    assert password == Password(HASH, SHA256)


def test_extra_keys_are_accepted_and_top_level_ones_noted() -> None:
    result = read("extra_keys.json")
    # The queue's `description` is not something topo compares: it must neither fail nor leak into attrs.
    assert attrs_of(result) == {
        ROOT: vhost_attrs(),
        Key(Kind.QUEUE, "/", "orders"): {"type": "classic", "durable": True, "auto_delete": False, "arguments": {}},
    }
    # Version keys are RabbitMQ's own: only the unknown ones are worth a note.
    assert result.notes == ["ignored top-level keys RabbitMQ does not read: _comment, x-exported-by"]


def test_partial_file_without_vhost_keys_means_the_default_vhost() -> None:
    result = read("partial_no_vhost.json")
    assert result.vhosts == ["/"]
    assert not result.has_users
    assert result.actual.vhosts == {"/"}
    assert set(result.actual.objects) == {
        ROOT,
        Key(Kind.QUEUE, "/", "orders"),
        Key(Kind.EXCHANGE, "/", "shop"),
        binding_key("/", "shop", "queue", "orders", "orders", {}),
    }
    assert attrs_of(result)[ROOT] == vhost_attrs()


def test_server_named_queues_and_built_in_exchanges_are_left_out_with_a_note() -> None:
    result = read("server_named_queues.json")
    # The binding to the server-named queue goes with it; the one to a declared queue stays, although
    # its source (amq.topic) is built in and not exported.
    assert set(result.actual.objects) == {
        ROOT,
        Key(Kind.QUEUE, "/", "orders"),
        binding_key("/", "amq.topic", "queue", "orders", "orders.#", {}),
    }
    assert result.notes == [
        "left out queue 'amq.gen-JzTY20BRgKO-HjmUJj0wLg' in vhost '/': "
        "a server-named or transient queue (RabbitMQ's import skips it too)",
        "left out built-in exchange 'amq.topic' in vhost '/'",
    ]


def test_vhost_limits_with_null_parameters_section() -> None:
    # A null section means "none" everywhere else in the file; it must not stop the vhost's limits.
    result = read("parameters_null_with_vhost_limits.json")
    assert attrs_of(result) == {ROOT: vhost_attrs(), Key(Kind.VHOST_LIMIT, "/", "max-queues"): {"value": 100}}


# ---- errors: what RabbitMQ rejects or silently drops, named with file, line and path -----------------

# (file, line, path, the object the message names, why)
ERRORS: list[tuple[str, int, str, str, str]] = [
    (
        "queue_type_contradiction.json",
        5,
        "queues[1].type",
        "queue 'orders' in vhost '/'",
        "type 'quorum' contradicts x-queue-type 'classic'",
    ),
    (
        "binding_undeclared_queue.json",
        6,
        "bindings[0].destination",
        "binding from exchange 'shop' to queue 'invoices' in vhost '/'",
        "destination queue 'invoices' is not declared in the file",
    ),
    (
        # bindings[0] comes from amq.direct: built-in exchanges exist on every broker and are not reported.
        "binding_undeclared_exchange.json",
        7,
        "bindings[1].source",
        "binding from exchange 'shop' to queue 'orders' in vhost '/'",
        "source exchange 'shop' is not declared in the file",
    ),
    (
        "permission_undeclared_vhost.json",
        10,
        "permissions[1].vhost",
        "permission of user 'app' on vhost 'staging'",
        "vhost 'staging' is not declared in the file",
    ),
    (
        "permission_undeclared_user.json",
        10,
        "permissions[1].user",
        "permission of user 'reporting' on vhost '/'",
        "user 'reporting' is not declared in the file",
    ),
    ("hash_not_base64.json", 3, "users[0].password_hash", "user 'app'", "password_hash is not valid base64"),
    ("queue_without_durable.json", 4, "queues[0].durable", "queue 'orders' in vhost '/'", "missing 'durable'"),
    ("user_without_tags.json", 4, "users[1].tags", "user 'app'", "missing 'tags'"),
    ("invalid_json.json", 4, "", "not valid JSON", "Expecting value"),
    ("top_level_array.json", 1, "", "a definitions file is a JSON object", ""),
    ("parameters_not_a_list_with_vhost_limits.json", 1, "parameters", "must be an array of objects", ""),
]


def test_every_fixture_is_used() -> None:
    on_disk = {path.name for path in DEFINITIONS.iterdir()}
    others = {"several_problems.json", "section_not_a_list.json", "per_vhost_export.json"}
    assert on_disk == set(QUIRKS) | {case[0] for case in ERRORS} | others


@pytest.mark.parametrize(("name", "line", "path", "names", "reason"), ERRORS, ids=[case[0] for case in ERRORS])
def test_error_is_reported_precisely(name: str, line: int, path: str, names: str, reason: str) -> None:
    problems = problems_of(name)
    assert len(problems) == 1, "\n".join(map(str, problems))
    problem = problems[0]
    assert problem.file == str(DEFINITIONS / name)
    assert problem.line == line, str(problem)
    assert problem.path == path, str(problem)
    assert problem.message.startswith(names), str(problem)
    assert reason in problem.message, str(problem)
    # The printed form is what people act on: file:line: path: message.
    where = f"{DEFINITIONS / name}:{line}:"
    assert str(problem).startswith(f"{where} {path}: " if path else f"{where} ")


def test_line_is_where_the_object_starts_when_it_spans_lines() -> None:
    # queue_without_durable.json is pretty-printed: the object opens on line 4, its name is on line 5.
    (problem,) = problems_of("queue_without_durable.json")
    lines = (DEFINITIONS / "queue_without_durable.json").read_text(encoding="utf-8").splitlines()
    assert lines[problem.line - 1].strip() == "{"
    assert lines[problem.line].strip() == '"name": "orders",'


def test_a_bad_hash_is_not_repeated_in_the_message() -> None:
    # The value may be a real secret pasted into the wrong field.
    (problem,) = problems_of("hash_not_base64.json")
    assert "change_me" not in str(problem)


def test_several_problems_are_all_reported_at_once() -> None:
    problems = problems_of("several_problems.json")
    assert [(p.line, p.path) for p in problems] == [
        (3, "users[0].password_hash"),
        (4, "users[1].tags"),
        (10, "permissions[0].vhost"),
        (13, "queues[0].durable"),
        (14, "queues[1].type"),
        # bindings[0] points at `orders`, which has a problem of its own (line 13): it is in the file, so
        # the binding is not reported a second time.
        (18, "bindings[1].destination"),
    ]
    assert all(p.file == str(DEFINITIONS / "several_problems.json") for p in problems)
    assert "queue 'invoices' in vhost '/': type 'stream' contradicts x-queue-type 'quorum'" in problems[4].message


def test_section_of_the_wrong_type_is_named_in_json_or_python_terms() -> None:
    # The reader's own line-tracking dict class is an implementation detail, not a type the user wrote.
    (problem,) = problems_of("section_not_a_list.json")
    assert problem.path == "queues"
    assert problem.message.startswith("must be an array of objects, got ")
    assert "_Located" not in problem.message


# ---- the CLI -----------------------------------------------------------------------------------------


def test_export_reports_every_problem_with_file_and_line_and_exits_1() -> None:
    path = DEFINITIONS / "several_problems.json"
    result = run_topo("export", "--from-definitions", str(path))
    assert result.code == 1
    assert result.stdout == ""
    assert result.stderr.count(f"{path}:") == 6
    assert (
        f"{path}:18: bindings[1].destination: binding from exchange 'amq.topic' to queue 'refunds' in vhost '/': "
        "destination queue 'refunds' is not declared in the file" in result.stderr
    )
    assert "Traceback" not in result.output
    assert "Internal error" not in result.output


@pytest.mark.parametrize("name", ["invalid_json.json", "top_level_array.json"])
def test_export_of_a_file_that_is_not_a_definitions_object_exits_1(name: str) -> None:
    result = run_topo("export", "--from-definitions", str(DEFINITIONS / name))
    assert result.code == 1
    assert f"{DEFINITIONS / name}:" in result.stderr
    assert "Traceback" not in result.output
    assert "Internal error" not in result.output


def test_export_prints_notes_on_stderr_and_yaml_on_stdout() -> None:
    result = run_topo("export", "--from-definitions", str(DEFINITIONS / "server_named_queues.json"))
    assert result.code == 0, result.output
    assert "Note: left out queue 'amq.gen-JzTY20BRgKO-HjmUJj0wLg'" in result.stderr
    assert "Note: left out built-in exchange 'amq.topic'" in result.stderr
    assert "amq.gen-" not in result.stdout
    assert "    queues:\n      orders: {}\n" in result.stdout
    assert "      - {source: amq.topic, destination: orders, routing_key: orders.#}\n" in result.stdout


def test_missing_file_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    with pytest.raises(ValidationFailed) as caught:
        read_definitions(str(tmp_path / "nope.json"))
    (problem,) = caught.value.problems
    assert problem.file == str(tmp_path / "nope.json")
    assert problem.message.startswith("cannot read the file:")


# ---- found in review: what RabbitMQ would reject or misread, named where it is -------------------------


def _problems(tmp_path: Path, definitions: dict[str, object]) -> list[Problem]:
    path = tmp_path / "d.json"
    path.write_text(json.dumps(definitions, indent=1), encoding="utf-8")
    with pytest.raises(ValidationFailed) as caught:
        read_definitions(str(path))
    return caught.value.problems


QUEUE = {"name": "q", "vhost": "/", "durable": True, "auto_delete": False}


@pytest.mark.parametrize(
    ("definitions", "path", "message"),
    [
        ({"exchanges": [{**QUEUE, "type": "topic", "internal": "no"}]}, "exchanges[0].internal",
         "must be true or false"),
        ({"vhosts": [{"name": "v", "tracing": "yes"}]}, "vhosts[0].tracing", "must be true or false"),
        ({"queues": [{**QUEUE, "vhost": ["/"]}]}, "queues[0].vhost", "must be a string"),
        ({"queues": [{**QUEUE, "vhost": ""}]}, "queues[0].vhost", "must not be empty"),
        ({"users": [{"name": "u", "tags": 5}]}, "users[0].tags", "must be a string or an array of strings"),
        ({"users": [{"name": "u", "tags": "", "limits": {"max-connections": "5"}}]}, "users[0].limits", "integers"),
        ({"parameters": [{"vhost": "/", "component": "shovel", "name": "s", "value": None}]}, "parameters[0].value",
         "must be an object"),
        ({"parameters": [{"vhost": "/", "component": "shovel", "value": {}}]}, "parameters[0].name", "missing 'name'"),
        ({"queues": [{**QUEUE, "arguments": {"x-queue-type": "quorum"}, "auto_delete": True}]},
         "queues[0].auto_delete", "cannot be auto_delete"),
        ({"queues": [{**QUEUE, "durable": False, "arguments": {"x-queue-type": "quorum"}}]}, "queues[0]",
         "durable: Input should be True"),
        ({"queues": [{**QUEUE, "arguments": {"x-max-length": "5"}}]}, "queues[0]", "x-max-length: must be an integer"),
        ({"policies": [{"name": "p", "vhost": "/", "pattern": "(", "definition": {"max-length": 1}}]}, "policies[0]",
         "not a valid regular expression"),
        ({"exchanges": [{**QUEUE, "type": "fancy"}]}, "exchanges[0]", "unknown exchange type 'fancy'"),
        ({"parameters": [{"vhost": "/", "component": "shovel", "name": "s", "value": {"src-urii": "amqp://"}}]},
         "parameters[0]", "unknown key 'src-urii'"),
    ],
)  # fmt: skip
def test_values_rabbitmq_or_topo_would_refuse_are_named(
    tmp_path: Path, definitions: dict[str, object], path: str, message: str
) -> None:
    problems = _problems(tmp_path, definitions)
    assert [p.path for p in problems] == [path], problems
    assert message in problems[0].message
    assert problems[0].line is not None


def test_a_queue_declared_twice_differently_is_an_error(tmp_path: Path) -> None:
    # RabbitMQ's import keeps the first and silently ignores the second.
    definitions = {"queues": [QUEUE, {**QUEUE, "arguments": {"x-max-length": 5}}]}
    (problem,) = _problems(tmp_path, definitions)
    assert problem.path == "queues[1]"
    assert "declared again with different values (first at queues[0]" in problem.message


def test_an_identical_repeat_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"queues": [QUEUE, dict(QUEUE)]}), encoding="utf-8")
    assert Key(Kind.QUEUE, "/", "q") in read_definitions(str(path)).actual.objects


def test_deeply_nested_json_is_an_error_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text('{"queues": ' + "[" * 100000 + "]" * 100000 + "}", encoding="utf-8")
    with pytest.raises(ValidationFailed, match=r"d\.json:1: nested more than 64 levels deep"):
        read_definitions(str(path))
    # Brackets inside strings do not count; 60 levels are read (and then judged as definitions).
    path.write_text('{"_comment": "' + "[" * 1000 + '", "x": ' + "[" * 60 + "]" * 60 + "}", encoding="utf-8")
    read_definitions(str(path))


def test_a_number_python_will_not_convert_is_an_error_naming_its_line(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text('{\n"queues": [{"name": "q", "durable": true, "arguments": {"x-max-length": ' + "9" * 5000 + "}}]}")
    with pytest.raises(ValidationFailed, match=r"d\.json:2: a number with 5,000 digits"):
        read_definitions(str(path))


def test_a_per_vhost_export_stays_in_its_vhost() -> None:
    # GET /api/definitions/{vhost} on 3.10 leaves `vhost` off queues, exchanges and bindings but not
    # off policies and parameters: the objects without one belong to the vhost the others name.
    result = read("per_vhost_export.json")
    assert result.vhosts == ["shop"]
    assert {key.vhost for key in result.actual.objects} == {"shop"}
    assert Key(Kind.QUEUE, "shop", "orders") in result.actual.objects
    assert "objects without a vhost key are taken to be in 'shop', the file's only vhost" in result.notes


def test_hashes_of_exports_older_than_3_6_are_md5(tmp_path: Path) -> None:
    md5_hash = "CQoLDMVsy+Z5bcXg864PTJ+1NTk="  # 4-byte salt + 16-byte MD5 digest
    path = tmp_path / "d.json"
    users = [{"name": "old", "password_hash": md5_hash, "tags": "administrator"}]
    path.write_text(json.dumps({"rabbit_version": "3.5.7", "users": users}), encoding="utf-8")
    password = read_definitions(str(path)).actual.objects[Key(Kind.USER, "", "old")].attrs["password"]
    assert password.algorithm == "rabbit_password_hashing_md5"


def test_an_empty_vhost_on_an_exchange_is_named_at_its_line(tmp_path: Path) -> None:
    (problem,) = _problems(tmp_path, {"exchanges": [{**QUEUE, "type": "topic", "vhost": ""}]})
    assert (problem.path, problem.line) == ("exchanges[0].vhost", 3)
    assert "vhost must not be empty" in problem.message


def test_limits_on_a_vhost_are_named_there(tmp_path: Path) -> None:
    (problem,) = _problems(tmp_path, {"vhosts": [{"name": "v", "limits": {"max-queues": 1.5}}]})
    assert problem.path == "vhosts[0].limits"
    assert problem.message.startswith("limits of vhost 'v': limits must be integers")
