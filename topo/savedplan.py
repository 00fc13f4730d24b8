"""Saved plans: `topo plan --out FILE` writes one, `topo apply FILE` applies exactly it or refuses.

What the file holds (format "topo-saved-plan", version 1; docs in README "Saved plans"):
- the broker's identity (cluster name, and the internal cluster id where the user may read it), the
  user, the topology and var files the plan was made from, and the targets;
- every change as data (action, object, before, after, reason), and the state of each object the
  changes depend on without changing it (a binding's exchange, a permission's user, the vhost);
- every migration (migrate.py): the queue, its definition before and after, the bindings it moves, the
  temporaries of an interrupted one, and its message count (shown, never compared: messages move);
- no password, password hash or URI credential: each is a keyed digest, HMAC-SHA256 under a key
  derived from TOPO_PLAN_KEY (else the broker password of the connection), with a salt of the file's
  own and the object's identity in the message, so the file shows neither the secret nor which
  objects share one, and guessing a secret needs the key.

Applying re-reads the files (that is how secrets come back: from the environment, never from the
file), reads the broker, plans afresh and compares, change by change, in the file's own form: any
difference refuses the apply before any request that changes something, naming each object. What
the fresh plan adds beside the changes (message counts) is checked as for any plan.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from topo import __version__
from topo.capabilities import OVERVIEW_PARAMS
from topo.client import ManagementClient
from topo.depends import dependencies
from topo.diff import Change
from topo.errors import BrokerError, ConfigError, TopoError
from topo.migrate import Migration
from topo.passwords import Password
from topo.plan import Plan
from topo.redact import mask_uris, redact_url
from topo.render import display_name
from topo.state import Actual, Key, Kind, canonical

FORMAT = "topo-saved-plan"
VERSION = 1
# A plan with migrations is version 2: a topo that reads only version 1 would apply it as plain replaces,
# which its own plan refuses as data loss at best, and drops the messages with --allow-data-loss.
MIGRATIONS_VERSION = 2
READS = (VERSION, MIGRATIONS_VERSION)


class StalePlan(TopoError):
    """The broker, the files or a secret changed since the saved plan was made."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Which broker this is: the internal cluster id (administrators may read it), else its cluster name."""

    cluster_name: str
    cluster_id: str | None

    def matches(self, other: Identity) -> bool:
        if self.cluster_id and other.cluster_id:
            return self.cluster_id == other.cluster_id
        return self.cluster_name == other.cluster_name

    def describe(self) -> str:
        return f"cluster {self.cluster_name!r}" + (f" ({self.cluster_id})" if self.cluster_id else "")


def read_identity(client: ManagementClient) -> Identity:
    params = {**OVERVIEW_PARAMS, "columns": "cluster_name"}
    overview = client.get("/api/overview", what="read broker overview", params=params)
    try:
        found = client.get_or_none("/api/global-parameters/internal_cluster_id", what="read the cluster id")
    except BrokerError as exc:
        if exc.status != 401:
            raise
        found = None  # not an administrator: the cluster name has to do
    cluster_id = found.get("value") if isinstance(found, dict) else None
    return Identity(str(overview.get("cluster_name", "")), str(cluster_id) if cluster_id else None)


class Sealer:
    """Keyed digests of secret values, for this file only."""

    def __init__(self, material: str | None, salt: str):
        self.material = material
        self.salt = salt
        self.used = False

    def seal(self, key: Key, field_name: str, value: str) -> str:
        if not self.material:
            raise ConfigError(
                "a saved plan with passwords needs a key to digest them: set TOPO_PLAN_KEY (a secret of the "
                "pipeline, the same for plan and apply); topo cannot use the connection's password, it has none"
            )
        self.used = True
        secret = hashlib.sha256(b"topo saved plan key v1\0" + self.material.encode("utf-8")).digest()
        message = "\0".join([self.salt, key.kind.value, key.vhost, key.name, field_name, value])
        return "hmac-sha256:" + hmac.new(secret, message.encode("utf-8"), hashlib.sha256).hexdigest()


def key_material(password: str) -> str | None:
    return os.environ.get("TOPO_PLAN_KEY") or password or None


def _attrs(key: Key, attrs: dict[str, Any] | None, sealer: Sealer) -> dict[str, Any] | None:
    if attrs is None:
        return None
    out: dict[str, Any] = {}
    for name, value in attrs.items():
        if isinstance(value, Password):
            # A plaintext from the files is what the user asked for; a stored hash is what the broker has.
            form = (
                f"plain:{value.algorithm}:{value.plaintext}"
                if value.plaintext is not None
                else (f"hash:{value.algorithm}:{value.password_hash}")
            )
            out[name] = {"sealed": sealer.seal(key, name, form)}
        elif (masked := mask_uris(value)) != value:
            out[name] = {"masked": masked, "sealed": sealer.seal(key, name, canonical(value))}
        else:
            out[name] = value
    return out


def _object(key: Key, attrs: dict[str, Any] | None) -> dict[str, Any]:
    return {"kind": key.kind.value, "vhost": key.vhost, "name": key.name, "display": display_name(key, attrs)}


def change_record(change: Change, sealer: Sealer) -> dict[str, Any]:
    attrs = change.after if change.after is not None else change.before
    return {
        **_object(change.key, attrs),
        "action": change.action.value,
        "before": _attrs(change.key, change.before, sealer),
        "after": _attrs(change.key, change.after, sealer),
        "reason": change.reason,
    }


def migration_record(m: Migration, sealer: Sealer) -> dict[str, Any]:
    return {
        "vhost": m.vhost,
        "queue": m.queue,
        "before": _attrs(m.key, m.before, sealer),
        "after": _attrs(m.key, m.after, sealer),
        "messages": m.messages,
        "bindings": m.bindings,
        "interrupted": list(m.interrupted),
        "finish": _attrs(m.key, m.finish, sealer),
    }


# What makes a saved migration stale: its definitions, never its message count.
_MIGRATION_FIELDS = ("before", "after", "bindings", "interrupted", "finish")


def dependency_records(changes: Iterable[Change], actual: Actual, sealer: Sealer) -> list[dict[str, Any]]:
    records = []
    for key in sorted(dependencies(changes)):
        obj = actual.objects.get(key)
        exists = obj is not None or (key.kind is Kind.VHOST and key.vhost in actual.vhosts)
        records.append(
            {
                **_object(key, obj.attrs if obj else None),
                "exists": exists,
                "state": _attrs(key, obj.attrs, sealer) if obj else None,
            }
        )
    return records


@dataclass
class SavedPlan:
    identity: Identity
    user: str
    files: list[str]
    var_files: list[str]
    targets: list[str]
    vhosts: list[str]
    salt: str
    changes: list[dict[str, Any]]
    depends_on: list[dict[str, Any]]
    migrations: list[dict[str, Any]] = field(default_factory=list)
    document: dict[str, Any] = field(default_factory=dict)  # everything else, for display

    @property
    def path_hint(self) -> str:
        return ", ".join(self.files) or "topology.yaml"


def save(
    path: str,
    plan: Plan,
    actual: Actual,
    identity: Identity,
    *,
    url: str,
    user: str,
    material: str | None,
    files: list[str],
    var_files: list[str],
    targets: list[str],
    vhosts: list[str],
    plan_json: dict[str, Any],
) -> int:
    """Writes the plan file (atomically); returns its size in bytes."""
    sealer = Sealer(material, secrets.token_hex(16))
    document = {
        "format": FORMAT,
        "version": MIGRATIONS_VERSION if plan.migrations else VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "topo_version": __version__,
        "broker": {
            "url": redact_url(url),
            "cluster_name": identity.cluster_name,
            "cluster_id": identity.cluster_id,
            "rabbitmq_version": actual.version,
        },
        "user": user,
        "files": files,
        "var_files": var_files,
        "targets": targets,
        "vhosts": vhosts,
        "salt": sealer.salt,
        "changes": [change_record(change, sealer) for change in plan.changes],
        "depends_on": dependency_records(plan.changes, actual, sealer),
        "migrations": [migration_record(m, sealer) for m in plan.migrations],
        # What the plan showed, for people reading the file; never compared (messages are counted again).
        "summary": plan_json["summary"],
        "data_loss": [
            {k: c[k] for k in ("action", "kind", "vhost", "name", "messages", "messages_unknown")}
            for c in plan_json["data_loss"]
        ],
        "warnings": list(plan.warnings),
    }
    text = _dumps(document)
    target = Path(path)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(text, encoding="utf-8")
        temporary.replace(target)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise TopoError(f"cannot write {path}: {exc.strerror}") from None
    return len(text.encode("utf-8"))


def _dumps(document: dict[str, Any]) -> str:
    """One key per line and one change per line: readable and diffable, and written by json's C encoder
    (an indented dump takes its pure-Python path, 30 times slower on a 21,000-change plan)."""
    lines = []
    for name, value in document.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            items = ",\n  ".join(json.dumps(item, ensure_ascii=False) for item in value)
            lines.append(f" {json.dumps(name)}: [\n  {items}\n ]")
        else:
            lines.append(f" {json.dumps(name)}: {json.dumps(value, ensure_ascii=False)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def load(path: str) -> SavedPlan:
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such saved plan") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a saved plan (unreadable or not JSON: {exc})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ConfigError(f"{path}: not a saved plan (made by `topo plan --out FILE`)")
    if document.get("version") not in READS:
        raise ConfigError(
            f"{path}: saved plan format version {document.get('version')!r}; this topo ({__version__}) reads "
            f"versions {', '.join(map(str, READS))}: plan again with this topo"
        )
    try:
        broker = document["broker"]
        return SavedPlan(
            identity=Identity(str(broker["cluster_name"]), broker.get("cluster_id")),
            user=str(document["user"]),
            files=list(document["files"]),
            var_files=list(document["var_files"]),
            targets=list(document.get("targets", [])),
            vhosts=list(document["vhosts"]),
            salt=str(document["salt"]),
            changes=list(document["changes"]),
            depends_on=list(document["depends_on"]),
            migrations=list(document.get("migrations", [])),
            document=document,
        )
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: a damaged saved plan (missing {exc})") from None


def _where(record: dict[str, Any]) -> str:
    where = "" if record["kind"] in ("vhost", "user", "user_limit") else f" in vhost {record['vhost']!r}"
    return f"{record['kind']} {record['display']}{where}"


def staleness(saved: SavedPlan, plan: Plan, actual: Actual, material: str | None) -> list[str]:
    """Why `plan`, made now, is not the saved one: one line per object; empty when it is the same."""
    sealer = Sealer(material, saved.salt)
    fresh = {_identity(r): r for r in (change_record(c, sealer) for c in plan.changes)}
    dependencies_now = {_identity(r): r for r in dependency_records(plan.changes, actual, sealer)}
    problems = []
    saved_changes = {_identity(r): r for r in saved.changes}
    for identity in sorted(set(saved_changes) | set(fresh)):
        old, new = saved_changes.get(identity), fresh.get(identity)
        if old == new:
            continue
        if new is None:
            problems.append(
                f"{_where(old)}: planned {old['action']}, now nothing to do (the broker changed since the plan, "
                "or the plan was applied already)"
            )
        elif old is None:
            problems.append(f"{_where(new)}: not in the saved plan, now {new['action']}")
        elif old["before"] != new["before"]:
            problems.append(
                f"{_where(new)}: changed on the broker since the plan ({_fields(old['before'], new['before'])})"
            )
        elif old["action"] != new["action"]:
            problems.append(f"{_where(new)}: planned {old['action']}, now {new['action']}")
        else:
            what = _fields(old["after"], new["after"])
            problems.append(f"{_where(new)}: the files or variables now ask for something else ({what})")
    for record in saved.depends_on:
        now = dependencies_now.get(_identity(record))
        if now is None:
            continue  # no longer a dependency: the change that needed it is reported above
        if (now["exists"], now["state"]) != (record["exists"], record["state"]):
            state = (
                "deleted"
                if record["exists"] and not now["exists"]
                else "created"
                if now["exists"] and not record["exists"]
                else _fields(record["state"], now["state"])
            )
            problems.append(f"{_where(record)}: the plan depends on it, and it changed on the broker ({state})")
    # Through JSON, as the saved ones came back: a tuple in the fresh plan is the file's list.
    fresh_migrations = json.loads(json.dumps([migration_record(m, sealer) for m in plan.migrations]))
    problems.extend(_stale_migrations(saved.migrations, fresh_migrations))
    return problems


def _stale_migrations(saved: list[dict[str, Any]], fresh: list[dict[str, Any]]) -> list[str]:
    def where(record: dict[str, Any]) -> str:
        return f"migration of queue {record['queue']!r} in vhost {record['vhost']!r}"

    before = {(r["vhost"], r["queue"]): r for r in saved}
    now = {(r["vhost"], r["queue"]): r for r in fresh}
    problems = []
    for identity in sorted(set(before) | set(now)):
        old, new = before.get(identity), now.get(identity)
        if old is None:
            assert new is not None
            interrupted = f" (interrupted: found {', '.join(new['interrupted'])})" if new["interrupted"] else ""
            problems.append(f"{where(new)}: not in the saved plan, now planned{interrupted}")
        elif new is None:
            problems.append(f"{where(old)}: planned, now no migration (the broker or the files changed since)")
        else:
            differ = [f for f in _MIGRATION_FIELDS if old.get(f) != new.get(f)]
            if differ:
                problems.append(f"{where(new)}: changed since the plan ({', '.join(differ)})")
    return problems


def _identity(record: dict[str, Any]) -> tuple[str, str, str]:
    return record["kind"], record["vhost"], record["name"]


def _fields(before: dict[str, Any] | None, after: dict[str, Any] | None) -> str:
    if before is None or after is None:
        return "it was absent" if before is None else "it is gone"
    names = sorted(n for n in set(before) | set(after) if before.get(n) != after.get(n))
    sensitive = [n for n in names if isinstance(after.get(n), dict) and "sealed" in (after.get(n) or {})]
    shown = [f"{n} (sensitive)" if n in sensitive else n for n in names]
    return ", ".join(shown) or "its state"


def refuse_if_stale(path: str, saved: SavedPlan, plan: Plan, actual: Actual, material: str | None) -> None:
    problems = staleness(saved, plan, actual, material)
    if problems:
        shown = "\n".join(f"  {p}" for p in problems[:50])
        more = f"\n  … and {len(problems) - 50} more" if len(problems) > 50 else ""
        raise StalePlan(
            f"refusing to apply {path}: it no longer describes what apply would do ({len(problems)} object(s)); "
            f"nothing was changed:\n{shown}{more}\nPlan again, review, and apply the new plan."
        )


def refuse_other_broker(path: str, saved: SavedPlan, identity: Identity) -> None:
    if not saved.identity.matches(identity):
        raise StalePlan(
            f"refusing to apply {path}: it was made for {saved.identity.describe()} "
            f"({saved.document.get('broker', {}).get('url', '?')}), and this broker is {identity.describe()}"
        )
