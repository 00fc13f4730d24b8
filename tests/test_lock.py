"""The apply lock against the real node: concurrent applies, a killed holder, a non-administrator."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from broker_api import Api
from cli_runner import broker_env
from topo.client import ManagementClient
from topo.connection import resolve_connection
from topo.lock import LOCK_TTL_SECONDS, ApplyLock, lock_order

TOPO = [sys.executable, "-m", "topo"]


def _env(broker: Any, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOPO_")}
    env.update({k: v for k, v in broker_env(broker).items() if v is not None})
    env.update(extra)
    return env


def _client(broker: Any, user: str | None = None, password: str | None = None) -> ManagementClient:
    env = {"TOPO_URL": broker.url, "TOPO_USER": user or broker.user, "TOPO_PASSWORD": password or broker.password}
    return ManagementClient(
        resolve_connection(
            env=env,
            broker=None,
            url=None,
            user=None,
            password=None,
            ca_cert=None,
            client_cert=None,
            client_key=None,
            insecure=False,
            timeout=None,
        )
    )


def _topology(vhost: str, queues: int, max_length: int) -> str:
    lines = [f"vhosts:\n  {json.dumps(vhost)}:\n    queues:"]
    lines += [f"      q{n}: {{arguments: {{x-max-length: {max_length}}}}}" for n in range(queues)]
    return "\n".join(lines) + "\n"


def _lock_queue(api: Api, vhost: str) -> dict[str, Any] | None:
    response = requests.get(api._url("queues", vhost, "topo.lock"), auth=api.auth, timeout=30)
    return None if response.status_code == 404 else response.json()


def test_lock_order_puts_the_broker_wide_lock_first_and_the_rest_by_name() -> None:
    assert lock_order(["b", "a", "/"], False) == ["/", "a", "b"]
    assert lock_order(["b", "a"], True) == ["/", "a", "b"]
    assert lock_order(["b", "-a"], False) == ["-a", "b"]


def test_concurrent_applies_of_conflicting_files_take_turns(broker: Any, api: Api, vhost_name: str, tmp_path: Path):
    # Without the lock these interleave: one reports "did not converge", another replaces queues the
    # first just made. With it each plan sees the whole result of the apply before it.
    api.put({}, "vhosts", vhost_name)
    queues = 60
    runs = []
    for n in range(4):
        path = tmp_path / f"t{n}.yaml"
        path.write_text(_topology(vhost_name, queues, 10 + n % 2), encoding="utf-8")
        command = [*TOPO, "apply", "--auto-approve", "--lock-timeout", "120", "-f", str(path)]
        runs.append(
            subprocess.Popen(command, env=_env(broker), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    outputs = [run.communicate(timeout=300) for run in runs]
    results = [(run.returncode, out, err) for run, (out, err) in zip(runs, outputs, strict=True)]
    for code, out, err in results:
        assert code == 0, out + err
        assert "No changes" in out or "Verified: the broker matches the topology." in err, out + err
        summary = re.search(r"Plan: (\d+) to add, (\d+) to change, (\d+) to replace, (\d+) to destroy", out)
        # Whole plans only: all created, all replaced, or nothing to do; never a mixture.
        assert (summary is None and "No changes" in out) or summary.groups() in (
            (str(queues), "0", "0", "0"),
            ("0", "0", str(queues), "0"),
        ), out
    assert sum("to add" in out and f"Plan: {queues} to add" in out for _, out, _ in results) == 1
    assert _lock_queue(api, vhost_name) is None  # every apply released it


def test_a_second_apply_fails_at_once_naming_the_holder_and_plan_ignores_the_lock(
    broker: Any, api: Api, topo, vhost_name: str
) -> None:
    api.put({}, "vhosts", vhost_name)
    topology = f"prune: true\nvhosts:\n  {json.dumps(vhost_name)}:\n    queues:\n      jobs: {{}}\n"
    with ApplyLock(_client(broker)) as lock:
        lock.acquire([vhost_name])
        started = time.monotonic()
        refused = topo("apply", "--auto-approve", topology=topology)
        assert time.monotonic() - started < 10  # the default is not to wait
        assert refused.code == 1, refused.output
        assert f"another apply holds the lock on vhost {vhost_name!r}" in refused.stderr
        assert f"pid {os.getpid()}" in refused.stderr and lock.me.since in refused.stderr
        assert api.get("queues", vhost_name) and [q["name"] for q in api.get("queues", vhost_name)] == ["topo.lock"]
        # plan takes no lock, and neither plans, lists nor prunes the lock queue
        planned = topo("plan", "--json")
        assert planned.code == 0, planned.output
        document = json.loads(planned.stdout)
        assert [c["name"] for c in document["changes"]] == ["jobs"] and document["unmanaged"] == []
        waited = topo("apply", "--auto-approve", "--lock-timeout", "2", topology=topology)
        assert waited.code == 1 and "waited 2 s" in waited.stderr
        assert _lock_queue(api, vhost_name)["arguments"]["x-topo-lock-id"] == lock.me.id  # type: ignore[index]
    assert _lock_queue(api, vhost_name) is None
    applied = topo("apply", "--auto-approve")
    assert applied.code == 0, applied.output
    assert [q["name"] for q in api.get("queues", vhost_name)] == ["jobs"]


def test_a_killed_holders_lock_expires_within_the_documented_time(
    broker: Any, api: Api, vhost_name: str, tmp_path: Path
) -> None:
    api.put({}, "vhosts", vhost_name)
    path = tmp_path / "topology.yaml"
    path.write_text(_topology(vhost_name, 3, 10), encoding="utf-8")
    # A real apply that holds the lock while it waits for "yes" on a terminal, then is SIGKILLed.
    primary, secondary = pty.openpty()
    holder = subprocess.Popen(
        [*TOPO, "apply", "-f", str(path)], env=_env(broker), stdin=secondary, stdout=secondary, stderr=secondary
    )
    os.close(secondary)
    seen = b""
    deadline = time.monotonic() + 60
    while b"Enter a value" not in seen and time.monotonic() < deadline:
        if select.select([primary], [], [], 1)[0]:
            seen += os.read(primary, 4096)
    assert b"Enter a value" in seen, seen.decode(errors="replace")
    assert _lock_queue(api, vhost_name) is not None
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    killed = time.monotonic()
    os.close(primary)
    command = [*TOPO, "apply", "--auto-approve", "--lock-timeout", str(LOCK_TTL_SECONDS + 30), "-f", str(path)]
    waiter = subprocess.run(command, env=_env(broker), capture_output=True, text=True, timeout=120)
    waited = time.monotonic() - killed
    assert waiter.returncode == 0, waiter.stdout + waiter.stderr
    # Expired no later than the TTL after the holder's last refresh (polling adds about a second), and
    # the waiter, which only reads the lock, did not keep it alive.
    assert waited <= LOCK_TTL_SECONDS + 5, waited
    assert sorted(q["name"] for q in api.get("queues", vhost_name)) == ["q0", "q1", "q2"]


@pytest.fixture
def tenant(api: Api, vhost_name: str):
    """A hosted-plan user: management + policymaker, permissions on one vhost only."""
    name = f"{vhost_name}-tenant"
    api.put({}, "vhosts", vhost_name)
    api.put({"password": "tenant-Pw-1", "tags": "management,policymaker"}, "users", name)
    api.put({"configure": ".*", "write": ".*", "read": ".*"}, "permissions", vhost_name, name)
    yield name
    requests.delete(api._url("users", name), auth=api.auth, timeout=30)


def test_the_lock_works_for_a_non_administrator_on_one_vhost(broker: Any, api: Api, topo, vhost_name: str, tenant):
    env = {"TOPO_USER": tenant, "TOPO_PASSWORD": "tenant-Pw-1"}
    topology = f"vhosts:\n  {json.dumps(vhost_name)}:\n    queues:\n      jobs: {{}}\n"
    with ApplyLock(_client(broker, tenant, "tenant-Pw-1")) as lock:
        lock.acquire([vhost_name])
        refused = topo("apply", "--auto-approve", topology=topology, env=env)
        assert refused.code == 1 and f"user {tenant!r} on" in refused.stderr, refused.output
    applied = topo("apply", "--auto-approve", topology=topology, env=env)
    assert applied.code == 0, applied.output
    assert _lock_queue(api, vhost_name) is None and _lock_queue(api, "/") is None


def test_creating_a_vhost_takes_the_broker_wide_lock(broker: Any, api: Api, topo, vhost_name: str) -> None:
    topology = f"vhosts:\n  {json.dumps(vhost_name)}:\n    queues:\n      jobs: {{}}\n"
    with ApplyLock(_client(broker)) as lock:
        lock.acquire([], broker_wide=True)
        refused = topo("apply", "--auto-approve", topology=topology)
        assert refused.code == 1 and "another apply holds the lock on vhost '/'" in refused.stderr, refused.output
        assert vhost_name not in {v["name"] for v in api.get("vhosts")}
    applied = topo("apply", "--auto-approve", topology=topology)
    assert applied.code == 0, applied.output
    assert _lock_queue(api, vhost_name) is None and _lock_queue(api, "/") is None


def test_an_administrator_without_permissions_on_the_default_vhost_is_warned(api: Api, topo, vhost_name: str) -> None:
    admin = f"{vhost_name}-admin"
    api.put({"password": "admin-Pw-1", "tags": "administrator"}, "users", admin)
    try:
        topology = f"vhosts:\n  {json.dumps(vhost_name)}:\n    queues:\n      jobs: {{}}\n"
        applied = topo(
            "apply", "--auto-approve", topology=topology, env={"TOPO_USER": admin, "TOPO_PASSWORD": "admin-Pw-1"}
        )
        assert applied.code == 0, applied.output
        assert "Warning: no broker-wide apply lock" in applied.stderr and "no permissions on" in applied.stderr
        assert _lock_queue(api, vhost_name) is None
    finally:
        api.delete("users", admin)


def test_a_user_who_may_not_declare_the_lock_queue_is_told_how_to_fix_it(api: Api, topo, vhost_name: str, tenant):
    api.put({"configure": "^app\\.", "write": ".*", "read": ".*"}, "permissions", vhost_name, tenant)
    env = {"TOPO_USER": tenant, "TOPO_PASSWORD": "tenant-Pw-1"}
    topology = f"vhosts:\n  {json.dumps(vhost_name)}:\n    queues:\n      app.jobs: {{}}\n"
    refused = topo("apply", "--auto-approve", topology=topology, env=env)
    assert refused.code == 1 and "HTTP 401" in refused.stderr, refused.output
    assert "configure permission on the queue name 'topo.lock'" in refused.stderr and "--no-lock" in refused.stderr
    assert api.get("queues", vhost_name) == []
    unlocked = topo("apply", "--auto-approve", "--no-lock", topology=topology, env=env)
    assert unlocked.code == 0, unlocked.output
    assert [q["name"] for q in api.get("queues", vhost_name)] == ["app.jobs"]
