"""The commands that read a topology without changing it: route, test, graph, explain.

Each parses its options, gets a state (from the files, or from the broker with --live) and hands it
to a pure module (route.py, routetest.py, graph.py, explain.py); this file only wires and prints.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any

import typer

from topo.cli import Files, _client, _err, _guarded, _out, app
from topo.cli_options import UNSET, ConnectionOptions, connection_options
from topo.errors import TopoError
from topo.lazy import lazy_import

# Imported on first use (see topo/lazy.py): `topo version` should not pay for the simulator's models.
lazy_import(globals(), "topo", "routetest")
lazy_import(globals(), "topo.explain", "explain", "explanation_text")
lazy_import(globals(), "topo.graph", render_graph="render")
lazy_import(globals(), "topo.load", "load_topology")
lazy_import(globals(), "topo.read", "read_actual")
# RouteError is caught only around calls that have already used topo.route, which swaps it in.
lazy_import(globals(), "topo.route", "Message", "RouteError", "Topology", "dead_letter", "route")
lazy_import(globals(), "topo.state", "Key", "Obj")
if TYPE_CHECKING:  # the real imports, for linters and type checkers
    from topo import routetest
    from topo.explain import explain, explanation_text
    from topo.graph import render as render_graph
    from topo.load import load_topology
    from topo.read import read_actual
    from topo.route import Message, RouteError, Topology, dead_letter, route
    from topo.state import Key, Obj

Live = Annotated[bool, typer.Option("--live", help="Read the topology from the broker instead of the files.")]
Vhost = Annotated[
    str | None, typer.Option("--vhost", metavar="VHOST", help="The vhost (default: the only one in the files).")
]
AsJson = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def parse_header(text: str) -> tuple[str, Any]:
    """NAME=VALUE; VALUE is JSON when it parses as JSON (5, true, null, "5"), else a string."""
    name, sep, raw = text.partition("=")
    if not sep or not name:
        raise TopoError(f"--header {text!r}: expected NAME=VALUE, e.g. --header risk=high or --header score=5")
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    if isinstance(value, dict | list):
        value = raw
    return name, value


def state_for(
    files: list[str] | None, live: bool, options: ConnectionOptions, vhost: str | None
) -> tuple[Mapping[Key, Obj], set[Key], str, str | None]:
    """The objects to reason about, the external objects, the vhost, and the broker's version when --live."""
    if live:
        client = _client(options)
        if vhost is None:
            raise TopoError("--live needs --vhost")
        actual = read_actual(client, [vhost])
        if vhost not in actual.vhosts:
            raise TopoError(f"vhost {vhost!r} does not exist on the broker (or the user may not see it)")
        return actual.objects, set(), vhost, actual.version
    loaded = load_topology(files or [])
    desired = loaded.desired
    if vhost is None:
        if len(desired.vhosts) != 1:
            names = ", ".join(map(repr, desired.vhosts)) or "none"
            raise TopoError(f"pass --vhost: the files declare {len(desired.vhosts)} vhosts ({names})")
        vhost = desired.vhosts[0]
    elif vhost not in desired.vhosts:
        names = ", ".join(map(repr, desired.vhosts)) or "none"
        raise TopoError(f"the files declare no vhost {vhost!r} (they declare: {names})")
    return desired.objects, desired.external, vhost, None


@app.command(name="route")
@connection_options
def route_command(
    exchange: Annotated[
        str | None,
        typer.Option(
            "--exchange", "-e", metavar="EXCHANGE", help='The exchange published to ("" is the default exchange).'
        ),
    ] = None,
    routing_key: Annotated[
        list[str] | None,
        typer.Option("--routing-key", "-k", metavar="KEY", help="Routing key (repeatable: CC/BCC keys)."),
    ] = None,
    header: Annotated[
        list[str] | None,
        typer.Option(
            "--header",
            "-H",
            metavar="NAME=VALUE",
            help='Message header NAME=VALUE (repeatable); VALUE is JSON if it parses: 5, true, "5".',
        ),
    ] = None,
    dead_letter_queue: Annotated[
        str | None,
        typer.Option("--dead-letter", metavar="QUEUE", help="Where messages rejected or expired from QUEUE go."),
    ] = None,
    vhost: Vhost = None,
    files: Files = None,
    live: Live = False,
    as_json: AsJson = False,
    options: ConnectionOptions = UNSET,
) -> None:
    """Where a message goes: the queues it reaches and the path to each, or that it is unroutable."""

    def run() -> int:
        if (exchange is None) == (dead_letter_queue is None):
            raise TopoError("pass --exchange NAME (a publish) or --dead-letter QUEUE (its dead letters), not both")
        objects, external, name, version = state_for(files, live, options, vhost)
        topology = Topology.of(objects, name, external, version)
        message = Message(tuple(routing_key or [""]), dict(parse_header(h) for h in header or []))
        try:
            if dead_letter_queue is not None:
                result = dead_letter(topology, dead_letter_queue, message)
                _out(
                    json.dumps(result.to_json(), indent=2, ensure_ascii=False) + "\n" if as_json else _dead_text(result)
                )
                return 0
            routed = route(topology, exchange or "", message)
        except RouteError as exc:
            raise TopoError(str(exc)) from None
        _out(json.dumps(routed.to_json(), indent=2, ensure_ascii=False) + "\n" if as_json else route_text(routed))
        return 0

    _guarded(run)


def _q(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def route_text(result: Any) -> str:
    message = result.message
    keys = ", ".join(map(_q, message.routing_keys))
    described = f"routing key{'s' if len(message.routing_keys) > 1 else ''} {keys}"
    if message.headers:
        described += f", headers {json.dumps(message.headers, ensure_ascii=False, sort_keys=True)}"
    target = "the default exchange" if result.exchange == "" else f"exchange {_q(result.exchange)}"
    lines = [f"Message to {target} in vhost {_q(result.vhost)} ({described}):"]
    for queue in result.queues:
        lines.append(f"  → queue {_q(queue)}")
        lines.extend(f"      {step}" for step in result.paths[queue])
    for choice in result.one_of:
        lines.append(
            f"  → one of {', '.join(choice.candidates)} (chosen by {choice.type} exchange {_q(choice.exchange)})"
        )
        lines.extend(f"      {step}" for step in choice.path)
    for note in result.notes:
        lines.append(f"  note: {note}")
    if result.unroutable:
        lines.append("Unroutable: no queue receives it (dropped, or returned to a publisher that sets mandatory).")
    else:
        count = len(result.queues)
        lines.append(f"{count} queue{'' if count == 1 else 's'}" + (" and a choice." if result.one_of else "."))
    return "\n".join(lines) + "\n"


def _dead_text(result: Any) -> str:
    lines = [f"Dead letters of queue {_q(result.queue)}:"]
    if result.exchange is None:
        lines.extend(f"  {note}" for note in result.notes)
        return "\n".join(lines) + "\n"
    lines.append(f"  dead-letter exchange {_q(result.exchange)} ({result.exchange_source})")
    if result.routing_key is not None:
        lines.append(f"  dead-letter routing key {_q(result.routing_key)} ({result.routing_key_source})")
    for note in result.notes:
        lines.append(f"  note: {note}")
    if result.route is not None:
        lines.append(route_text(result.route).rstrip("\n"))
    return "\n".join(lines) + "\n"


@app.command(name="explain")
@connection_options
def explain_command(
    name: Annotated[str, typer.Argument(metavar="NAME", help="A queue or exchange name.", show_default=False)],
    vhost: Vhost = None,
    files: Files = None,
    live: Live = False,
    as_json: AsJson = False,
    options: ConnectionOptions = UNSET,
) -> None:
    """A queue or exchange in effect: the policies that apply, merged keys, bindings, dead letters."""

    def run() -> int:
        objects, external, vhost_name, version = state_for(files, live, options, vhost)
        try:
            found = explain(Topology.of(objects, vhost_name, external, version), name)
        except RouteError as exc:
            raise TopoError(str(exc)) from None
        if as_json:
            _out(json.dumps([e.to_json() for e in found], indent=2, ensure_ascii=False) + "\n")
        else:
            _out("\n".join(explanation_text(e) for e in found))
        return 0

    _guarded(run)


@app.command(name="graph")
@connection_options
def graph_command(
    fmt: Annotated[
        str,
        typer.Option("--format", metavar="mermaid|dot|html", help="mermaid, dot or html (one self-contained file)."),
    ] = "mermaid",
    output: Annotated[
        str | None, typer.Option("--output", "-o", metavar="FILE", help="Write to FILE instead of stdout.")
    ] = None,
    vhost: Vhost = None,
    files: Files = None,
    live: Live = False,
    options: ConnectionOptions = UNSET,
) -> None:
    """Draw a vhost: exchanges, queues, bindings with their keys, alternate exchanges and dead-letter routes."""

    def run() -> int:
        from topo.graph import FORMATS  # data, not a callable: a lazy name cannot stand in for it

        if fmt not in FORMATS:
            raise TopoError(f"--format {fmt!r}: allowed are {', '.join(FORMATS)}")
        objects, external, vhost_name, version = state_for(files, live, options, vhost)
        text = render_graph(Topology.of(objects, vhost_name, external, version), fmt)
        if output:
            try:
                with open(output, "w", encoding="utf-8") as handle:
                    handle.write(text)
            except OSError as exc:
                raise TopoError(f"cannot write {output}: {exc.strerror}") from None
        else:
            _out(text)
        return 0

    _guarded(run)


@app.command(name="test")
@connection_options
def test_command(
    tests: Annotated[
        list[str] | None,
        typer.Option(
            "--tests",
            "-t",
            metavar="PATH",
            help="Tests file or directory (repeatable). Default: tests/ beside the topology.",
        ),
    ] = None,
    files: Files = None,
    live: Annotated[
        bool, typer.Option("--live", help="Probe a throwaway copy of the topology on the broker (needs administrator).")
    ] = False,
    as_json: AsJson = False,
    options: ConnectionOptions = UNSET,
) -> None:
    """Check routing assertions: each test's message must reach exactly the queues it names.

    Exit codes as pytest's: 0 passed, 1 failed, 2 interrupted, 3 internal error, 4 bad input, 5 no tests.
    """
    try:
        code = _run_tests(
            tests,
            files,
            live,
            as_json,
            options,
        )
    except TopoError as exc:
        _err(f"Error: {exc}")
        code = routetest.EXIT_USAGE
    except routetest.CannotCopy as exc:
        _err(f"Error: {exc}")
        code = routetest.EXIT_USAGE
    except KeyboardInterrupt:
        _err("Interrupted.")
        code = routetest.EXIT_INTERRUPTED
    except Exception as exc:  # a bug: say so, like _guarded, with pytest's code for internal errors
        _err(f"Internal error: {type(exc).__name__}: {exc}")
        code = routetest.EXIT_INTERNAL
    raise typer.Exit(code)


def _run_tests(
    tests: list[str] | None, files: list[str] | None, live: bool, as_json: bool, options: ConnectionOptions
) -> int:
    found = routetest.find_tests(tests or [], files or [])
    if not found:
        _err("No tests: pass --tests PATH, or keep tests files in a tests/ folder beside the topology.")
        return routetest.EXIT_NO_TESTS
    cases = routetest.load_tests(found)
    loaded = load_topology(files or [])
    desired = loaded.desired
    if live:
        client = _client(options, loaded.broker)
        outcomes = routetest.run_live(
            client,
            cases,
            desired.objects,
            desired.vhosts,
            on_copy=lambda vhost, copy: _err(f"Probing a throwaway copy of vhost {vhost!r} in vhost {copy!r}."),
        )
    else:
        outcomes = routetest.run_offline(cases, desired.objects, desired.external, desired.vhosts)
    if as_json:
        body = {
            "passed": all(o.passed for o in outcomes),
            "live": live,
            "tests": [routetest.outcome_json(o) for o in outcomes],
        }
        _out(json.dumps(body, indent=2, ensure_ascii=False) + "\n")
    else:
        _out(routetest.report(outcomes, live))
    return routetest.EXIT_OK if all(o.passed for o in outcomes) else routetest.EXIT_FAILED
