"""topo beside real applications: a Celery worker and client, pika and aio-pika, on the test node.

What each scenario measured is printed (run with -s to see it): messages sent, confirmed, consumed
and returned.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from clients import ConfirmingPublisher, PikaApp, amqp_url, celery_project, wait_for

from broker_api import Api
from cli_runner import broker_env, run_topo
from topo.client import ManagementClient
from topo.connection import resolve_connection
from topo.engine import apply_and_verify, build_plan
from topo.errors import ApplyFailed
from topo.load import load_topology

pytestmark = pytest.mark.broker

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "celery" / "topology.yaml"


def report(scenario: str, **counts: int) -> None:
    print(f"\n[{scenario}] " + ", ".join(f"{name}={value}" for name, value in counts.items()))


def celery_vhost(broker: Any, vhost: str) -> None:
    """The Celery example applied to `vhost`: what its workers start against."""
    applied = run_topo("apply", "--auto-approve", "-f", str(EXAMPLE), env={**broker_env(broker), "CELERY_VHOST": vhost})
    assert applied.code == 0, applied.output


def names(api: Api, kind: str, vhost: str) -> set[str]:
    return {item["name"] for item in api.get(kind, vhost)}


def consumers(api: Api, vhost: str, queue: str) -> int:
    """The queue's consumers as the management API lists them (refreshed every few seconds), the
    smaller of its two sources: topo reads one or the other depending on the user's tags."""
    listed = sum(1 for c in api.get("consumers", vhost) if c["queue"]["name"] == queue)
    return min(listed, int(api.get("queues", vhost, queue).get("consumers") or 0))


def test_a_celery_worker_survives_an_apply_with_prune(broker: Any, api: Api, vhost_name: str, tmp_path: Path) -> None:
    celery_vhost(broker, vhost_name)
    env = {**broker_env(broker), "CELERY_VHOST": vhost_name}
    # A pika application shares the vhost: its one durable work queue is declared in a file of its own.
    (tmp_path / "pika-app.yaml").write_text(
        f"vhosts:\n  {json.dumps(vhost_name)}:\n    queues:\n      app.work: {{}}\n", encoding="utf-8"
    )
    files = ["-f", str(EXAMPLE), "-f", str(tmp_path / "pika-app.yaml")]
    url = amqp_url(broker, vhost_name)
    with celery_project(tmp_path, url) as celery:
        worker = celery.start_worker()
        celery.start_client()
        app = PikaApp(url, pika_objects).start_and_wait()
        exchanges = names(api, "exchanges", vhost_name)
        assert {"celeryev", "celery.pidbox", "reply.celery.pidbox", "app.events"} <= exchanges
        queues = names(api, "queues", vhost_name)
        assert any(q.endswith(".celery.pidbox") for q in queues), queues
        assert {"host-7.updates", "session.host-7", "app.scratch"} <= queues
        # Something that is topo's to prune, beside everything that is Celery's and pika's.
        api.put({"durable": True, "auto_delete": False, "arguments": {}}, "queues", vhost_name, "stray")

        plan = run_topo("plan", "--json", *files, env=env)
        data = json.loads(plan.stdout)
        assert [(c["action"], c["name"]) for c in data["changes"]] == [("delete", "stray")], plan.stdout
        # Only the non-durable objects pika made by default are drift (prune_non_durable would delete them).
        unmanaged = {(u["kind"], u["name"]) for u in data["unmanaged"]}
        assert {("exchange", "app.events"), ("queue", "app.scratch")} <= unmanaged, unmanaged
        applied = run_topo("apply", "--auto-approve", *files, env=env)
        assert applied.code == 0, applied.output

        time.sleep(2)  # a worker that lost celeryev dies within a second or two
        assert worker.poll() is None, celery.log()
        assert "w1@topo: OK" in celery.ping(), celery.log()
        assert names(api, "exchanges", vhost_name) == exchanges
        assert names(api, "queues", vhost_name) == queues
        assert app.cancelled_by_broker == 0 and app.error is None
        celery.start_client()  # tasks still run and their results still come back
        again = run_topo("plan", "--detailed-exitcode", *files, env=env)
        assert again.code == 0, again.output
        app.stop()
        report("celery prune", tasks_sent=2, results_received=2, pings_answered=1, pika_cancelled=0)


def test_prune_leaves_celerys_quorum_delayed_delivery_alone(
    topo, api: Api, broker: Any, vhost_name: str, tmp_path: Path
) -> None:
    topology = f"""
    vhosts:
      {json.dumps(vhost_name)}:
        prune: true
        exchanges:
          celery: {{type: direct}}
        queues:
          celery: {{type: quorum}}
        bindings:
          - {{source: celery, destination: celery, routing_key: celery}}
    """
    assert topo("apply", "--auto-approve", topology=topology).code == 0
    with celery_project(tmp_path, amqp_url(broker, vhost_name), quorum=True) as celery:
        worker = celery.start_worker()
        objects = [*api.get("queues", vhost_name), *api.get("exchanges", vhost_name), *api.bindings(vhost_name)]
        delayed = [o for o in objects if "celery_delayed_" in str(o.get("name", o.get("source", "")))]
        assert len(delayed) > 100, len(delayed)  # 28 queues, 29 exchanges and their bindings
        plan = topo("plan", "--json")
        data = json.loads(plan.stdout)
        assert data["changes"] == [] and data["unmanaged"] == [], plan.stdout
        assert topo("apply", "--auto-approve").code == 0
        assert worker.poll() is None and "w1@topo: OK" in celery.ping(), celery.log()
        report("celery quorum prune", celery_objects=len(objects), delayed_delivery_objects=len(delayed), pruned=0)


def pika_objects(channel: Any) -> list[str]:
    """What pika applications commonly declare (pika's defaults: durable=False, auto_delete=False)."""
    channel.exchange_declare("app.events", "topic")
    channel.queue_declare("app.work", durable=True)
    channel.queue_declare("host-7.updates", auto_delete=True)
    channel.queue_bind("host-7.updates", "app.events", "update.#")
    channel.queue_declare("session.host-7", arguments={"x-expires": 600_000})
    channel.queue_bind("session.host-7", "app.events", "session.#")
    channel.queue_declare("app.scratch")  # non-durable, outlives the client
    reply = channel.queue_declare("", exclusive=True).method.queue  # an RPC reply queue: amq.gen-...
    return ["host-7.updates", "app.work", reply]


class AioPikaApp(threading.Thread):
    """An aio-pika application: a robust connection, a per-host auto-delete queue, a consumer."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url = url
        self.ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.done: asyncio.Event | None = None

    def run(self) -> None:
        self.loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self.done = asyncio.Event()
        connection = await aio_pika.connect_robust(self.url)
        channel = await connection.channel()
        exchange = await channel.declare_exchange("aio.events", aio_pika.ExchangeType.FANOUT)
        queue = await channel.declare_queue("aio.host-7", auto_delete=True)
        await queue.bind(exchange)
        await queue.consume(self._deliver)
        self.ready.set()
        await self.done.wait()
        await connection.close()

    async def _deliver(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        await message.ack()

    def stop(self) -> None:
        assert self.done is not None
        self.loop.call_soon_threadsafe(self.done.set)
        self.join(30)


def test_an_export_taken_while_clients_run_plans_empty_after_they_stop(
    broker: Any, api: Api, vhost_name: str, tmp_path: Path
) -> None:
    celery_vhost(broker, vhost_name)
    url = amqp_url(broker, vhost_name)
    with celery_project(tmp_path, url) as celery:
        celery.start_worker()
        celery.start_client()
        app = PikaApp(url, pika_objects).start_and_wait()
        aio = AioPikaApp(url)
        aio.start()
        assert aio.ready.wait(30), "the aio-pika application did not start"
        exported = run_topo("export", "--vhost", vhost_name, "--no-users", env=broker_env(broker))
        assert exported.code == 0, exported.output
        (tmp_path / "export.yaml").write_text(exported.stdout, encoding="utf-8")
        plan_now = run_topo("plan", "--detailed-exitcode", "-f", str(tmp_path / "export.yaml"), env=broker_env(broker))
        assert plan_now.code == 0, plan_now.output
        app.stop()
        aio.stop()
    # Everything that lived only as long as its clients is gone; what outlives them is declared.
    wait_for(lambda: not {"host-7.updates", "aio.host-7"} & names(api, "queues", vhost_name), what="auto-delete")
    left = exported.stderr
    for owned in ("celeryev", "celery.pidbox", "host-7.updates", "session.host-7", "aio.host-7"):
        assert owned in left, left
        assert f"{owned}:" not in exported.stdout and f'"{owned}"' not in exported.stdout
    assert "--include-client-owned" in left
    for kept in ("app.events", "app.work", "app.scratch", "aio.events"):
        assert kept in exported.stdout, exported.stdout
    assert "amq.gen-" not in exported.stdout
    after = run_topo("plan", "--detailed-exitcode", "-f", str(tmp_path / "export.yaml"), env=broker_env(broker))
    assert after.code == 0, after.output
    report("export beside clients", celery_tasks=1, celery_results=1, pika_consumed=app.consumed)


def work_topology(vhost: str, queue_type: str, ttl: int) -> str:
    return f"""
vhosts:
  {json.dumps(vhost)}:
    exchanges:
      jobs: {{type: direct}}
    queues:
      work: {{type: {queue_type}, arguments: {{x-message-ttl: {ttl}}}}}
    bindings:
      - {{source: jobs, destination: work, routing_key: work}}
"""


def management_client(broker: Any) -> ManagementClient:
    return ManagementClient(
        resolve_connection(env={}, broker=None, url=broker.url, user=broker.user, password=broker.password)
    )


def test_a_replace_under_a_live_pika_consumer_is_refused(topo, api: Api, broker: Any, vhost_name: str) -> None:
    url = amqp_url(broker, vhost_name)
    assert topo("apply", "--auto-approve", topology=work_topology(vhost_name, "classic", 60000)).code == 0
    consumer = PikaApp(url, lambda channel: ["work"]).start_and_wait()
    publisher = ConfirmingPublisher(url, "jobs", "work").start_and_wait()
    # The management API lists a consumer only after its next statistics round (5 s by default).
    wait_for(lambda: consumers(api, vhost_name, "work") == 1, what="the consumer to be listed")
    try:
        changed = work_topology(vhost_name, "classic", 120000)
        plan = topo("plan", topology=changed)
        assert "# 1 consumer subscribed: the broker would cancel them" in plan.stdout, plan.stdout
        assert 'policy key "message-ttl"' in plan.stdout, plan.stdout
        refused = topo("apply", "--auto-approve")
        assert refused.code == 1, refused.output
        assert "queue 'work'" in refused.stderr and "1 consumer" in refused.stderr, refused.stderr
        assert "--allow-disruption" in refused.stderr
        time.sleep(0.5)
        assert consumers(api, vhost_name, "work") == 1 and consumer.cancelled_by_broker == 0
    finally:
        counts = publisher.stop()
    wait_for(lambda: consumer.consumed == counts["confirmed"], what="every confirmed message consumed")
    consumer.stop()
    assert counts["returned"] == 0 and counts["nacked"] == 0 and counts["confirmed"] == counts["sent"] > 0
    report("refused replace", consumed=consumer.consumed, **counts)
    allowed = topo("apply", "--auto-approve", "--allow-disruption")
    assert allowed.code == 0, allowed.output


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_a_consumer_arriving_after_the_plan_stops_the_delete(
    api: Api, broker: Any, vhost_name: str, tmp_path: Path, queue_type: str
) -> None:
    """Checked again right before the delete: if-unused for classic queues, a recount for quorum."""
    path = tmp_path / "t.yaml"
    path.write_text(work_topology(vhost_name, queue_type, 60000), encoding="utf-8")
    client = management_client(broker)
    first = load_topology([str(path)]).desired
    apply_and_verify(client, first, build_plan(client, first), allow_data_loss=False)
    path.write_text(work_topology(vhost_name, queue_type, 120000), encoding="utf-8")
    desired = load_topology([str(path)]).desired
    plan = build_plan(client, desired)
    assert plan.disruptions() == []  # unused when planned...
    consumer = PikaApp(amqp_url(broker, vhost_name), lambda channel: ["work"]).start_and_wait()
    try:
        wait_for(lambda: consumers(api, vhost_name, "work") == 1, what="the consumer to be listed")
        with pytest.raises(ApplyFailed) as caught:  # ...but not when applied
            apply_and_verify(client, desired, plan, allow_data_loss=False)
        message = str(caught.value)
        assert 'queue "work"' in message and "1 consumer" in message and "--allow-disruption" in message
        assert consumers(api, vhost_name, "work") == 1
    finally:
        consumer.stop()


def test_confirmed_mandatory_publishes_survive_changes_to_other_queues(
    topo, api: Api, broker: Any, vhost_name: str
) -> None:
    def topology(ttl: int, new: bool) -> str:
        others = "".join(f"      other.{n}: {{arguments: {{x-message-ttl: {ttl}}}}}\n" for n in range(20))
        others += "".join(f"      other.new.{n}: {{}}\n" for n in range(20 if new else 0))
        gone = "".join(f"      other.gone.{n}: {{}}\n" for n in range(0 if new else 10))
        bindings = "".join(f"      - {{source: other, destination: other.{n}}}\n" for n in range(20))
        bindings += "".join(f"      - {{source: other, destination: other.new.{n}}}\n" for n in range(20 if new else 0))
        return (
            f"vhosts:\n  {json.dumps(vhost_name)}:\n    prune: true\n"
            "    exchanges:\n      orders: {type: topic}\n      other: {type: fanout}\n"
            f"    queues:\n      orders.live: {{}}\n{others}{gone}"
            f"    bindings:\n      - {{source: orders, destination: orders.live, routing_key: 'order.#'}}\n{bindings}"
        )

    assert topo("apply", "--auto-approve", topology=topology(1000, new=False)).code == 0
    url = amqp_url(broker, vhost_name)
    consumer = PikaApp(url, lambda channel: ["orders.live"]).start_and_wait()
    publisher = ConfirmingPublisher(url, "orders", "order.created").start_and_wait()
    try:
        time.sleep(0.3)
        # 20 replaces, 20 creates, 10 prunes and their bindings, while orders flow in the same vhost.
        applied = topo("apply", "--auto-approve", topology=topology(2000, new=True))
        assert applied.code == 0, applied.output
        assert "20 replaced" in applied.stderr and "10 destroyed" in applied.stderr, applied.stderr
        time.sleep(0.3)
    finally:
        counts = publisher.stop()
    wait_for(lambda: consumer.consumed >= counts["confirmed"], what="every confirmed message consumed")
    consumer.stop()
    report("publish during apply", consumed=consumer.consumed, **counts)
    assert counts["returned"] == 0 and counts["nacked"] == 0
    assert counts["confirmed"] == counts["sent"] > 0
    assert consumer.consumed == counts["confirmed"]
    assert consumer.cancelled_by_broker == 0


def test_a_non_administrator_sees_other_users_consumers(topo, api: Api, broker: Any, vhost_name: str) -> None:
    """The consumer listing shows such a user only its own consumers; topo counts from the queues too."""
    user = f"{vhost_name}-deployer"
    assert topo("apply", "--auto-approve", topology=work_topology(vhost_name, "classic", 60000)).code == 0
    api.put({"password": "deploy-Pw-1", "tags": "management,policymaker"}, "users", user)
    try:
        api.put({"configure": ".*", "write": ".*", "read": ".*"}, "permissions", vhost_name, user)
        consumer = PikaApp(amqp_url(broker, vhost_name), lambda channel: ["work"]).start_and_wait()
        try:
            wait_for(lambda: consumers(api, vhost_name, "work") == 1, what="the consumer to be listed")
            as_user = {"TOPO_USER": user, "TOPO_PASSWORD": "deploy-Pw-1"}
            changed = work_topology(vhost_name, "classic", 120000)
            refused = topo("apply", "--auto-approve", topology=changed, env=as_user)
            assert refused.code == 1 and "queue 'work'" in refused.stderr, refused.output
            assert "1 consumer" in refused.stderr and "--allow-disruption" in refused.stderr
        finally:
            consumer.stop()
    finally:
        api.delete("users", user)
