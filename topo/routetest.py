"""`topo test`: routing assertions kept beside the topology, checked by the simulator or on a broker.

A tests file (YAML) lists cases; each publishes one message (or dead-letters one from a queue) and
names the queues that must receive it, exactly, or says it is unroutable or refused:

    version: 1
    tests:
      - name: paid orders reach shipping
        exchange: orders
        routing_key: order.paid.eu        # or routing_keys: [a, b] (the extra ones travel as CC)
        headers: {risk: high}             # optional
        expect: [orders.shipping, orders.fraud-review]
      - name: unknown events are dropped
        exchange: orders
        routing_key: order.unknown.eu
        expect: unroutable
      - name: nobody publishes to the screening exchange
        exchange: orders.fraud-screen
        expect: refused                   # unknown or internal exchange: the broker refuses the publish
      - name: rejected billing messages wait in the retry queue
        dead_letter: orders.billing       # a message rejected by a consumer of this queue
        expect: [orders.billing.retry]

Offline the simulator (route.py) answers. Live, the files' topology is copied into a throwaway vhost
(created, probed through the management API's publish and get, deleted; never the real vhost).
Exit codes follow pytest: 0 all passed, 1 some failed, 2 interrupted, 3 internal error, 4 usage or
input error (including a user that may not create the throwaway vhost), 5 no tests found.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from topo.apipath import api_path
from topo.client import ManagementClient
from topo.errors import BrokerError, Problem, ValidationFailed
from topo.route import Message, RouteError, Topology, dead_letter, route
from topo.state import Key, Kind, Obj
from topo.yamlload import line_of, load_yaml

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_INTERNAL, EXIT_USAGE, EXIT_NO_TESTS = 0, 1, 2, 3, 4, 5
TESTS_DIR = "tests"

# Retention limits would let a probe expire or be dropped before it is read: the throwaway copy
# leaves them out. They never change where a message is routed.
RETENTION_ARGUMENTS = frozenset({"x-message-ttl", "x-expires", "x-max-length", "x-max-length-bytes"})
RETENTION_KEYS = frozenset({"message-ttl", "expires", "max-length", "max-length-bytes"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Case(_Strict):
    name: str
    vhost: str | None = None
    exchange: str | None = None
    routing_key: str | None = None
    routing_keys: list[str] | None = None
    headers: dict[str, str | int | bool] = Field(default_factory=dict)
    dead_letter: str | None = None
    expect: Literal["unroutable", "refused"] | list[str]

    @model_validator(mode="after")
    def _one_source(self) -> Case:
        if (self.exchange is None) == (self.dead_letter is None):
            raise ValueError("give exactly one of exchange (publish a message) or dead_letter (a queue's dead letters)")
        if self.routing_key is not None and self.routing_keys is not None:
            raise ValueError("give routing_key or routing_keys, not both")
        return self

    def keys(self) -> tuple[str, ...]:
        if self.routing_keys:
            return tuple(self.routing_keys)
        return (self.routing_key or "",)


class TestsFile(_Strict):
    version: Literal[1] = 1
    tests: Annotated[list[Case], Field(min_length=1)]


@dataclass(slots=True)
class Loaded:
    file: str
    line: int | None
    case: Case


@dataclass(slots=True)
class Outcome:
    test: Loaded
    vhost: str
    passed: bool
    actual: list[str] | str  # the queues reached, or "unroutable" / "refused"
    paths: list[str] = field(default_factory=list)  # human-readable hops
    error: str | None = None


def find_tests(paths: list[str], topology_paths: list[str]) -> list[Path]:
    """The tests files: the given ones, else every *.yaml / *.yml in a tests/ folder beside the topology."""
    chosen: list[Path] = []
    if paths:
        for given in paths:
            path = Path(given)
            if path.is_dir():
                chosen.extend(sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file()))
            elif path.is_file():
                chosen.append(path)
            else:
                raise ValidationFailed([Problem(given, None, "", "no such file or directory")], "tests")
        return chosen
    for given in topology_paths or ["topology.yaml"]:
        base = Path(given) if Path(given).is_dir() else Path(given).parent
        folder = base / TESTS_DIR
        if folder.is_dir():
            chosen.extend(sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file()))
    return sorted(set(chosen))


def load_tests(files: list[Path]) -> list[Loaded]:
    problems: list[Problem] = []
    loaded: list[Loaded] = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            problems.append(Problem(str(path), None, "", f"cannot read: {exc.strerror}"))
            continue
        raw, found = load_yaml(text, str(path), env={})
        problems.extend(found)
        if found:
            continue
        try:
            model = TestsFile.model_validate(raw)
        except ValidationError as exc:
            for error in exc.errors():
                where = tuple(error["loc"])
                line = line_of(raw, where) or line_of(raw, where[:-1])
                dotted = ".".join(str(p) for p in where)
                problems.append(Problem(str(path), line, dotted, error["msg"]))
            continue
        for index, case in enumerate(model.tests):
            loaded.append(Loaded(str(path), line_of(raw, ("tests", index)), case))
    if problems:
        raise ValidationFailed(problems, "tests")
    return loaded


def _vhost_of(case: Case, vhosts: list[str]) -> str:
    if case.vhost is not None:
        return case.vhost
    if len(vhosts) == 1:
        return vhosts[0]
    raise RouteError(f"test {case.name!r}: give its vhost (the files declare {len(vhosts)} vhosts)")


def _verdict(case: Case, actual: list[str] | str) -> bool:
    if isinstance(case.expect, str):
        return actual == case.expect
    return isinstance(actual, list) and sorted(set(case.expect)) == actual


def run_offline(
    tests: list[Loaded], objects: Mapping[Key, Obj], external: set[Key], vhosts: list[str]
) -> list[Outcome]:
    topologies: dict[str, Topology] = {}
    outcomes = []
    for test in tests:
        case = test.case
        try:
            vhost = _vhost_of(case, vhosts)
        except RouteError as exc:
            outcomes.append(Outcome(test, "?", False, "error", error=str(exc)))
            continue
        if vhost not in vhosts:
            outcomes.append(Outcome(test, vhost, False, "error", error=f"the files declare no vhost {vhost!r}"))
            continue
        topology = topologies.setdefault(vhost, Topology.of(objects, vhost, external))
        message = Message(case.keys(), dict(case.headers))
        try:
            if case.dead_letter is not None:
                result = dead_letter(topology, case.dead_letter, message).route
                if result is None:
                    outcomes.append(Outcome(test, vhost, _verdict(case, "unroutable"), "unroutable"))
                    continue
            else:
                result = route(topology, case.exchange or "", message)
        except RouteError as exc:
            outcomes.append(Outcome(test, vhost, _verdict(case, "refused"), "refused", error=str(exc)))
            continue
        actual: list[str] | str = result.queues if result.queues else "unroutable"
        paths = [f"{queue}: " + " ; ".join(str(s) for s in result.paths[queue]) for queue in result.queues]
        paths += [f"one of {', '.join(o.candidates)} (via {o.exchange})" for o in result.one_of]
        paths += [f"note: {n}" for n in result.notes]
        outcomes.append(Outcome(test, vhost, _verdict(case, actual), actual, paths))
    return outcomes


# ---- live: a throwaway copy of the topology on the broker ---------------------------------------


class CannotCopy(Exception):
    """The throwaway vhost cannot be made (no administrator tag, or a declaration the broker refuses)."""


def _copy_objects(objects: Mapping[Key, Obj], vhost: str) -> tuple[list[Obj], list[Obj], list[Obj], list[Obj]]:
    exchanges, queues, bindings, policies = [], [], [], []
    for key, obj in objects.items():
        if key.vhost != vhost:
            continue
        if key.kind is Kind.EXCHANGE:
            exchanges.append(obj)
        elif key.kind is Kind.QUEUE:
            queues.append(obj)
        elif key.kind is Kind.BINDING:
            bindings.append(obj)
        elif key.kind is Kind.POLICY:
            policies.append(obj)
    return exchanges, queues, bindings, policies


def build_copy(client: ManagementClient, objects: Mapping[Key, Obj], vhost: str, copy: str) -> None:
    """Declares the vhost's exchanges, queues, bindings and policies in `copy`, retention limits left out."""
    exchanges, queues, bindings, policies = _copy_objects(objects, vhost)
    for obj in policies:
        definition = {k: v for k, v in obj.attrs["definition"].items() if k not in RETENTION_KEYS}
        if not definition:
            continue
        body = {**obj.attrs, "definition": definition}
        client.put(api_path("policies", copy, obj.key.name), body, what=f"policy {obj.key.name!r} (copy)")
    for obj in exchanges:
        body = {k: obj.attrs[k] for k in ("type", "durable", "auto_delete", "internal", "arguments")}
        client.put(api_path("exchanges", copy, obj.key.name), body, what=f"exchange {obj.key.name!r} (copy)")
    for obj in queues:
        attrs = obj.attrs
        arguments = {k: v for k, v in attrs["arguments"].items() if k not in RETENTION_ARGUMENTS}
        # A stream cannot be read with basic.get; routing into it is the same as into a classic queue.
        queue_type = "classic" if attrs["type"] == "stream" else attrs["type"]
        arguments["x-queue-type"] = queue_type
        durable = attrs["durable"] or queue_type == "quorum"
        body = {"durable": durable, "auto_delete": False, "arguments": arguments}
        client.put(api_path("queues", copy, obj.key.name), body, what=f"queue {obj.key.name!r} (copy)")
    for obj in bindings:
        attrs = obj.attrs
        short = "q" if attrs["destination_type"] == "queue" else "e"
        path = api_path("bindings", copy, "e", attrs["source"], short, attrs["destination"])
        body = {"routing_key": attrs["routing_key"], "arguments": attrs["arguments"]}
        client.request("POST", path, body=body, what=f"binding from {attrs['source']!r} (copy)", idempotent=True)


def _drain(client: ManagementClient, copy: str, queues: list[str], ids: set[str]) -> dict[str, list[str]]:
    """message id -> queues it was read from (each queue emptied)."""
    landed: dict[str, list[str]] = {}
    for queue in queues:
        while True:
            body = {"count": 500, "ackmode": "ack_requeue_false", "encoding": "auto", "truncate": 100}
            got = client.request(
                "POST", api_path("queues", copy, queue, "get"), body=body, what=f"queue {queue!r} (copy)"
            ).json()
            for message in got:
                message_id = (message.get("properties") or {}).get("message_id")
                if message_id in ids:
                    landed.setdefault(message_id, []).append(queue)
            if len(got) < 500:
                break
    return landed


def _publish(
    client: ManagementClient, copy: str, exchange: str, keys: tuple[str, ...], headers: dict[str, Any], message_id: str
) -> bool:
    """Publishes one probe; False when the broker refuses it (unknown or internal exchange)."""
    properties: dict[str, Any] = {"message_id": message_id, "delivery_mode": 1}
    all_headers = dict(headers)
    if len(keys) > 1:
        all_headers["CC"] = list(keys[1:])
    if all_headers:
        properties["headers"] = all_headers
    body = {
        "properties": properties,
        "routing_key": keys[0],
        "payload": "topo test probe",
        "payload_encoding": "string",
    }
    name = exchange or "amq.default"
    response = client.request(
        "POST",
        api_path("exchanges", copy, name, "publish"),
        body=body,
        what=f"probe to exchange {exchange!r}",
        ok=(400, 404, 500),
        idempotent=False,
    )
    return response.status_code == 200


def run_live(
    client: ManagementClient,
    tests: list[Loaded],
    objects: Mapping[Key, Obj],
    vhosts: list[str],
    on_copy: Callable[[str, str], None] = lambda vhost, copy: None,
) -> list[Outcome]:
    """Each vhost the tests name is copied into a throwaway vhost, probed, and deleted again."""
    outcomes: list[Outcome] = []
    by_vhost: dict[str, list[Loaded]] = {}
    for test in tests:
        try:
            vhost = _vhost_of(test.case, vhosts)
        except RouteError as exc:
            outcomes.append(Outcome(test, "?", False, "error", error=str(exc)))
            continue
        if vhost not in vhosts:
            outcomes.append(Outcome(test, vhost, False, "error", error=f"the files declare no vhost {vhost!r}"))
            continue
        by_vhost.setdefault(vhost, []).append(test)
    for vhost, cases in by_vhost.items():
        copy = f"topo-test-{secrets.token_hex(4)}"
        try:
            client.put(
                api_path("vhosts", copy),
                {"description": f"throwaway copy of {vhost!r} made by topo test; safe to delete", "tags": ""},
                what=f"throwaway vhost {copy!r}",
            )
        except BrokerError as exc:
            if exc.status in (401, 403):
                raise CannotCopy(
                    f"topo test --live copies the topology into a throwaway vhost, and creating a vhost needs the "
                    f"administrator tag ({exc.reason}). Run the tests offline (without --live), or as an "
                    "administrator; topo never publishes probes into the real vhost."
                ) from None
            raise
        on_copy(vhost, copy)
        try:
            try:
                build_copy(client, objects, vhost, copy)
            except BrokerError as exc:
                raise CannotCopy(f"the broker refused the throwaway copy of vhost {vhost!r}: {exc}") from None
            queues = sorted(k.name for k in objects if k.kind is Kind.QUEUE and k.vhost == vhost)
            for n, test in enumerate(cases):
                outcomes.append(_probe(client, copy, vhost, queues, test, f"topo-test-{n}-{secrets.token_hex(3)}"))
        finally:
            client.request("DELETE", api_path("vhosts", copy), what=f"throwaway vhost {copy!r}", ok=(404,))
    return outcomes


def _probe(
    client: ManagementClient, copy: str, vhost: str, queues: list[str], test: Loaded, message_id: str
) -> Outcome:
    case = test.case
    if case.dead_letter is not None:
        if case.dead_letter not in queues:
            return Outcome(test, vhost, False, "error", error=f"no queue {case.dead_letter!r} in vhost {vhost!r}")
        _publish(client, copy, "", (case.dead_letter,), dict(case.headers), message_id)
        body = {"count": 1, "ackmode": "reject_requeue_false", "encoding": "auto", "truncate": 100}
        client.request("POST", api_path("queues", copy, case.dead_letter, "get"), body=body, what="dead-letter probe")
        # Dead-lettering is asynchronous: read until nothing new arrives.
        landed: dict[str, list[str]] = {}
        for _ in range(6):
            time.sleep(0.15)
            more = _drain(client, copy, queues, {message_id})
            for key, value in more.items():
                landed.setdefault(key, []).extend(value)
            if not more and landed:
                break
    else:
        if not _publish(client, copy, case.exchange or "", case.keys(), dict(case.headers), message_id):
            return Outcome(test, vhost, _verdict(case, "refused"), "refused")
        landed = _drain(client, copy, queues, {message_id})
    reached = sorted(set(landed.get(message_id, [])))
    actual: list[str] | str = reached or "unroutable"
    return Outcome(
        test, vhost, _verdict(case, actual), actual, [f"{q}: received the probe on the broker" for q in reached]
    )


def report(outcomes: list[Outcome], live: bool) -> str:
    lines = []
    for outcome in outcomes:
        case = outcome.test.case
        where = f"{outcome.test.file}:{outcome.test.line}" if outcome.test.line else outcome.test.file
        status = "PASSED" if outcome.passed else "FAILED"
        lines.append(f"{status} {where} {case.name}")
        if not outcome.passed:
            expected = case.expect if isinstance(case.expect, str) else ", ".join(sorted(set(case.expect))) or "(none)"
            actual = outcome.actual if isinstance(outcome.actual, str) else ", ".join(outcome.actual)
            lines.append(f"    expected: {expected}")
            lines.append(f"    actual:   {actual}" + (" (on the broker)" if live else ""))
            if outcome.error:
                lines.append(f"    why:      {outcome.error}")
            lines.extend(f"    path:     {p}" for p in outcome.paths)
    failed = sum(not o.passed for o in outcomes)
    passed = len(outcomes) - failed
    mode = "live, in a throwaway vhost" if live else "offline, simulated"
    lines.append(f"{failed} failed, {passed} passed ({mode})." if failed else f"{passed} passed ({mode}).")
    return "\n".join(lines) + "\n"


def outcome_json(outcome: Outcome) -> dict[str, Any]:
    case = outcome.test.case
    return {
        "name": case.name,
        "file": outcome.test.file,
        "line": outcome.test.line,
        "vhost": outcome.vhost,
        "passed": outcome.passed,
        "expected": case.expect if isinstance(case.expect, str) else sorted(set(case.expect)),
        "actual": outcome.actual,
        "paths": outcome.paths,
        "error": outcome.error,
    }
