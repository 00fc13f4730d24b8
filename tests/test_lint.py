"""`topo lint` offline: each rule on files, the framework, the output and the command's exit codes.

The live side (a real 3.10 broker) is in test_integration_lint.py.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from cli_runner import run_topo
from topo.lint import RULES, Finding, Level, LintInput, from_files, rule, run, target_version
from topo.lint.core import Rule
from topo.load import load_topology
from topo.policy import Policy, match
from topo.state import Key, Kind, Obj


def write(tmp_path: Path, text: str, name: str = "topology.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# The upgrade check's rules; the routing rules have their own tests (test_lint_routing.py) and would
# add their findings (queues nothing binds to, ...) to these fixtures.
UPGRADE_RULES = [each for each in RULES if each.func.__module__ == "topo.lint.upgrade"]


def lint_file(path: Path, target: str | None = "4.0") -> list[Finding]:
    return run(from_files(load_topology([str(path)], env={}), target), UPGRADE_RULES)


def by_rule(findings: list[Finding]) -> dict[str, list[Finding]]:
    grouped: dict[str, list[Finding]] = {}
    for finding in findings:
        grouped.setdefault(finding.rule, []).append(finding)
    return grouped


POLICIES = """\
vhosts:
  shop:
    policies:
      mirrored:
        pattern: "^orders\\\\."
        apply-to: queues
        definition:
          ha-mode: exactly
          ha-params: 2
          ha-sync-mode: automatic
          queue-mode: lazy
          max-length: 1000
      locate:
        pattern: "^x"
        definition: {queue-master-locator: min-masters, queue-version: 1}
    operator_policies:
      caps:
        pattern: ".*"
        definition:
          ha-mode: all
          max-length: 5000
"""


def test_policy_keys_removed_in_4_0_are_errors_at_their_line(tmp_path: Path) -> None:
    findings = lint_file(write(tmp_path, POLICIES))
    mirroring = by_rule(findings)["classic-queue-mirroring"]
    assert {(f.kind, f.name, f.line) for f in mirroring} == {
        (Kind.POLICY, "mirrored", 8),
        (Kind.POLICY, "mirrored", 9),
        (Kind.POLICY, "mirrored", 10),
        (Kind.OPERATOR_POLICY, "caps", 20),
    }
    assert all(f.level is Level.ERROR and f.vhost == "shop" for f in mirroring)
    assert all("quorum queues" in f.fix for f in mirroring)
    assert "policy key ha-params: classic queue mirroring was removed in RabbitMQ 4.0" in mirroring[1].message
    (mode,) = by_rule(findings)["queue-mode"]
    assert (mode.level, mode.line) == (Level.WARNING, 11)
    (locator,) = by_rule(findings)["queue-master-locator"]
    assert locator.level is Level.WARNING and "queue-leader-locator" in locator.fix
    (version,) = by_rule(findings)["queue-version-1"]
    assert version.level is Level.WARNING
    # max-length is fine everywhere.
    assert not any("max-length" in f.message for f in findings)


def test_policy_keys_on_4_3(tmp_path: Path) -> None:
    findings = by_rule(lint_file(write(tmp_path, POLICIES), "4.3"))
    (locator,) = findings["queue-master-locator"]
    assert locator.level is Level.ERROR
    assert "deprecated_features.permit.queue_master_locator = true" in locator.message


def test_policy_keys_on_3_10_only_what_3_10_refuses(tmp_path: Path) -> None:
    findings = lint_file(write(tmp_path, POLICIES), "3.10")
    # 3.10 knows every ha-* policy key, but has no ha-* operator policy key (3.11 added them).
    assert [(f.rule, f.name, f.level) for f in findings] == [("unknown-policy-key", "caps", Level.ERROR)]
    assert "operator policy key ha-mode is not recognised by RabbitMQ 3.10" in findings[0].message


def test_a_key_operator_policies_never_take_is_unknown_not_deprecated(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        vhosts:
          shop:
            operator_policies:
              lazy: {pattern: ".*", definition: {queue-mode: lazy, queue-version: 1}}
        """,
    )
    findings = lint_file(path)
    assert [(f.rule, f.level) for f in findings] == [
        ("unknown-policy-key", Level.ERROR),
        ("queue-version-1", Level.WARNING),
    ]
    assert findings[0].message == (
        "operator policy key queue-mode is not recognised by RabbitMQ 4.0 (and it has no effect since RabbitMQ 3.12)"
    )


def test_policy_values_the_target_refuses(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        vhosts:
          shop:
            policies:
              ttl: {pattern: ".*", definition: {message-ttl: "60000", max-age: 7D}}
            operator_policies:
              unlimited: {pattern: ".*", definition: {delivery-limit: -1}}
        """,
    )
    findings = lint_file(path, "3.13")
    assert [(f.rule, f.name, f.line, f.level) for f in findings] == [
        ("policy-value", "ttl", 4, Level.ERROR),
        ("policy-value", "unlimited", 6, Level.ERROR),
    ]
    assert findings[0].message == (
        "policy key message-ttl must be an integer >= 0, got str '60000'; RabbitMQ 3.13 refuses it"
    )
    # 4.0 takes a negative delivery limit (unlimited).
    assert [f.name for f in lint_file(path, "4.0")] == ["ttl"]


def test_unknown_policy_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        vhosts:
          shop:
            policies:
              typo: {pattern: ".*", definition: {max-lenght: 5, federation-upstream-set: all}}
        """,
    )
    (finding,) = lint_file(path)
    assert (finding.rule, finding.level, finding.line) == ("unknown-policy-key", Level.ERROR, 4)
    assert "max-lenght" in finding.message


QUEUES = """\
vhosts:
  shop:
    queues:
      lazy:
        arguments:
          x-queue-mode: lazy
      old:
        arguments: {x-queue-version: 1, x-queue-master-locator: min-masters}
      new:
        arguments: {x-queue-version: 2}
      temp:
        durable: false
      temp.auto:
        durable: false
        auto_delete: true
      kept: {}
"""


def test_queue_arguments_and_transient_queues_for_4_0(tmp_path: Path) -> None:
    findings = lint_file(write(tmp_path, QUEUES))
    got = {(f.rule, f.name, f.level, f.line) for f in findings}
    assert got == {
        ("x-queue-mode", "lazy", Level.WARNING, 6),
        ("x-queue-version-1", "old", Level.WARNING, 8),
        ("x-queue-master-locator", "old", Level.WARNING, 8),
        ("transient-nonexclusive-queue", "temp", Level.WARNING, 12),
        ("transient-nonexclusive-queue", "temp.auto", Level.WARNING, 14),
    }


def test_queue_arguments_and_transient_queues_for_4_3(tmp_path: Path) -> None:
    path = write(tmp_path, QUEUES)
    findings = lint_file(path, "4.3.0")
    levels = {(f.rule, f.name): f.level for f in findings}
    assert levels == {
        ("x-queue-mode", "lazy"): Level.WARNING,
        ("x-queue-version-1", "old"): Level.ERROR,
        ("x-queue-master-locator", "old"): Level.ERROR,
        ("transient-nonexclusive-queue", "temp"): Level.ERROR,
        ("transient-nonexclusive-queue", "temp.auto"): Level.ERROR,
    }
    transient = next(f for f in findings if f.name == "temp")
    assert "durable: true" in transient.fix
    assert "transient_nonexcl_queues" in transient.message
    # 4.3.6 permits transient non-exclusive queues by default again; "4.3" is the newest 4.3.x.
    newest = {(f.rule, f.name): f.level for f in lint_file(path, "4.3")}
    assert newest == {**levels, **{key: Level.WARNING for key in levels if key[0] == "transient-nonexclusive-queue"}}


def test_nothing_to_say_before_the_versions_that_changed(tmp_path: Path) -> None:
    assert lint_file(write(tmp_path, QUEUES), "3.11") == []


QUORUM = """\
vhosts:
  shop:
    exchanges:
      dlx: {type: fanout}
    queues:
      bare: {type: quorum}
      dead-lettered: {type: quorum, arguments: {x-dead-letter-exchange: dlx}}
      limited: {type: quorum, arguments: {x-delivery-limit: 5}}
      by-policy: {type: quorum}
      by-operator-policy: {type: quorum}
      outranked: {type: quorum}
      tied: {type: quorum}
      classic: {}
    policies:
      dlx-all: {pattern: "^by-policy$", definition: {dead-letter-exchange: dlx}}
      low: {pattern: "^outranked$", priority: 0, definition: {dead-letter-exchange: dlx}}
      high: {pattern: "^outranked$", priority: 5, definition: {max-length: 10}}
      classic-only: {pattern: "^bare$", apply-to: classic_queues, definition: {dead-letter-exchange: dlx}}
      tie-a: {pattern: "^tied$", priority: 1, definition: {dead-letter-exchange: dlx}}
      tie-b: {pattern: "^tied", priority: 1, definition: {max-length: 10}}
    operator_policies:
      limit: {pattern: "^by-operator", definition: {delivery-limit: 50}}
"""


def test_quorum_queues_without_dead_letter_target(tmp_path: Path) -> None:
    findings = [f for f in lint_file(write(tmp_path, QUORUM)) if f.rule == "quorum-delivery-limit"]
    # A policy for classic queues does not reach a quorum queue; only the highest-priority policy applies;
    # of two equally high ones the broker may pick either.
    assert sorted(f.name for f in findings) == ["bare", "outranked", "tied"]
    assert all(f.level is Level.WARNING for f in findings)
    assert "default delivery limit of 20" in findings[0].message
    assert "x-dead-letter-exchange" in findings[0].fix


def test_quorum_delivery_limit_only_from_4_0(tmp_path: Path) -> None:
    assert [f for f in lint_file(write(tmp_path, QUORUM), "3.13") if f.rule == "quorum-delivery-limit"] == []


def queue_obj(vhost: str, name: str, queue_type: str = "classic") -> Obj:
    attrs = {"type": queue_type, "durable": True, "auto_delete": False, "arguments": {}}
    return Obj(Key(Kind.QUEUE, vhost, name), attrs)


def policy_obj(name: str, pattern: str, apply_to: str = "all", priority: int = 0, vhost: str = "v") -> Obj:
    attrs = {"pattern": pattern, "apply-to": apply_to, "priority": priority, "definition": {}}
    return Obj(Key(Kind.POLICY, vhost, name), attrs)


def test_policy_matching_follows_rabbitmq() -> None:
    queue = queue_obj("v", "orders.created", "quorum")
    candidates = [
        policy_obj("a", "^orders"),
        policy_obj("b", "created$", priority=3),
        policy_obj("c", "^orders", "exchanges", priority=9),
        policy_obj("d", "^orders", "classic_queues", priority=9),
        policy_obj("e", ".*", "quorum_queues", priority=3),
        policy_obj("f", ".*", priority=99, vhost="other"),
        policy_obj("g", "^nope", priority=50),
    ]
    # topo.policy is the one matcher (explain, route and lint share it): the top-priority matches.
    found = match([Policy.of(p) for p in candidates if p.key.vhost == "v"], Kind.QUEUE, queue.key.name, "quorum")
    assert [p.name for p in [found.winner, *found.tied] if p] == ["b", "e"]
    assert match([], Kind.QUEUE, queue.key.name, "quorum").winner is None


def test_live_only_rules_do_not_run_on_files() -> None:
    lint_input = LintInput(objects={}, target=(4, 3, 0), deprecated_used=[{"name": "global_qos"}])
    assert run(lint_input) == []


def test_deprecated_features_used() -> None:
    used = [
        {"name": "transient_nonexcl_queues", "deprecation_phase": "permitted_by_default", "desc": ""},
        {"name": "global_qos", "deprecation_phase": "permitted_by_default", "desc": "basic.qos global"},
        {"name": "some_new_thing", "deprecation_phase": "denied_by_default", "doc_url": "https://example.test/x"},
        {"name": "another", "deprecation_phase": "permitted_by_default"},
    ]
    lint_input = LintInput(objects={}, target=(4, 2, 0), live=True, broker_version=(4, 2, 0), deprecated_used=used)
    findings = run(lint_input)
    got = {f.message.split(" (")[0].rsplit(" ", 1)[1]: f for f in findings}
    assert set(got) == {"transient_nonexcl_queues", "global_qos", "some_new_thing", "another"}
    assert got["transient_nonexcl_queues"].level is Level.WARNING
    assert "durable queues" in got["transient_nonexcl_queues"].fix
    assert got["global_qos"].message.endswith(": basic.qos global")
    assert got["some_new_thing"].level is Level.ERROR and "https://example.test/x" in got["some_new_thing"].fix
    assert got["another"].level is Level.WARNING
    assert all(f.where == "broker" and f.rule == "deprecated-features-used" for f in findings)
    # The same features judged for 4.3, which denies two of them by default.
    lint_input.target = (4, 3, 0)
    lint_input._compat = None
    levels = {f.message.split(" (")[0].rsplit(" ", 1)[1]: f.level for f in run(lint_input)}
    assert levels["transient_nonexcl_queues"] is Level.ERROR and levels["global_qos"] is Level.ERROR


def test_rules_are_registered_once_with_summaries() -> None:
    ids = [each.id for each in RULES]
    assert len(ids) == len(set(ids))
    assert {
        "policy-keys",
        "policy-values",
        "queue-arguments",
        "transient-queues",
        "quorum-delivery-limit",
        "deprecated-features-used",
    } <= set(ids)
    assert all(each.summary for each in RULES)
    with pytest.raises(ValueError, match="registered twice"):
        rule("policy-keys", "again")(lambda lint_input: [])


def test_a_new_rule_slots_in() -> None:
    def every_queue(lint_input: LintInput) -> list[Finding]:
        return [
            lint_input.finding(Level.INFO, "every-queue", queue, "a queue", "nothing")
            for queue in lint_input.of_kind(Kind.QUEUE)
        ]

    queue = queue_obj("v", "q")
    lint_input = LintInput(objects={queue.key: queue}, target=(4, 0, 0), live=True)
    (finding,) = run(lint_input, [Rule("every-queue", "test", every_queue)])
    assert finding.where == "vhost 'v' queue 'q'" and finding.file is None


def test_default_target_version() -> None:
    newest = target_version("4.3")
    assert target_version(None) == newest
    assert target_version(None, (3, 10, 8)) == newest
    assert target_version(None, (4, 3, 6)) == newest
    assert target_version(None, (4, 5, 1)) == (4, 5, 1)
    assert target_version("4.0.2", (3, 10, 8)) == (4, 0, 2)


# ---- the command -------------------------------------------------------------------------------------


def test_command_prints_one_line_per_finding_and_exits_1_on_errors(tmp_path: Path) -> None:
    path = write(tmp_path, POLICIES)
    result = run_topo("lint", "-f", str(path), "--target-version", "4.0", env={"NO_COLOR": "1"})
    assert result.code == 1, result.output
    lines = result.stdout.splitlines()
    assert lines[-1] == "Lint: 4 errors, 3 warnings, 0 info for RabbitMQ 4.0."
    first = next(line for line in lines if "ha-mode" in line and "'mirrored'" in line)
    assert first.startswith(f"error: {path}:8: vhost 'shop' policy 'mirrored': policy key ha-mode: ")
    assert "; fix: use quorum queues" in first and first.endswith("[classic-queue-mirroring]")
    assert len(lines) == 8


def test_command_exits_0_with_warnings_only(tmp_path: Path) -> None:
    path = write(tmp_path, "vhosts:\n  shop:\n    queues:\n      q: {arguments: {x-queue-mode: lazy}}\n")
    result = run_topo("lint", "-f", str(path), env={"NO_COLOR": "1"})
    assert result.code == 0, result.output
    # The queue has no binding: worth knowing (info), never a failure.
    assert result.stdout.splitlines()[-1] == "Lint: 0 errors, 1 warning, 1 info for RabbitMQ 4.3."


def test_command_clean(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        vhosts:
          shop:
            exchanges: {e: {type: fanout}}
            queues: {q: {}}
            bindings: [{source: e, destination: q}]
        """,
    )
    result = run_topo("lint", "-f", str(path))
    assert (result.code, result.stdout) == (0, "Lint: no findings for RabbitMQ 4.3.\n")


def test_command_json(tmp_path: Path) -> None:
    path = write(tmp_path, QUEUES)
    result = run_topo("lint", "-f", str(path), "--target-version", "4.3.0", "--json")
    assert result.code == 1
    document = json.loads(result.stdout)
    assert document["target_version"] == "4.3.0" and document["broker_version"] is None
    # info: the six queues have no binding (queue-unbound).
    assert document["summary"] == {"error": 4, "warning": 1, "info": 6}
    assert sorted(f["name"] for f in document["findings"] if f["rule"] == "queue-unbound") == [
        "kept",
        "lazy",
        "new",
        "old",
        "temp",
        "temp.auto",
    ]
    temp = next(f for f in document["findings"] if f["name"] == "temp" and f["rule"] != "queue-unbound")
    assert temp == {
        "level": "error",
        "rule": "transient-nonexclusive-queue",
        "file": str(path),
        "line": 12,
        "vhost": "shop",
        "kind": "queue",
        "name": "temp",
        "message": temp["message"],
        "fix": temp["fix"],
    }


def test_command_refuses_a_bad_target_version(tmp_path: Path) -> None:
    path = write(tmp_path, "vhosts: {}\n")
    result = run_topo("lint", "-f", str(path), "--target-version", "four")
    assert result.code == 1
    assert "--target-version: 'four' is not a RabbitMQ version" in result.stderr
    assert "Traceback" not in result.output


def test_command_reports_bad_files_like_validate(tmp_path: Path) -> None:
    path = write(tmp_path, "vhosts:\n  shop:\n    queues:\n      q: {durabel: true}\n")
    result = run_topo("lint", "-f", str(path))
    assert result.code == 1
    assert f"{path}:4" in result.stderr and "durabel" in result.stderr


def test_colour_only_when_asked(tmp_path: Path) -> None:
    path = write(tmp_path, QUEUES)
    result = run_topo("lint", "-f", str(path), env={"NO_COLOR": None})
    assert "\033[" not in result.stdout  # not a terminal


def test_docs_name_every_rule_and_finding_id() -> None:
    from topo.compat import CHANGES

    docs = (Path(__file__).parent.parent / "docs" / "lint.md").read_text(encoding="utf-8")
    ids = {each.id for each in RULES} | {change.id for change in CHANGES} | {"unknown-policy-key", "policy-value"}
    missing = sorted(name for name in ids if f"`{name}`" not in docs)
    assert missing == []
