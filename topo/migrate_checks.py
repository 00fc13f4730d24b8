"""What a migration needs of the broker and of the connected user, asked before any change.

The management API lets no one but an administrator read a user's permissions, and lets no policymaker
read the enabled plugins; so each need is asked with a request the broker must refuse whatever the
answer: it checks the permission (or looks the shovel component up) first, and only then finds the
request invalid. Measured on 3.10.8 and 4.3.6, as an administrator and as a policymaker:

- PUT a queue with x-max-length -1: 401 "Access refused." without configure permission on its name,
  else 400 "invalid arg" (new name) or "inequivalent arg" (existing queue); nothing is declared;
- POST a binding from an exchange that does not exist: 401 without read permission on the source's
  name or write permission on the destination's, else 404 "no exchange"; nothing is bound.

The permission patterns of the internal backend match names only (not kinds), so a probe of a name
as a queue tells about that name as an exchange too.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from topo.apipath import api_path
from topo.capabilities import read_shovel_plugin
from topo.state import Actual, Kind

if TYPE_CHECKING:
    from topo.client import ManagementClient
    from topo.migrate import Migration

WHAT = "check what the migration needs"
_ANSWERS = (400, 401, 403, 404)


def problems(client: ManagementClient, actual: Actual, migrations: Iterable[Migration]) -> list[str]:
    """Why these migrations could not run to their end: the shovel plugin, then each missing permission."""
    from topo.migrate import name

    migrations = list(migrations)
    if not migrations:
        return []
    found = []
    first = migrations[0]
    if read_shovel_plugin(client, actual.capabilities, first.vhost, name(first.vhost, first.queue, "probe")) is False:
        found.append(
            "the shovel plugin (rabbitmq_shovel), which moves the messages, is not enabled: "
            "enable it on every node with `rabbitmq-plugins enable rabbitmq_shovel`"
        )
    for migration in migrations:
        found.extend(_permissions(client, actual, migration))
    return found


def _permissions(client: ManagementClient, actual: Actual, m: Migration) -> list[str]:
    from topo.migrate import name

    who = f"user {actual.me!r} in vhost {m.vhost!r}"
    probe = name(m.vhost, m.queue, "probe")  # never declared: each request below is refused
    missing = []
    if not _may_configure(client, m.vhost, probe):
        missing.append("configure permission on topo.migrate.* (declares and deletes the temporaries)")
    if not _may_configure(client, m.vhost, m.queue):
        missing.append(f"configure permission on queue {m.queue!r} (deletes and re-declares it)")
    if not _may_bind(client, m.vhost, probe, probe):
        missing.append("read and write permission on topo.migrate.* (binds the temporaries)")
    else:
        if not _may_bind(client, m.vhost, probe, m.queue):
            missing.append(f"write permission on queue {m.queue!r} (its bindings move away and back)")
        if (m.before or {}).get("type", "classic") != "classic" and not _may_bind(client, m.vhost, m.queue, probe):
            missing.append(f"read permission on queue {m.queue!r} (checks it is empty before deleting it)")
        for source in _sources(actual, m):
            if not _may_bind(client, m.vhost, source, probe):
                missing.append(f"read permission on exchange {source!r} (its bindings to {m.queue!r} move)")
    return [f"{who} lacks {need}" for need in missing]


def _sources(actual: Actual, m: Migration) -> list[str]:
    from topo.migrate import is_temporary, name

    destinations = {m.queue, name(m.vhost, m.queue, "route")}
    return sorted(
        {
            obj.attrs["source"]
            for key, obj in actual.objects.items()
            if key.kind is Kind.BINDING
            and key.vhost == m.vhost
            and obj.attrs["destination"] in destinations
            and obj.attrs["source"]
            and not is_temporary(obj.attrs["source"])
        }
    )


def _may_configure(client: ManagementClient, vhost: str, queue: str) -> bool:
    body = {"durable": True, "auto_delete": False, "arguments": {"x-max-length": -1}}
    response = client.request("PUT", api_path("queues", vhost, queue), what=WHAT, body=body, ok=_ANSWERS)
    return response.status_code not in (401, 403)


def _may_bind(client: ManagementClient, vhost: str, source: str, destination: str) -> bool:
    """Read permission on `source` and write permission on `destination`; one of them must not exist
    (the exchange `source` or the queue `destination`), so that nothing is bound."""
    path = api_path("bindings", vhost, "e", source, "q", destination)
    response = client.request("POST", path, what=WHAT, body={"routing_key": ""}, ok=_ANSWERS, idempotent=True)
    return response.status_code not in (401, 403)
