"""`topo lint`'s routing rules offline: each fires where it should and stays silent where it should not.

The rules see the topology through topo.route (the router `topo route` uses) and topo.policy (the
matcher `topo explain` uses), so external objects, the default and built-in exchanges, alternate
exchanges, exchange-to-exchange chains, policies and operator policies count as they do for routing.
The live side (the same findings from the broker after an apply, on 3.10 and 4.3) is in
test_integration_lint_routing.py.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from cli_runner import run_topo
from topo.lint import RULES, Finding, Level, from_files, run
from topo.load import load_topology
from topo.state import Kind

ROUTING_RULES = [each for each in RULES if each.func.__module__ == "topo.lint.routing"]
FINDING_IDS = {
    "dead-letter-exchange-missing",
    "dead-letter-strategy-overflow",
    "exchange-routes-nowhere",
    "internal-exchange-unreachable",
    "queue-unbound",
    "policy-tie",
    "argument-policy-conflict",
}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "topology.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def lint(tmp_path: Path, text: str, target: str | None = None) -> list[Finding]:
    path = write(tmp_path, text)
    return run(from_files(load_topology([str(path)], env={}), target), ROUTING_RULES)


def found(findings: list[Finding], finding_id: str) -> set[str]:
    return {f.name or "" for f in findings if f.rule == finding_id}


# ---- dead-letter-exchange-missing ---------------------------------------------------------------------

DEAD_LETTERS = """\
vhosts:
  shop:
    exchanges:
      dlx: {type: fanout}
      in: {type: fanout}
    queues:
      by-argument: {arguments: {x-dead-letter-exchange: nope}}
      declared: {arguments: {x-dead-letter-exchange: dlx}}
      external-target: {arguments: {x-dead-letter-exchange: theirs}}
      built-in: {arguments: {x-dead-letter-exchange: amq.direct}}
      default-exchange: {arguments: {x-dead-letter-exchange: "", x-dead-letter-routing-key: parked}}
      parked: {}
      by-policy: {}
      by-outranked-policy: {}
      quorum-only: {}
      argument-wins: {arguments: {x-dead-letter-exchange: dlx}}
    bindings:
      - {source: in, destination: by-argument}
      - {source: in, destination: declared}
      - {source: in, destination: external-target}
      - {source: in, destination: built-in}
      - {source: in, destination: default-exchange}
      - {source: in, destination: by-policy}
      - {source: in, destination: by-outranked-policy}
      - {source: in, destination: quorum-only}
      - {source: in, destination: argument-wins}
      - {source: dlx, destination: parked}
    policies:
      dead-letters: {pattern: "^by-policy$", definition: {dead-letter-exchange: gone}}
      low: {pattern: "^by-outranked", priority: 0, definition: {dead-letter-exchange: gone}}
      high: {pattern: "^by-outranked", priority: 9, definition: {dead-letter-exchange: dlx}}
      quorum: {pattern: "^quorum-only$", apply-to: quorum_queues, definition: {dead-letter-exchange: gone}}
      overridden: {pattern: "^argument-wins$", definition: {dead-letter-exchange: gone}}
  other:
    exchanges:
      theirs: {external: true}
"""


def test_dead_letter_exchange_missing(tmp_path: Path) -> None:
    text = DEAD_LETTERS.replace("  other:\n    exchanges:\n      theirs: {external: true}\n", "")
    text = text.replace("      in: {type: fanout}\n", "      in: {type: fanout}\n      theirs: {external: true}\n")
    findings = [f for f in lint(tmp_path, text) if f.rule == "dead-letter-exchange-missing"]
    # Declared, external, built-in and the default exchange are fine; a policy's DLX counts only where
    # that policy is the one in force (its apply-to covers the queue, it has the highest priority, no
    # argument overrides it).
    assert {f.name for f in findings} == {"by-argument", "by-policy"}
    assert all(f.level is Level.ERROR and f.vhost == "shop" and f.kind is Kind.QUEUE for f in findings)
    by_argument = next(f for f in findings if f.name == "by-argument")
    assert "'nope' (from argument x-dead-letter-exchange) is not declared" in by_argument.message
    assert by_argument.line == 8  # the argument's own line
    by_policy = next(f for f in findings if f.name == "by-policy")
    assert "'gone' (from policy 'dead-letters')" in by_policy.message


def test_dead_letter_exchange_external_in_another_vhost_does_not_count(tmp_path: Path) -> None:
    findings = lint(tmp_path, DEAD_LETTERS)
    assert "external-target" in found(findings, "dead-letter-exchange-missing")


def test_dead_letter_exchange_of_an_external_queue_is_not_judged(tmp_path: Path) -> None:
    text = """\
    vhosts:
      shop:
        queues:
          app-owned: {external: true}
        policies:
          dead-letters: {pattern: ".*", definition: {dead-letter-exchange: gone}}
    """
    assert lint(tmp_path, text) == []


# ---- dead-letter-strategy ------------------------------------------------------------------------------

STRATEGY = """\
vhosts:
  shop:
    exchanges:
      dlx: {type: fanout}
    queues:
      no-overflow: {type: quorum, arguments: {x-dead-letter-exchange: dlx, x-dead-letter-strategy: at-least-once}}
      drop-head:
        type: quorum
        arguments: {x-dead-letter-exchange: dlx, x-dead-letter-strategy: at-least-once, x-overflow: drop-head}
      safe:
        type: quorum
        arguments: {x-dead-letter-exchange: dlx, x-dead-letter-strategy: at-least-once, x-overflow: reject-publish}
      overflow-by-policy:
        type: quorum
        arguments: {x-dead-letter-exchange: dlx, x-dead-letter-strategy: at-least-once}
      strategy-by-policy: {type: quorum, arguments: {x-dead-letter-exchange: dlx}}
      at-most-once: {type: quorum, arguments: {x-dead-letter-exchange: dlx, x-dead-letter-strategy: at-most-once}}
      classic: {}
    bindings:
      - {source: dlx, destination: no-overflow}
      - {source: dlx, destination: drop-head}
      - {source: dlx, destination: safe}
      - {source: dlx, destination: overflow-by-policy}
      - {source: dlx, destination: strategy-by-policy}
      - {source: dlx, destination: at-most-once}
      - {source: dlx, destination: classic}
    policies:
      reject: {pattern: "^overflow-by-policy$", definition: {overflow: reject-publish}}
      strategy: {pattern: "^strategy-by-policy$", definition: {dead-letter-strategy: at-least-once}}
      classic: {pattern: "^classic$", definition: {dead-letter-strategy: at-least-once, dead-letter-exchange: dlx}}
"""


def test_dead_letter_strategy_needs_reject_publish(tmp_path: Path) -> None:
    findings = lint(tmp_path, STRATEGY)
    overflow = [f for f in findings if f.rule == "dead-letter-strategy-overflow"]
    assert {f.name for f in overflow} == {"no-overflow", "drop-head", "strategy-by-policy"}
    assert all(f.level is Level.WARNING for f in overflow)
    drop_head = next(f for f in overflow if f.name == "drop-head")
    assert "overflow is 'drop-head' (from argument x-overflow)" in drop_head.message
    by_policy = next(f for f in overflow if f.name == "strategy-by-policy")
    assert "(from policy 'strategy')" in by_policy.message and "falls back to at-most-once" in by_policy.message
    assert "reject-publish" in by_policy.fix
    # A classic queue refuses a whole policy that sets dead-letter-strategy: nothing applies to it.
    assert "classic" not in {f.name for f in findings}


# ---- reachability: exchanges and queues ----------------------------------------------------------------

REACH = """\
vhosts:
  shop:
    exchanges:
      nowhere: {type: direct}
      bound: {type: topic}
      to-exchange: {type: fanout}
      chained: {type: direct}
      with-alternate: {type: direct, arguments: {alternate-exchange: bound}}
      alternate-by-policy: {type: direct}
      hidden: {type: fanout, internal: true}
      hidden-fed: {type: fanout, internal: true}
      hidden-alternate: {type: fanout, internal: true}
      hidden-dead-letters: {type: fanout, internal: true}
      unroutable-target: {type: fanout, arguments: {alternate-exchange: hidden-alternate}}
      theirs: {external: true}
    queues:
      work: {}
      via-chain: {}
      lonely: {}
      parked: {}
      expiring: {arguments: {x-dead-letter-exchange: "", x-dead-letter-routing-key: parked}}
      into-hidden: {arguments: {x-dead-letter-exchange: hidden-dead-letters}}
      app-owned: {external: true}
      from-theirs: {}
    bindings:
      - {source: bound, destination: work, routing_key: "#"}
      - {source: to-exchange, destination: chained, destination_type: exchange}
      - {source: chained, destination: via-chain, routing_key: k}
      - {source: to-exchange, destination: hidden-fed, destination_type: exchange}
      - {source: hidden-fed, destination: work}
      - {source: hidden, destination: work}
      - {source: hidden-alternate, destination: work}
      - {source: hidden-dead-letters, destination: work}
      - {source: unroutable-target, destination: expiring}
      - {source: unroutable-target, destination: into-hidden}
      - {source: theirs, destination: from-theirs}
    policies:
      alternate: {pattern: "^alternate-by-policy$", apply-to: exchanges, definition: {alternate-exchange: bound}}
"""


def test_exchange_routes_nowhere(tmp_path: Path) -> None:
    findings = lint(tmp_path, REACH)
    # Bound, bound to another exchange, an alternate exchange by argument or policy: all route somewhere.
    # External exchanges and the built-in ones are not the files' to judge.
    routes_nowhere = [f for f in findings if f.rule == "exchange-routes-nowhere"]
    assert {f.name for f in routes_nowhere} == {"nowhere"}
    assert routes_nowhere[0].level is Level.WARNING and routes_nowhere[0].line == 4


def test_exchange_whose_alternate_policy_does_not_apply_routes_nowhere(tmp_path: Path) -> None:
    text = REACH.replace("apply-to: exchanges", "apply-to: queues")
    assert found(lint(tmp_path, text), "exchange-routes-nowhere") == {"nowhere", "alternate-by-policy"}


def test_internal_exchange_unreachable(tmp_path: Path) -> None:
    findings = lint(tmp_path, REACH)
    # Fed by an exchange-to-exchange binding, named as an alternate exchange or a dead-letter exchange:
    # reachable. Only `hidden` has nothing that can ever deliver to it.
    (unreachable,) = [f for f in findings if f.rule == "internal-exchange-unreachable"]
    assert unreachable.name == "hidden" and unreachable.level is Level.WARNING
    assert unreachable.line == 10  # its internal: key


def test_queue_unbound_is_info(tmp_path: Path) -> None:
    findings = lint(tmp_path, REACH)
    unbound = [f for f in findings if f.rule == "queue-unbound"]
    # via-chain is reached through an exchange-to-exchange chain, parked by a dead-letter route through
    # the default exchange with a fixed routing key, from-theirs from an external exchange; external
    # queues are not judged.
    assert {f.name for f in unbound} == {"lonely"}
    assert unbound[0].level is Level.INFO
    assert "default exchange with routing key 'lonely'" in unbound[0].message


def test_dead_letters_to_the_default_exchange_without_a_routing_key_reach_no_named_queue(tmp_path: Path) -> None:
    text = REACH.replace(", x-dead-letter-routing-key: parked}", "}")
    assert found(lint(tmp_path, text), "queue-unbound") == {"lonely", "parked"}


def test_builtin_exchanges_on_the_broker_are_not_judged() -> None:
    from topo.lint.core import LintInput
    from topo.state import Key, Obj

    objects = {
        Key(Kind.EXCHANGE, "v", name): Obj(Key(Kind.EXCHANGE, "v", name), {"type": kind, "internal": False})
        for name, kind in (("amq.direct", "direct"), ("amq.headers", "headers"), ("", "direct"))
    }
    assert run(LintInput(objects=objects, target=(4, 3, 0), live=True), ROUTING_RULES) == []


# ---- policy-tie -----------------------------------------------------------------------------------------

TIES = """\
vhosts:
  shop:
    exchanges:
      in: {type: fanout}
    queues:
      orders.new: {}
      orders.paid: {}
      audit: {}
      classic.q: {}
    bindings:
      - {source: in, destination: orders.new}
      - {source: in, destination: orders.paid}
      - {source: in, destination: audit}
      - {source: in, destination: classic.q}
    policies:
      orders-ttl: {pattern: "^orders\\\\.", priority: 1, definition: {message-ttl: 1000}}
      orders-len: {pattern: "^orders", priority: 1, definition: {max-length: 10}}
      outranked: {pattern: ".*", priority: 0, definition: {max-length: 5}}
      audit-a: {pattern: "^audit$", priority: 2, definition: {max-length: 1}}
      audit-b: {pattern: "^audit$", priority: 3, definition: {max-length: 2}}
      exchanges-only: {pattern: "^audit$", priority: 3, apply-to: exchanges, definition: {alternate-exchange: in}}
      quorum-key: {pattern: "^classic", priority: 4, definition: {delivery-limit: 5}}
      classic-key: {pattern: "^classic", priority: 4, definition: {max-length: 7}}
    operator_policies:
      cap-a: {pattern: ".*", priority: 0, definition: {max-length: 100}}
      cap-b: {pattern: "^orders\\\\.new$", priority: 0, definition: {max-length: 200}}
"""


def test_policy_tie(tmp_path: Path) -> None:
    findings = [f for f in lint(tmp_path, TIES, "4.3") if f.rule == "policy-tie"]
    by_policy = {(f.kind, f.name): f for f in findings}
    # orders-*: equal priority, both match both orders queues: one finding naming both queues.
    orders = by_policy[(Kind.POLICY, "orders-len")]
    assert "policies 'orders-len', 'orders-ttl' have the same priority 1" in orders.message
    assert "queue 'orders.new'" in orders.message and "queue 'orders.paid'" in orders.message
    assert orders.level is Level.WARNING
    # Operator policies tie among themselves, apart from the policies.
    operator = by_policy[(Kind.OPERATOR_POLICY, "cap-a")]
    assert "operator policies 'cap-a', 'cap-b'" in operator.message and "'orders.paid'" not in operator.message
    # Different priorities, different apply-to, and a policy a classic queue refuses (delivery-limit:
    # RabbitMQ 4.x does not match it at all there) are not ties.
    assert set(by_policy) == {(Kind.POLICY, "orders-len"), (Kind.OPERATOR_POLICY, "cap-a")}


def test_policy_tie_where_the_queue_type_takes_both(tmp_path: Path) -> None:
    text = TIES.replace("      classic.q: {}\n", "      classic.q: {type: quorum}\n")
    findings = [f for f in lint(tmp_path, text, "4.3") if f.rule == "policy-tie"]
    assert any("'classic-key', 'quorum-key'" in f.message and "queue 'classic.q'" in f.message for f in findings)


# ---- argument-policy-conflict ---------------------------------------------------------------------------

CONFLICTS = """\
vhosts:
  shop:
    exchanges:
      in: {type: fanout}
      dlx-a: {type: fanout}
      dlx-b: {type: fanout}
    queues:
      ttl: {arguments: {x-message-ttl: 500}}
      same: {arguments: {x-message-ttl: 1000}}
      dead-letters: {arguments: {x-dead-letter-exchange: dlx-a}}
      capped: {arguments: {x-max-length: 1000}}
      outranked: {arguments: {x-max-length: 3}}
      unmatched: {arguments: {x-message-ttl: 1}}
    bindings:
      - {source: in, destination: ttl}
      - {source: in, destination: same}
      - {source: in, destination: dead-letters}
      - {source: in, destination: capped}
      - {source: in, destination: outranked}
      - {source: in, destination: unmatched}
      - {source: dlx-a, destination: ttl}
      - {source: dlx-b, destination: ttl}
    policies:
      ttl: {pattern: "^(ttl|same)$", definition: {message-ttl: 1000}}
      dead-letters: {pattern: "^dead-letters$", definition: {dead-letter-exchange: dlx-b}}
      low: {pattern: "^outranked$", priority: 0, definition: {max-length: 9}}
      high: {pattern: "^outranked$", priority: 1, definition: {max-length: 3}}
    operator_policies:
      cap: {pattern: "^capped$", definition: {max-length: 100}}
"""


def test_argument_policy_conflict(tmp_path: Path) -> None:
    findings = {f.name: f for f in lint(tmp_path, CONFLICTS) if f.rule == "argument-policy-conflict"}
    # Equal values, an outranked policy's value, and queues no policy matches are no conflict.
    assert set(findings) == {"ttl", "dead-letters", "capped"}
    assert all(f.level is Level.WARNING for f in findings.values())
    ttl = findings["ttl"]
    assert "argument x-message-ttl=500 and message-ttl=1000 from policy 'ttl' disagree; in effect: 500" in ttl.message
    assert ttl.line == 8
    # Not numeric: the queue's argument wins.
    assert "in effect: 'dlx-a', from argument x-dead-letter-exchange" in findings["dead-letters"].message
    # An operator policy's limit wins when it is smaller.
    assert "in effect: 100, from operator policy 'cap'" in findings["capped"].message
    assert "drop x-max-length" in findings["capped"].fix


# ---- the command, the docs ------------------------------------------------------------------------------


def test_command_text_and_json(tmp_path: Path) -> None:
    path = write(tmp_path, DEAD_LETTERS)
    result = run_topo("lint", "-f", str(path), env={"NO_COLOR": "1"})
    assert result.code == 1, result.output  # a dead-letter exchange that is not declared loses messages
    line = next(x for x in result.stdout.splitlines() if "'by-argument'" in x)
    assert line.startswith(f"error: {path}:7: vhost 'shop' queue 'by-argument': dead-letter exchange 'nope' ")
    assert "; fix: declare exchange 'nope'" in line and line.endswith("[dead-letter-exchange-missing]")
    document = json.loads(run_topo("lint", "-f", str(path), "--json").stdout)
    missing = [f for f in document["findings"] if f["rule"] == "dead-letter-exchange-missing"]
    assert {f["name"] for f in missing} == {"by-argument", "by-policy", "external-target"}
    assert document["summary"]["error"] == 3
    first = next(f for f in missing if f["name"] == "by-argument")
    assert (first["file"], first["line"], first["vhost"], first["kind"]) == (str(path), 7, "shop", "queue")


def test_command_warnings_do_not_fail(tmp_path: Path) -> None:
    result = run_topo("lint", "-f", str(write(tmp_path, TIES)), env={"NO_COLOR": "1"})
    assert result.code == 0, result.output
    assert "[policy-tie]" in result.stdout


@pytest.mark.parametrize("finding_id", sorted(FINDING_IDS))
def test_docs_list_each_finding(finding_id: str) -> None:
    docs = (Path(__file__).parent.parent / "docs" / "lint.md").read_text(encoding="utf-8")
    assert f"`{finding_id}`" in docs


def test_every_finding_id_is_known(tmp_path: Path) -> None:
    seen = set()
    for text in (DEAD_LETTERS, STRATEGY, REACH, TIES, CONFLICTS):
        seen |= {f.rule for f in lint(tmp_path, text, "4.3")}
    assert seen == FINDING_IDS
