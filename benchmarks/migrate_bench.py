#!/usr/bin/env python3
"""Migration benchmark: topo's queue migration against the broker's own raw shovel (issue 11, item 6).

For N messages (default 10,000) and each case (classic -> quorum, and a classic queue's arguments
changed), as the median of ``--runs`` runs:

(a) raw shovel      one dynamic shovel with topo's settings (ack-mode on-confirm; src-delete-after
                    queue-length, so that it ends itself) moving N messages queue -> queue on the same
                    node: timed from its PUT until the parameter is gone and the destination holds N.
(b) topo migrate    ``python -m topo apply --auto-approve --migrate`` of the same change while the queue
                    holds N messages: from start to exit (plan, the migration, its verification).

and prints messages per second (N / seconds) and the ratio raw / topo. A migration moves every message
twice (out to a temporary queue and back into the re-declared queue), and topo waits until every move is
settled at its source before it stops a shovel; a quorum source adds up to one quorum tick (5 s).

    python benchmarks/migrate_bench.py                       # N=10,000, 3 runs, throwaway 3.10 node
    python benchmarks/migrate_bench.py --version 4.3 --runs 3 --json out.json
    python benchmarks/migrate_bench.py --url http://127.0.0.1:15672 --amqp-port 5672

Without ``--url`` a throwaway node (tests/rabbitmq_node.py, ``--version`` 3.10 or 4.3) is started and
stopped at the end. With ``--url`` the vhosts ``<prefix>raw`` and ``<prefix>topo`` are deleted and
re-created on that broker: never point it at a broker where such vhosts matter.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pika
import requests
from bench import git_revision

REPO = Path(__file__).resolve().parent.parent
TIMEOUT = 600.0  # every wait and every topo run; a hang ends the benchmark with an error


@dataclass(frozen=True)
class Case:
    label: str
    before: dict[str, Any]  # the queue as declared before: type and arguments
    after: dict[str, Any]


CASES = (
    Case("classic -> quorum", {"type": "classic", "arguments": {}}, {"type": "quorum", "arguments": {}}),
    Case(
        "classic -> classic (arguments)",
        {"type": "classic", "arguments": {"x-message-ttl": 3600000}},
        {"type": "classic", "arguments": {"x-message-ttl": 7200000}},
    ),
)
RAW = "raw shovel"
TOPO = "topo migrate"


@dataclass(frozen=True)
class Target:
    url: str
    user: str
    password: str
    amqp_port: int

    def amqp(self, vhost: str) -> str:
        credentials = f"{quote(self.user, safe='')}:{quote(self.password, safe='')}"
        return f"amqp://{credentials}@127.0.0.1:{self.amqp_port}/{quote(vhost, safe='')}"


class BenchError(RuntimeError):
    pass


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Api:
    def __init__(self, target: Target) -> None:
        self.base = target.url
        self.session = requests.Session()
        self.session.auth = (target.user, target.password)
        self.session.trust_env = False  # straight to the broker, never through a proxy

    def call(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = ()) -> requests.Response:
        response = self.session.request(method, self.base + path, json=body, timeout=60)
        if response.status_code >= 400 and response.status_code not in ok:
            raise BenchError(f"{method} {path}: HTTP {response.status_code}: {response.text[:300]}")
        return response


def queue_body(definition: dict[str, Any]) -> dict[str, Any]:
    arguments = {"x-queue-type": definition["type"], **definition["arguments"]}
    return {"durable": True, "auto_delete": False, "arguments": arguments}


def fresh_vhost(api: Api, vhost: str) -> str:
    where = quote(vhost, safe="")
    api.call("DELETE", f"/api/vhosts/{where}", ok=(404,))
    api.call("PUT", f"/api/vhosts/{where}", {})
    return where


def load(target: Target, vhost: str, queue: str, n: int) -> None:
    """N messages into `queue`, published with confirms (untimed)."""
    connection = pika.BlockingConnection(pika.URLParameters(target.amqp(vhost)))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        for number in range(n):
            channel.basic_publish("", queue, f"m-{number}".encode())
    finally:
        connection.close()


def count(target: Target, vhost: str, queue: str) -> int:
    """How many messages `queue` holds now: a passive declare, exact for quorum queues too (the management
    API's quorum counts are those of the queue's last tick, up to 5 s old)."""
    connection = pika.BlockingConnection(pika.URLParameters(target.amqp(vhost)))
    try:
        return int(connection.channel().queue_declare(queue, passive=True).method.message_count)
    finally:
        connection.close()


def raw_run(api: Api, target: Target, case: Case, n: int, vhost: str) -> float:
    where = fresh_vhost(api, vhost)
    api.call("PUT", f"/api/queues/{where}/src", queue_body(case.before))
    api.call("PUT", f"/api/queues/{where}/dst", queue_body(case.after))
    load(target, vhost, "src", n)
    value = {
        "src-uri": "amqp:///" + where,
        "src-queue": "src",
        "dest-uri": "amqp:///" + where,
        "dest-queue": "dst",
        "ack-mode": "on-confirm",
        "src-delete-after": "queue-length",
    }
    path = f"/api/parameters/shovel/{where}/move"
    began = time.monotonic()
    api.call("PUT", path, {"value": value})
    while api.call("GET", path, ok=(404,)).status_code != 404:
        if time.monotonic() - began > TIMEOUT:
            raise BenchError(f"the raw shovel did not finish within {TIMEOUT:.0f} s")
        time.sleep(0.005)
    while (held := count(target, vhost, "dst")) < n:
        if time.monotonic() - began > TIMEOUT:
            raise BenchError(f"the raw shovel's destination holds {held} of {n}")
    seconds = time.monotonic() - began
    if held != n:  # more than N: the shovel duplicated (see docs/migrate.md); the time would flatter it
        raise BenchError(f"the raw shovel's destination holds {held} messages, not {n}")
    return seconds


def topology(vhost: str, definition: dict[str, Any]) -> str:
    queue = {"type": definition["type"], "arguments": definition["arguments"]}
    return textwrap.dedent(
        f"""\
        vhosts:
          {json.dumps(vhost)}:
            queues:
              jobs: {json.dumps(queue)}
        """
    )


def topo(target: Target, file: Path, *args: str) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOPO_")}
    env.update(TOPO_URL=target.url, TOPO_USER=target.user, TOPO_PASSWORD=target.password, NO_COLOR="1")
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        env.pop(name, None)
    command = [sys.executable, "-m", "topo", *args, "-f", str(file)]
    began = time.monotonic()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    seconds = time.monotonic() - began
    if done.returncode != 0:
        raise BenchError(
            f"topo {' '.join(args)} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        )
    return seconds


def topo_run(api: Api, target: Target, case: Case, n: int, vhost: str, workdir: Path) -> float:
    where = quote(vhost, safe="")
    api.call("DELETE", f"/api/vhosts/{where}", ok=(404,))
    before, after = workdir / "before.yaml", workdir / "after.yaml"
    before.write_text(topology(vhost, case.before))
    after.write_text(topology(vhost, case.after))
    topo(target, before, "apply", "--auto-approve")
    load(target, vhost, "jobs", n)
    seconds = topo(target, after, "apply", "--auto-approve", "--migrate")
    info = api.call("GET", f"/api/queues/{where}/jobs").json()
    if info.get("type") != case.after["type"]:
        raise BenchError(f"after the migration the queue is {info.get('type')}, not {case.after['type']}")
    held = count(target, vhost, "jobs")
    if held != n:
        raise BenchError(f"after the migration the queue holds {held} messages, not {n}")
    return seconds


def median(values: list[float]) -> float:
    return statistics.median(values)


def report(n: int, runs: int, results: dict[str, dict[str, list[float]]], info: dict[str, Any]) -> str:
    lines = [
        f"## Migration of N = {n} messages (`--n {n} --runs {runs}`)",
        "",
        f"RabbitMQ {info['rabbitmq_version']} (Erlang {info['erlang_version']}), {info['cpus']} CPUs, load average "
        f"{info['load_average_at_start']:.2f} at start, Python {info['python_version']}, topo {info['topo_revision']}",
        "",
        "| case | raw shovel s | raw msg/s | topo migrate s | topo msg/s | raw / topo | moves/s in topo |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, samples in results.items():
        raw, mig = median(samples[RAW]), median(samples[TOPO])
        spread = f" ({min(samples[TOPO]):.2f}–{max(samples[TOPO]):.2f})" if runs > 1 else ""
        lines.append(
            f"| {label} | {raw:.2f} | {n / raw:,.0f} | {mig:.2f}{spread} | {n / mig:,.0f} | {mig / raw:.1f} "
            f"| {2 * n / mig:,.0f} |"
        )
    lines += [
        "",
        "msg/s is N / seconds; topo moves each message twice (moves/s = 2N / seconds), and its time includes "
        "start-up, the plan, the verification and waiting until every move is settled.",
    ]
    return "\n".join(lines)


def machine_info(api: Api) -> dict[str, Any]:
    overview = api.call("GET", "/api/overview").json()
    return {
        "cpus": len(os.sched_getaffinity(0)),
        "platform": f"{platform.system()} {platform.release()} {platform.machine()}",
        "load_average_at_start": os.getloadavg()[0],
        "rabbitmq_version": overview.get("rabbitmq_version", "?"),
        "erlang_version": overview.get("erlang_version", "?"),
        "python_version": platform.python_version(),
        "topo_revision": git_revision(),
    }


@contextlib.contextmanager
def broker(args: argparse.Namespace) -> Iterator[Target]:
    if args.url:
        yield Target(args.url.rstrip("/"), args.user, args.password, args.amqp_port)
        return
    sys.path.insert(0, str(REPO / "tests"))  # tests/ is not a package: its node helper, by path
    from rabbitmq_node import RabbitNode

    node = RabbitNode(version=args.version)
    progress(f"starting a throwaway RabbitMQ {args.version} node...")
    node.start()
    try:
        yield Target(node.url, node.user, node.password, node.amqp_port)
    finally:
        progress("stopping the throwaway node...")
        node.stop()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="messages in the queue (default 10,000)")
    parser.add_argument("--runs", type=int, default=3, help="runs per measurement; medians are reported")
    parser.add_argument("--version", choices=("3.10", "4.3"), default="3.10", help="the throwaway node's RabbitMQ")
    parser.add_argument("--url", help="an existing broker's management URL instead of a throwaway node")
    parser.add_argument("--user", default="guest")
    parser.add_argument("--password", default="guest")
    parser.add_argument("--amqp-port", type=int, default=5672, help="with --url: its AMQP port")
    parser.add_argument("--vhost-prefix", default="bench-migrate-")
    parser.add_argument("--json", type=Path, help="also write the samples and the machine to this file")
    args = parser.parse_args(argv)
    if args.n < 1 or args.runs < 1:
        parser.error("--n and --runs must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        with broker(args) as target, tempfile.TemporaryDirectory(prefix="topo-migrate-bench-") as tmp:
            api = Api(target)
            info = machine_info(api)
            results: dict[str, dict[str, list[float]]] = {}
            try:
                for case in CASES:
                    samples: dict[str, list[float]] = {RAW: [], TOPO: []}
                    for run in range(args.runs):
                        progress(f"{case.label}: run {run + 1} of {args.runs}")
                        samples[RAW].append(raw_run(api, target, case, args.n, args.vhost_prefix + "raw"))
                        samples[TOPO].append(topo_run(api, target, case, args.n, args.vhost_prefix + "topo", Path(tmp)))
                    results[case.label] = samples
            finally:
                for suffix in ("raw", "topo"):
                    api.call("DELETE", f"/api/vhosts/{quote(args.vhost_prefix + suffix, safe='')}", ok=(404,))
            print(report(args.n, args.runs, results, info), flush=True)
            if args.json:
                document = {"machine": info, "n": args.n, "runs": args.runs, "seconds": results}
                args.json.write_text(json.dumps(document, indent=2) + "\n")
    except (BenchError, RuntimeError, requests.RequestException, pika.exceptions.AMQPError) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
