"""topo killed (SIGKILL) at random points of migrations (issue 11 items 3 and 6), a confirming publisher
(mandatory) running throughout; each killed apply is followed by a plan (which must show the interrupted
migration) and an apply that finishes it. Afterwards: every message the queue held, once each and in order,
then every confirmed publish once; nothing returned; no temporaries left; an empty plan."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from typing import Any
from urllib.parse import quote

import pika
import requests
from test_migrate import PRELOADED, Publisher, _drain, _queue, _setup, _topology

from cli_runner import broker_env, run_topo
from topo import migrate

KILLS = 10
KILL_PRELOADED = 2_000


def _kill_topology(vhost: str, trial: int, quorum: bool) -> str:
    # Each trial a new definition: another x-max-length on a classic queue, or to quorum (and the trial
    # after that from quorum back to classic: a quorum source is moved exactly once too, docs/migrate.md).
    queue_type = "quorum" if quorum else "classic"
    arguments = f"{{x-max-length: {1_000_000 + trial}}}"
    return _topology(vhost, f"jobs: {{type: {queue_type}, migrate: true, arguments: {arguments}}}")


def _temporaries(broker: Any, vhost: str) -> list[str]:
    where = quote(vhost, safe="")
    names = []
    for kind in ("exchanges", "queues"):
        listing = requests.get(f"{broker.url}/api/{kind}/{where}", auth=broker.auth, timeout=30).json()
        names += [item["name"] for item in listing]
    return sorted(n for n in names if migrate.is_temporary(n))


def test_sigkill_at_random_points_of_migrations_loses_no_message(
    broker: Any, vhost_name: str, topo: Any, tmp_path: Any
) -> None:
    url = _setup(broker, vhost_name, topo, "jobs: {migrate: true}")
    _top_up(url, KILL_PRELOADED)
    path = tmp_path / "kill.yaml"
    env = {**os.environ, **{k: v for k, v in broker_env(broker).items() if v is not None}}
    # Another seed each run (TOPO_KILL_SEED repeats one): printed, and named by every failure.
    seed = int(os.environ.get("TOPO_KILL_SEED") or random.randrange(1_000_000))
    print(f"TOPO_KILL_SEED={seed}")
    rng = random.Random(seed)
    publisher = Publisher(url, pause=0.02)
    publisher.start()
    interrupted = 0
    points: list[str] = []
    # How long an uninterrupted migration takes here, from its first step to its last: the kills land at
    # uniformly random points of that span, until KILLS of them have interrupted a migration.
    path.write_text(textwrap.dedent(_topology(vhost_name, "jobs: {migrate: true, arguments: {x-max-length: 999999}}")))
    log = tmp_path / "measured.log"
    process = _start(path, log, env)
    began = _wait_for_migration(log, process)
    _wait_for(log, process, ": migrated")
    span = time.monotonic() - began
    assert process.wait(timeout=600) == 0, log.read_text()
    trial = 0
    try:
        # Once KILLS kills have interrupted migrations, a (killed) one goes to quorum, and a last (killed)
        # one from that quorum queue back to classic.
        extra = 0
        while extra < 2:
            assert trial < 2 * KILLS + 2, f"only {interrupted} of {trial} kills landed inside a migration"
            if interrupted >= KILLS:
                extra += 1
            quorum = extra == 1
            path.write_text(textwrap.dedent(_kill_topology(vhost_name, trial, quorum)))
            log = tmp_path / f"killed-{trial}.log"
            process = _start(path, log, env)
            _wait_for_migration(log, process)
            time.sleep(rng.uniform(0.0, span))
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=60)
            steps = [line for line in log.read_text().splitlines() if ": step " in line]
            points.append(steps[-1].split(": ", 1)[1] if steps else "before the migration")
            if _temporaries(broker, vhost_name):
                interrupted += 1
                shown = run_topo("plan", "-f", str(path), env=broker_env(broker))
                assert shown.code == 0 and "(interrupted: found" in shown.stdout, shown.output
                assert "Data loss" not in shown.stdout
            finished = run_topo("apply", "--auto-approve", "--no-lock", "-f", str(path), env=broker_env(broker))
            assert finished.code == 0, (
                f"seed {seed}, kill {trial}: the finishing apply failed\n--- killed apply's output:\n{log.read_text()}"
                f"\n--- finishing apply's output:\n{finished.output}\n--- broker:\n{_state(broker, vhost_name)}"
            )
            assert not _temporaries(broker, vhost_name)
            trial += 1
    finally:
        publisher.stop.set()
        publisher.join(30)
    assert publisher.error is None, publisher.error
    info = _queue(broker, vhost_name, "jobs")
    assert info["type"] == "classic" and info["arguments"]["x-max-length"] == 1_000_000 + trial - 1
    bodies = _drain(url, "jobs")
    old = [f"old-{n}" for n in range(PRELOADED + KILL_PRELOADED)]
    assert bodies[: len(old)] == old  # every message the queue held, once each, in order
    new = bodies[len(old) :]
    assert len(new) == len(set(new)), "duplicates"
    assert sorted(new) == sorted(publisher.confirmed)
    assert publisher.returned == [] and publisher.nacked == 0
    again = run_topo("plan", "--detailed-exitcode", "-f", str(path), env=broker_env(broker))
    assert again.code == 0, again.output
    print(f"an uninterrupted migration took {span:.1f} s; killed during:", *points, sep="\n  ")
    print(f"{trial} kills, {interrupted} inside a migration: 0 of {len(bodies)} messages lost, 0 duplicated")


def _start(path: Any, log: Any, env: dict[str, str]) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "topo", "apply", "--auto-approve", "--no-lock", "-f", str(path)]
    output = log.open("w")
    return subprocess.Popen(command, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=output, stderr=subprocess.STDOUT)


def _wait_for_migration(log: Any, process: subprocess.Popen[bytes]) -> float:
    """Waits until topo reports the migration's first step; returns when it did."""
    return _wait_for(log, process, ": step 1-2:")


def _wait_for(log: Any, process: subprocess.Popen[bytes], text: str) -> float:
    deadline = time.monotonic() + 600
    while text not in log.read_text():
        assert process.poll() is None, f"topo exited before it reported {text!r}:\n{log.read_text()}"
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.01)
    return time.monotonic()


def _state(broker: Any, vhost: str) -> str:
    """What a failing finish left on the broker: the queue, the temporaries with their message counts, the
    shovels' parameters and status, and the bindings of the queue and route."""
    where = quote(vhost, safe="")
    lines = []
    for kind in ("queues", "exchanges"):
        for item in requests.get(f"{broker.url}/api/{kind}/{where}", auth=broker.auth, timeout=30).json():
            if item["name"] == "jobs" or migrate.is_temporary(item["name"]):
                lines.append(
                    f"{kind[:-1]} {item['name']}: type={item.get('type')} messages={item.get('messages')} "
                    f"consumers={item.get('consumers')} arguments={item.get('arguments')}"
                )
    for path in (f"parameters/shovel/{where}", f"shovels/{where}", f"bindings/{where}"):
        response = requests.get(f"{broker.url}/api/{path}", auth=broker.auth, timeout=30)
        lines.append(f"GET /api/{path}: {response.status_code} {response.text[:4000]}")
    return "\n".join(lines)


def _top_up(url: str, count: int) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.confirm_delivery()
    for number in range(PRELOADED, PRELOADED + count):
        channel.basic_publish("", "jobs", f"old-{number}".encode())
    connection.close()
