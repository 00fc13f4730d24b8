"""Offline validation: every bad input in tests/bad/ is reported at the right file, line and path.

No broker, no network: only topo.load, topo.yamlload and the CLI's `validate` command.
"""

from __future__ import annotations

import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from cli_runner import run_topo
from topo.errors import Problem, ValidationFailed
from topo.load import load_topology
from topo.state import Key, Kind
from topo.yamlload import load_yaml

BAD = Path(__file__).parent / "bad"


def problems_of(path: Path, env: dict[str, str] | None = None) -> list[Problem]:
    with pytest.raises(ValidationFailed) as caught:
        load_topology([str(path)], env=env or {})
    return caught.value.problems


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# (input under tests/bad, file the problem is reported in (relative to tests/bad), line, path fragment, message
# fragment). Directories are loaded as a whole: their problem is in the second file.
CASES: list[tuple[str, str, int, str, str]] = [
    ("unknown_key.yaml", "unknown_key.yaml", 5, 'vhosts["/"].queues.orders.durabel', "unknown key 'durabel'"),
    ("duplicate_key.yaml", "duplicate_key.yaml", 6, "durable", "duplicate key (first defined at line 5)"),
    ("ttl_string.yaml", "ttl_string.yaml", 6, "orders.arguments.x-message-ttl", "must be an integer >= 0, got str"),
    ("quorum_auto_delete.yaml", "quorum_auto_delete.yaml", 6, "orders.auto_delete", "unknown key 'auto_delete'"),
    ("quorum_max_priority.yaml", "quorum_max_priority.yaml", 7, "arguments.x-max-priority", "not supported by quorum"),
    (
        "stream_bad_argument.yaml",
        "stream_bad_argument.yaml",
        8,
        "events.arguments.x-message-ttl",
        "not supported by stream queues",
    ),
    ("amq_name.yaml", "amq_name.yaml", 4, 'exchanges["amq.mine"]', "starting with 'amq.' are reserved"),
    ("topo_reserved_queue.yaml", "topo_reserved_queue.yaml", 5, 'queues["topo.lock"]', "are reserved by topo"),
    (
        "topo_reserved_exchange.yaml",
        "topo_reserved_exchange.yaml",
        4,
        'exchanges["topo.hold.1234abcd"]',
        "are reserved by topo",
    ),
    ("policy_bad_regex.yaml", "policy_bad_regex.yaml", 5, "policies.ttl.pattern", "not a valid regular expression"),
    ("policy_bad_apply_to.yaml", "policy_bad_apply_to.yaml", 6, "policies.ttl.apply-to", "got str 'queue'"),
    (
        "binding_undeclared_queue.yaml",
        "binding_undeclared_queue.yaml",
        6,
        "destination",
        "destination queue 'order-events' is not declared in vhost '/'",
    ),
    (
        "binding_undeclared_source.yaml",
        "binding_undeclared_source.yaml",
        6,
        "source",
        "source exchange 'order-exchange' is not declared",
    ),
    (
        "binding_destination_absent.yaml",
        "binding_destination_absent.yaml",
        9,
        "destination",
        "destination queue 'retired' is declared absent",
    ),
    ("unset_variable.yaml", "unset_variable.yaml", 6, "", "TOPO_TEST_UNSET_DLX is not set and has no default"),
    ("yaml_syntax.yaml", "yaml_syntax.yaml", 5, "", "YAML syntax error"),
    ("top_level_list.yaml", "top_level_list.yaml", 1, "", "must be a mapping"),
    ("absent_with_keys.yaml", "absent_with_keys.yaml", 4, "exchanges.old", "absent: true takes no other keys"),
    ("exchange_unknown_type.yaml", "exchange_unknown_type.yaml", 5, "orders.type", "unknown exchange type 'fanoutt'"),
    ("limits_negative.yaml", "limits_negative.yaml", 5, "limits.max-queues", "greater than or equal to -1"),
    ("x_match_invalid.yaml", "x_match_invalid.yaml", 8, 'vhosts["/"].bindings[0]', "x-match must be one of"),
    ("empty_vhost_name.yaml", "empty_vhost_name.yaml", 2, "vhosts", "vhost name must not be empty"),
    ("x_queue_type_argument.yaml", "x_queue_type_argument.yaml", 6, "arguments.x-queue-type", "with the `type` key"),
    ("duplicate_across_files", "duplicate_across_files/b.yaml", 6, "queues.orders", "declared twice (first at"),
    ("bool_for_int.yaml", "bool_for_int.yaml", 6, "arguments.x-max-length", "must be an integer >= 0, got bool True"),
    ("policy_no_definition.yaml", "policy_no_definition.yaml", 4, "policies.ttl", "a policy needs definition"),
    ("external_queue_with_keys.yaml", "external_queue_with_keys.yaml", 4, "queues.legacy", "external queue"),
    ("external_exchange_with_keys.yaml", "external_exchange_with_keys.yaml", 4, "legacy", "external exchange"),
    ("queue_type_unknown.yaml", "queue_type_unknown.yaml", 4, "queues.orders", "queue type must be one of"),
    ("version_2.yaml", "version_2.yaml", 1, "version", "got int 2"),
    ("quorum_overflow_dlx.yaml", "quorum_overflow_dlx.yaml", 7, "x-overflow", "drop-head and reject-publish only"),
    ("stream_max_age_bad.yaml", "stream_max_age_bad.yaml", 7, "arguments.x-max-age", "got '7days'"),
    ("max_priority_range.yaml", "max_priority_range.yaml", 6, "x-max-priority", "from 1 to 255, got 300"),
    ("tags_not_list.yaml", "tags_not_list.yaml", 3, 'vhosts["/"].tags', "valid list; got str 'a,b'"),
    ("binding_default_exchange.yaml", "binding_default_exchange.yaml", 6, "bindings[0]", "default exchange cannot"),
    ("duplicate_binding.yaml", "duplicate_binding.yaml", 9, "bindings[1]", "declared twice"),
    ("quorum_not_durable.yaml", "quorum_not_durable.yaml", 6, "orders.durable", "got bool False"),
    ("routing_key_int.yaml", "routing_key_int.yaml", 10, "bindings[0].routing_key", "got int 42"),
    ("absent_vhost_with_keys.yaml", "absent_vhost_with_keys.yaml", 2, "vhosts.old", "(found description)"),
    ("alternate_exchange_int.yaml", "alternate_exchange_int.yaml", 6, "alternate-exchange", "string, got int 5"),
    ("unknown_vhost_key.yaml", "unknown_vhost_key.yaml", 3, 'vhosts["/"].exchange', "unknown key 'exchange'"),
    ("unknown_top_level_key.yaml", "unknown_top_level_key.yaml", 1, "vhost", "unknown key 'vhost' in the top level"),
    ("delivery_limit_classic.yaml", "delivery_limit_classic.yaml", 6, "x-delivery-limit", "not supported by classic"),
    ("exchange_durable_string.yaml", "exchange_durable_string.yaml", 5, "orders.durable", "got str 'yes'"),
    ("queue_name_too_long.yaml", "queue_name_too_long.yaml", 4, "queues.qqqq", "at most 255 bytes"),
    ("dlx_int.yaml", "dlx_int.yaml", 6, "x-dead-letter-exchange", "must be a string, got int 7"),
    ("broker_password_int.yaml", "broker_password_int.yaml", 3, "broker.password", "valid string"),
    ("broker_twice", "broker_twice/b.yaml", 3, "broker", "may appear in one file only"),
    ("prune_conflict", "prune_conflict/b.yaml", 3, "prune", "conflicts with prune at"),
    ("vhost_field_twice", "vhost_field_twice/b.yaml", 4, 'vhosts["/"].description', "set twice (first at"),
]


def test_every_bad_input_is_in_the_table() -> None:
    on_disk = {p.name for p in BAD.iterdir()} - {"several_problems.yaml"}
    assert on_disk == {case[0] for case in CASES}


@pytest.mark.parametrize(("name", "reported_in", "line", "path", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_reported_precisely(name: str, reported_in: str, line: int, path: str, message: str) -> None:
    problems = problems_of(BAD / name)
    assert len(problems) == 1, "\n".join(map(str, problems))
    problem = problems[0]
    assert problem.file == str(BAD / reported_in)
    assert problem.line == line, str(problem)
    assert path in problem.path, str(problem)
    assert message in problem.message, str(problem)
    # The printed form is what people act on: file:line: path: message.
    assert str(problem).startswith(f"{BAD / reported_in}:{line}:")


def test_duplicate_across_files_names_the_first_declaration() -> None:
    (problem,) = problems_of(BAD / "duplicate_across_files")
    assert f"{BAD / 'duplicate_across_files' / 'a.yaml'}:4" in problem.message


def test_password_value_never_appears_in_problems() -> None:
    (problem,) = problems_of(BAD / "broker_password_int.yaml")
    assert "918273645" not in str(problem)


def test_unknown_key_lists_allowed_keys() -> None:
    (problem,) = problems_of(BAD / "unknown_key.yaml")
    assert "allowed: absent, arguments, external, migrate, type, durable, auto_delete" in problem.message


def test_reference_problems_carry_the_full_path() -> None:
    # Every other problem says where in the file it is (vhosts["/"].bindings[0]...); with several vhosts or
    # bindings, a bare "destination" does not.
    (problem,) = problems_of(BAD / "binding_undeclared_queue.yaml")
    assert problem.path == 'vhosts["/"].bindings[0].destination'


def test_several_problems_in_one_file_are_all_reported_at_once() -> None:
    problems = problems_of(BAD / "several_problems.yaml")
    found = sorted((p.line, p.path) for p in problems)
    assert found == [
        (5, 'vhosts["/"].queues.orders.durabel'),
        (8, 'vhosts["/"].queues.invoices.arguments.x-message-ttl'),
        (12, 'vhosts["/"].queues.payments.arguments.x-max-priority'),
        (13, ""),  # the unset variable
        (16, 'vhosts["/"].policies.ttl.pattern'),
        (17, 'vhosts["/"].policies.ttl.apply-to'),
        (22, "type"),  # the duplicate key
    ]
    # Sorted by file and line, so the report reads top to bottom.
    assert [p.line for p in problems] == sorted(p.line or 0 for p in problems)


def test_unknown_key_does_not_hide_other_problems_in_the_same_object(tmp_path: Path) -> None:
    # "Every problem at once": a typo in one key must not hide a bad argument next to it.
    path = write(
        tmp_path,
        "t.yaml",
        """\
        vhosts:
          /:
            queues:
              orders:
                durabel: true
                arguments:
                  x-message-ttl: "60000"
        """,
    )
    found = {(p.line, p.path) for p in problems_of(path)}
    assert found == {
        (5, 'vhosts["/"].queues.orders.durabel'),
        (7, 'vhosts["/"].queues.orders.arguments.x-message-ttl'),
    }


def test_validation_failed_message_counts_and_lists_problems() -> None:
    with pytest.raises(ValidationFailed) as caught:
        load_topology([str(BAD / "several_problems.yaml")], env={})
    text = str(caught.value)
    assert text.startswith("7 problems in the topology:")
    assert f'{BAD / "several_problems.yaml"}:5: vhosts["/"].queues.orders.durabel: unknown key' in text


# ---- the CLI ---------------------------------------------------------------------------------------------


def test_validate_command_prints_file_line_and_exits_1_without_traceback() -> None:
    result = run_topo("validate", "-f", "ttl_string.yaml", cwd=str(BAD))
    assert result.code == 1
    assert 'ttl_string.yaml:6: vhosts["/"].queues.orders.arguments.x-message-ttl: must be an integer' in result.stderr
    assert "Traceback" not in result.output
    assert "Internal error" not in result.output
    assert result.stdout == ""


def test_validate_command_reports_unset_variable_without_traceback() -> None:
    result = run_topo("validate", "-f", "unset_variable.yaml", env={"TOPO_TEST_UNSET_DLX": None}, cwd=str(BAD))
    assert result.code == 1
    assert "unset_variable.yaml:6: environment variable TOPO_TEST_UNSET_DLX is not set" in result.stderr
    assert "Traceback" not in result.output


def test_validate_command_syntax_error_exits_1() -> None:
    result = run_topo("validate", "-f", "yaml_syntax.yaml", cwd=str(BAD))
    assert result.code == 1
    assert "yaml_syntax.yaml:5: YAML syntax error" in result.stderr
    assert "Traceback" not in result.output


def test_validate_command_missing_default_file(tmp_path: Path) -> None:
    result = run_topo("validate", cwd=str(tmp_path))
    assert result.code == 1
    assert "topology.yaml: no such file or directory (pass one with -f PATH)" in result.stderr
    assert "Traceback" not in result.output


# ---- good input ------------------------------------------------------------------------------------------

GOOD = """\
broker:
  url: http://localhost:15672
vhosts:
  /:
    exchanges:
      orders: {type: topic}
      legacy: {external: true}
      retired: {absent: true}
    queues:
      orders.created:
        type: quorum
        arguments:
          x-delivery-limit: 5
      audit: {}
      events:
        type: stream
        arguments: {x-max-age: 7D}
    bindings:
      - {source: orders, destination: orders.created, routing_key: "order.created"}
      - {source: legacy, destination: audit, routing_key: "#"}
      - {source: amq.topic, destination: audit}
    policies:
      ttl:
        pattern: "^audit$"
        apply-to: queues
        definition: {message-ttl: 60000}
    limits:
      max-queues: 100
  staging:
    description: test
    tags: [b, a]
"""


def test_good_input_loads_with_counts(tmp_path: Path) -> None:
    path = write(tmp_path, "topology.yaml", GOOD)
    loaded = load_topology([str(path)], env={})
    desired = loaded.desired
    counts = Counter(key.kind for key in desired.objects)
    assert counts == {
        Kind.VHOST: 2,
        Kind.EXCHANGE: 1,
        Kind.QUEUE: 3,
        Kind.BINDING: 3,
        Kind.POLICY: 1,
        Kind.VHOST_LIMIT: 1,
    }
    assert desired.absent == {Key(Kind.EXCHANGE, "/", "retired")}
    assert desired.external == {Key(Kind.EXCHANGE, "/", "legacy")}
    assert desired.vhosts == ["/", "staging"]
    assert desired.prune == {"/": False, "staging": False}
    assert loaded.broker is not None and loaded.broker.url == "http://localhost:15672"
    assert loaded.files == [str(path)]
    queue = desired.objects[Key(Kind.QUEUE, "/", "orders.created")]
    assert queue.attrs == {
        "type": "quorum",
        "durable": True,
        "auto_delete": False,
        "arguments": {"x-delivery-limit": 5},
    }
    assert desired.objects[Key(Kind.VHOST, "staging", "staging")].attrs == {"description": "test", "tags": ["a", "b"]}
    assert desired.locations[Key(Kind.QUEUE, "/", "audit")].line == 14


def test_validate_command_on_good_input(tmp_path: Path) -> None:
    write(tmp_path, "topology.yaml", GOOD)
    result = run_topo("validate", cwd=str(tmp_path))
    assert result.code == 0, result.output
    assert result.stdout == "Valid: 1 file(s), 2 vhost(s), 12 object(s).\n"


def test_multi_file_directory_merges(tmp_path: Path) -> None:
    write(
        tmp_path,
        "topo/10-exchanges.yaml",
        """\
        prune: true
        vhosts:
          /:
            description: shared
            exchanges:
              orders: {type: topic}
        """,
    )
    write(
        tmp_path,
        "topo/20-queues.yml",
        """\
        vhosts:
          /:
            tags: [prod]
            queues:
              orders.created: {}
            bindings:
              - {source: orders, destination: orders.created}
        """,
    )
    write(tmp_path, "topo/notes.txt", "not: [yaml")  # ignored: not *.yaml / *.yml
    loaded = load_topology([str(tmp_path / "topo")], env={})
    desired = loaded.desired
    assert loaded.files == [str(tmp_path / "topo" / "10-exchanges.yaml"), str(tmp_path / "topo" / "20-queues.yml")]
    assert desired.vhosts == ["/"]
    assert desired.prune == {"/": True}
    assert desired.objects[Key(Kind.VHOST, "/", "/")].attrs == {"description": "shared", "tags": ["prod"]}
    assert Key(Kind.EXCHANGE, "/", "orders") in desired.objects
    queue = Key(Kind.QUEUE, "/", "orders.created")
    assert queue in desired.objects
    assert desired.locations[queue].file == str(tmp_path / "topo" / "20-queues.yml")
    assert desired.locations[queue].line == 5
    assert sum(1 for k in desired.objects if k.kind is Kind.BINDING) == 1


def test_empty_directory_is_a_config_error(tmp_path: Path) -> None:
    result = run_topo("validate", "-f", str(tmp_path))
    assert result.code == 1
    assert "directory holds no *.yaml or *.yml file" in result.stderr


def test_empty_file_is_valid(tmp_path: Path) -> None:
    path = write(tmp_path, "empty.yaml", "")
    loaded = load_topology([str(path)], env={})
    assert loaded.desired.objects == {}


# ---- vhost default_queue_type ----------------------------------------------------------------------------


def test_default_queue_type_fills_queue_type(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "t.yaml",
        """\
        vhosts:
          /:
            default_queue_type: quorum
            queues:
              orders: {arguments: {x-delivery-limit: 3}}
              scratch: {type: classic, auto_delete: true}
        """,
    )
    objects = load_topology([str(path)], env={}).desired.objects
    assert objects[Key(Kind.QUEUE, "/", "orders")].attrs["type"] == "quorum"
    assert objects[Key(Kind.QUEUE, "/", "scratch")].attrs["type"] == "classic"
    assert objects[Key(Kind.VHOST, "/", "/")].attrs == {"default_queue_type": "quorum"}


def test_default_queue_type_rules_apply_to_filled_type(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "t.yaml",
        """\
        vhosts:
          /:
            default_queue_type: quorum
            queues:
              jobs:
                arguments: {x-max-priority: 5}
        """,
    )
    (problem,) = problems_of(path)
    assert problem.line == 6
    assert problem.path == 'vhosts["/"].queues.jobs.arguments.x-max-priority'
    assert "not supported by quorum queues" in problem.message


def test_default_queue_type_with_absent_and_external_queues(tmp_path: Path) -> None:
    # `absent: true` alone is the documented way to retire a queue; the vhost default must not add keys to it.
    path = write(
        tmp_path,
        "t.yaml",
        """\
        vhosts:
          /:
            default_queue_type: quorum
            queues:
              old: {absent: true}
              shared: {external: true}
        """,
    )
    desired = load_topology([str(path)], env={}).desired
    assert desired.absent == {Key(Kind.QUEUE, "/", "old")}
    assert desired.external == {Key(Kind.QUEUE, "/", "shared")}


# ---- ${VAR} interpolation --------------------------------------------------------------------------------


def yaml_value(text: str, env: dict[str, str]) -> object:
    data, problems = load_yaml(text, "t.yaml", env)
    assert problems == []
    return data["a"]


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("a: ${X:-5}", {}, 5),  # unquoted: the number 5, as if written there
        ('a: "${X:-5}"', {}, "5"),  # quoted: stays a string
        ("a: '${X:-5}'", {}, "5"),
        ("a: ${X:-5}", {"X": ""}, 5),  # :- also covers set-but-empty
        ("a: ${X-5}", {"X": ""}, ""),  # - covers unset only
        ("a: ${X-5}", {}, 5),
        ("a: ${X}", {"X": "7"}, 7),
        ("a: ${X}", {"X": "true"}, True),
        ("a: ${X}", {"X": "2.5"}, 2.5),
        ('a: "${X}"', {"X": "7"}, "7"),
        ("a: $${X}", {"X": "7"}, "${X}"),  # $${ escapes
        ('a: "$${X:-5}"', {}, "${X:-5}"),
        ("a: pre-${X}-post", {"X": "mid"}, "pre-mid-post"),
        ("a: ${X}${Y}", {"X": "1", "Y": "2"}, 12),
        ("a: no dollar", {}, "no dollar"),
    ],
)
def test_interpolation(text: str, env: dict[str, str], expected: object) -> None:
    value = yaml_value(text, env)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize("secret", ["*s3cret", "[abc", "@home", "a: b: c"])
def test_unquoted_variable_with_yaml_special_characters_stays_a_string(secret: str) -> None:
    # A password from the environment is data, not YAML: only plain numbers and booleans are converted.
    value = yaml_value("a: ${PW}", {"PW": secret})
    assert value == secret


def test_unset_variable_is_reported_once_per_occurrence_with_its_line() -> None:
    _, problems = load_yaml("a: 1\nb: ${NOPE}\nc: x-${NOPE}\n", "t.yaml", {})
    assert [(p.line, p.message.split(" is not")[0]) for p in problems] == [
        (2, "environment variable NOPE"),
        (3, "environment variable NOPE"),
    ]


def test_interpolation_in_a_topology(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "t.yaml",
        """\
        vhosts:
          ${VHOST:-/}:
            queues:
              orders:
                arguments:
                  x-max-length: ${MAX:-1000}
                  x-dead-letter-exchange: "${DLX:-dead}"
        """,
    )
    objects = load_topology([str(path)], env={"MAX": "250"}).desired.objects
    args = objects[Key(Kind.QUEUE, "/", "orders")].attrs["arguments"]
    assert args == {"x-max-length": 250, "x-dead-letter-exchange": "dead"}
    assert type(args["x-max-length"]) is int


def test_quoted_number_variable_is_a_type_error_for_int_arguments(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "t.yaml",
        """\
        vhosts:
          /:
            queues:
              orders:
                arguments:
                  x-max-length: "${MAX:-1000}"
        """,
    )
    (problem,) = problems_of(path)
    assert problem.line == 6
    assert "got str '1000'" in problem.message


def test_undeclared_dead_letter_and_alternate_exchanges_are_warnings(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            vhosts:
              v:
                exchanges:
                  e: {arguments: {alternate-exchange: nope}}
                  dlx: {}
                queues:
                  q: {arguments: {x-dead-letter-exchange: missing}}
                  ok: {arguments: {x-dead-letter-exchange: dlx}}
                  default: {arguments: {x-dead-letter-exchange: ""}}
                policies:
                  p: {pattern: x, definition: {dead-letter-exchange: gone}}
            """
        ),
        encoding="utf-8",
    )
    warnings = load_topology([str(path)]).desired.warnings
    assert len(warnings) == 3
    assert any(w.startswith(f"{path}:4: exchange 'e'") and "'nope'" in w for w in warnings)
    assert any(w.startswith(f"{path}:7: queue 'q'") and "'missing'" in w for w in warnings)
    assert any("policy 'p'" in w and "'gone'" in w for w in warnings)
    result = run_topo("validate", "-f", str(path))
    assert result.code == 0 and "Warning:" in result.stderr and "'missing'" in result.stderr


@pytest.mark.parametrize(
    ("body", "line", "fragment"),
    [
        ("vhosts:\n  v:\n    tags: ['a,b']\n", 3, "tags cannot contain commas"),
        ("vhosts:\n  v:\n    queues:\n      q: {arguments: {x-foo: }}\n", 4, "has no value (null)"),
        ("vhosts:\n  v:\n    queues:\n      q: {arguments: {x-foo: .inf}}\n", 4, "must be a finite number"),
        ("vhosts:\n  v:\n    queues:\n      1: {}\n", 4, "name 1 must be a string"),
        (
            "vhosts:\n  v:\n    policies:\n      p: {pattern: x, definition: {max-length: 99999999999999999999}}\n",
            4,
            "out of range for a 64-bit integer",
        ),
        ("broker: {timeout: 0}\n", 1, "greater than 0"),
        ("vhosts:\n  v: {absent: true}\n  w: {}\n  v: {}\n", 4, "duplicate key"),
    ],
)
def test_values_the_broker_would_reject_mid_apply(tmp_path: Path, body: str, line: int, fragment: str) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(ValidationFailed) as caught:
        load_topology([str(path)])
    assert any(p.line == line and fragment in p.message for p in caught.value.problems), caught.value


def test_merge_keys_let_own_keys_override_and_absent_vhost_conflicts_in_any_order(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(
        "vhosts:\n  v:\n    queues:\n      base: &b {durable: true, auto_delete: true}\n"
        "      a: {<<: *b, durable: false}\n",
        encoding="utf-8",
    )
    queue = load_topology([str(path)]).desired.objects[Key(Kind.QUEUE, "v", "a")]
    assert queue.attrs["durable"] is False and queue.attrs["auto_delete"] is True
    for first, second in (("absent: true", "queues: {q: {}}"), ("queues: {q: {}}", "absent: true")):
        folder = tmp_path / f"d{len(first)}"
        folder.mkdir()
        (folder / "a.yaml").write_text(f"vhosts:\n  v: {{{first}}}\n", encoding="utf-8")
        (folder / "b.yaml").write_text(f"vhosts:\n  v: {{{second}}}\n", encoding="utf-8")
        with pytest.raises(ValidationFailed, match="declared"):
            load_topology([str(folder)])


def test_guess_vhosts_is_exact_or_gives_up(tmp_path: Path) -> None:
    from topo.files import guess_vhosts

    plain = tmp_path / "a.yaml"
    plain.write_text(
        'vhosts:\n  # comment\n  "shop/prod":\n    queues: {q: {}}\n  other:\n    exchanges:\n      e: {}\n',
        encoding="utf-8",
    )
    assert guess_vhosts([str(plain)]) == ["shop/prod", "other"]
    interpolated = tmp_path / "b.yaml"
    interpolated.write_text("vhosts:\n  ${TENANT}:\n    queues: {q: {}}\n", encoding="utf-8")
    assert guess_vhosts([str(interpolated)]) is None
    flow = tmp_path / "c.yaml"
    flow.write_text("vhosts: {v: {}}\n", encoding="utf-8")
    assert guess_vhosts([str(flow)]) is None


def test_union_members_do_not_show_in_paths_and_are_reported_once(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text('broker: {timeout: "abc"}\nvhosts:\n  v:\n    queues:\n      int: {durable: 3}\n', encoding="utf-8")
    with pytest.raises(ValidationFailed) as caught:
        load_topology([str(path)])
    paths = [p.path for p in caught.value.problems]
    assert paths == ["broker.timeout", "vhosts.v.queues.int.durable"]  # "int" here is a queue's name


def test_aliases_share_one_value_and_merges_survive_reuse() -> None:
    text = "base: &b {a: 1}\nmid: &mid\n  <<: *b\n  a: 2\nx: *mid\ny: *mid\n"
    data, problems = load_yaml(text, "t.yaml", {})
    assert problems == [] and data["x"] == {"a": 2} and data["y"] == {"a": 2}
    _, problems = load_yaml("base: &b {a: 1}\nm:\n  <<: *b\n  a: 2\n  a: 3\n", "t.yaml", {})
    assert [p.message for p in problems] == ["duplicate key (first defined at line 4)"]
    # Nested aliases are shared, not rebuilt.
    nested, problems = load_yaml(_alias_levels(4), "t.yaml", {})
    assert problems == [] and nested["a3"][0] is nested["a2"]


def _alias_levels(levels: int) -> str:
    lines = ["a0: &a0 [" + ", ".join(["x"] * 10) + "]"]
    lines += [f"a{n}: &a{n} [" + ", ".join([f"*a{n - 1}"] * 10) + "]" for n in range(1, levels)]
    return "\n".join(lines) + "\n"


LEVELS = list(zip("abcdefg", "bcdefgh", strict=True))


def test_an_alias_bomb_is_an_error_naming_its_line_and_costs_nothing(tmp_path: Path) -> None:
    # Ten levels of ten: 10**10 values once expanded, which validation and diffing would walk.
    started = time.monotonic()
    data, problems = load_yaml(_alias_levels(10), "t.yaml", {})
    assert data is None and len(problems) == 1
    assert problems[0].line == 5 and "expand to more than 100,000 values" in problems[0].message
    assert time.monotonic() - started < 1
    path = tmp_path / "bomb.yaml"
    path.write_text(
        "vhosts:\n  v:\n    queues:\n      q:\n        arguments:\n          x-a: &a [1, 2, 3, 4, 5, 6, 7, 8]\n"
        + "".join(f"          x-{b}: &{b} [{', '.join([f'*{a}'] * 8)}]\n" for a, b in LEVELS)
    )
    result = run_topo("validate", "-f", str(path))
    assert result.code == 1 and f"{path}:11: the aliases (*name) here expand" in result.stderr, result.output


def test_merges_chained_deeply_stay_linear() -> None:
    # PyYAML's flatten_mapping copies every level's pairs into the next: 2**30 pairs for this chain.
    lines = ["m0: &m0 {k: 1}"] + [f"m{n}: &m{n} {{<<: [*m{n - 1}, *m{n - 1}], k{n}: {n}}}" for n in range(1, 30)]
    data, problems = load_yaml("\n".join(lines) + "\n", "t.yaml", {})
    assert problems == [] and data["m29"]["k"] == 1 and data["m29"]["k28"] == 28 and len(data["m29"]) == 30


@pytest.mark.parametrize("opening", ["[", "{a: ", "- "])
def test_deep_nesting_is_an_error_not_a_crash(tmp_path: Path, opening: str) -> None:
    if opening == "- ":
        body = "".join("  " * n + "-\n" for n in range(300))
    else:
        body = opening * 500 + ("]" if opening == "[" else "}") * 500
    path = tmp_path / "deep.yaml"
    path.write_text(
        "vhosts:\n  v:\n    queues:\n      q:\n        arguments:\n          x-deep: " + body + "\n"
        if opening != "- "
        else "vhosts:\n" + body
    )
    result = run_topo("validate", "-f", str(path))
    assert result.code == 1 and "nested more than 64 levels deep" in result.stderr, result.output
    assert "Internal error" not in result.output


def test_validate_refuses_policy_definitions_no_version_takes_with_the_other_problems(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "t.yaml",
        """\
        vhosts:
          v:
            queues:
              jobs: {durabel: true}
            policies:
              cap: {pattern: "^jobs$", definition: {max-lenght: 10}}
              ttl: {pattern: "^jobs$", priority: 1, definition: {message-ttl: "10"}}
              mirrored: {pattern: "^jobs$", priority: 2, definition: {ha-mode: all}}
        """,
    )
    result = run_topo("validate", "-f", str(path))
    assert result.code == 1
    # Every problem at once: the schema error in the queue does not hide the policy definitions.
    assert f"{path}:4: vhosts.v.queues.jobs.durabel" in result.stderr
    assert f"{path}:6: vhosts.v.policies.cap.definition.max-lenght" in result.stderr
    assert "did you mean 'max-length'?" in result.stderr
    assert f"{path}:7: vhosts.v.policies.ttl.definition.message-ttl: must be an integer" in result.stderr
    # ha-mode is refused by 4.x only: validate leaves it to plan, which knows the broker's version.
    assert "ha-mode" not in result.stderr
