"""The apply lock: one queue per vhost, named topo.lock, that only its holder keeps alive.

Why a queue: it is the one thing any user with permissions on a vhost can create atomically over the
management API (hosted shared plans give no vhost creation and no global parameters). Facts it rests
on, probed on RabbitMQ 3.10.8 and in rabbit_amqqueue's source:

- Declaring a queue that exists is a no-op (204) when the arguments the broker checks (x-expires,
  x-message-ttl, ...) are equal, and the broker does NOT compare other arguments: a re-declare with a
  different `x-topo-lock-id` succeeds and keeps the first one's. So declaring is "create if absent",
  and reading the queue back says who really holds it.
- Every declare resets the x-expires timer; a GET does not. The holder re-declares every TTL/3 from a
  background thread; a holder that was killed stops doing so and the broker deletes the queue TTL
  after the last refresh. Waiters only GET, so they never keep a dead holder's lock alive.

A plan that spans several vhosts takes one lock per vhost, in one fixed order (so two waiting applies
cannot deadlock); a plan that creates or deletes vhosts or manages users (objects outside any vhost)
also takes the broker-wide lock, which lives in vhost "/" and comes first in that order.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from topo.apipath import api_path
from topo.client import ManagementClient, _reason
from topo.engine import broker_wide
from topo.errors import BrokerError, TopoError
from topo.normalize import LOCK_QUEUE
from topo.state import Desired, Kind

# A killed holder's lock is gone this long after its last refresh (documented in the README).
LOCK_TTL_SECONDS = 30
GLOBAL_LOCK_VHOST = "/"
_POLL_SECONDS = 1.0


class LockHeld(TopoError):
    """Another apply holds a lock topo needs."""


@dataclass(frozen=True, slots=True)
class Holder:
    id: str
    who: str
    since: str

    @staticmethod
    def of(arguments: dict[str, Any]) -> Holder:
        return Holder(
            str(arguments.get("x-topo-lock-id", "")),
            str(arguments.get("x-topo-lock-holder", "an unknown holder (not topo)")),
            str(arguments.get("x-topo-lock-since", "an unknown time")),
        )

    def describe(self) -> str:
        age = ""
        try:
            seconds = int((datetime.now(UTC) - datetime.fromisoformat(self.since)).total_seconds())
            age = f" ({seconds} s ago)"
        except ValueError:
            pass
        return f"{self.who}, since {self.since}{age}"


def holder_identity(user: str) -> str:
    """Who is applying, as other applies will be told: broker user, host, process, CI job if any."""
    who = f"user {user!r} on {socket.gethostname()} (pid {os.getpid()})"
    if os.environ.get("GITHUB_RUN_ID") and os.environ.get("GITHUB_REPOSITORY"):
        server = os.environ.get("GITHUB_SERVER_URL", "https://github.com")
        who += f", {server}/{os.environ['GITHUB_REPOSITORY']}/actions/runs/{os.environ['GITHUB_RUN_ID']}"
    elif os.environ.get("CI_JOB_URL"):
        who += f", {os.environ['CI_JOB_URL']}"
    return who


def lock_order(vhosts: list[str], broker_wide: bool) -> list[str]:
    """The vhosts to lock, in the one order every apply uses: "/" first, then by name."""
    wanted = set(vhosts) | ({GLOBAL_LOCK_VHOST} if broker_wide else set())
    return sorted(wanted, key=lambda name: (name != GLOBAL_LOCK_VHOST, name))


@dataclass
class ApplyLock:
    client: ManagementClient
    ttl: int = LOCK_TTL_SECONDS
    held: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)  # vhosts whose lock another holder took meanwhile
    warnings: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self.me = Holder(
            secrets.token_hex(8),
            holder_identity(self.client.connection.user),
            datetime.now(UTC).isoformat(timespec="seconds"),
        )

    def _arguments(self) -> dict[str, Any]:
        return {
            "x-queue-type": "classic",
            "x-expires": self.ttl * 1000,
            "x-topo-lock-id": self.me.id,
            "x-topo-lock-holder": self.me.who,
            "x-topo-lock-since": self.me.since,
        }

    def _path(self, vhost: str) -> str:
        return api_path("queues", vhost, LOCK_QUEUE)

    def _declare(self, vhost: str) -> bool:
        """Declares our lock queue; False when a lock queue with other checked arguments is there."""
        body = {"durable": True, "auto_delete": False, "arguments": self._arguments()}
        what = f"take the apply lock (queue {LOCK_QUEUE!r}) in vhost {vhost!r}"
        response = self.client.request("PUT", self._path(vhost), what=what, body=body, ok=(400, 401))
        if response.status_code == 401 and vhost != GLOBAL_LOCK_VHOST:
            reason = (
                f"{_reason(response)} (the lock needs configure permission on the queue name {LOCK_QUEUE!r} in "
                "the vhost: add it to the user's configure pattern, or pass --no-lock if nothing else ever applies "
                "to this broker)"
            )
            raise BrokerError(what, 401, reason)
        if response.status_code == 401 or (response.status_code == 400 and "inequivalent" not in response.text):
            raise BrokerError(what, response.status_code, _reason(response))
        return response.status_code != 400

    def _holder(self, vhost: str) -> Holder | None:
        what = f"read the apply lock (queue {LOCK_QUEUE!r}) in vhost {vhost!r}"
        found = self.client.get_or_none(self._path(vhost), what=what, params={"disable_stats": "true"})
        return None if found is None else Holder.of(found.get("arguments") or {})

    def try_take(self, vhost: str) -> Holder | None:
        """Takes one vhost's lock without waiting: None when taken, else who holds it."""
        for _ in range(3):  # the holder may release (or its lock expire) between our requests
            holder = self._holder(vhost)
            if holder is None:
                # Only when there is none: declaring an existing queue would refresh someone else's lock.
                self._declare(vhost)
                holder = self._holder(vhost)
                if holder is None:
                    continue
            if holder.id == self.me.id:
                if vhost not in self.held:
                    self.held.append(vhost)
                return None
            return holder
        return holder or Holder("", "an apply that keeps taking and releasing it", "")

    def acquire(self, vhosts: list[str], timeout: float = 0.0, broker_wide: bool = False) -> None:
        """Takes every lock in `lock_order`, waiting up to `timeout` seconds in all; all or nothing."""
        deadline = time.monotonic() + timeout
        try:
            for vhost in lock_order(vhosts, broker_wide):
                only_broker_wide = vhost == GLOBAL_LOCK_VHOST and vhost not in vhosts
                while (holder := self._take_broker_wide() if only_broker_wide else self.try_take(vhost)) is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise LockHeld(self._held_message(vhost, holder, timeout))
                    time.sleep(min(_POLL_SECONDS, left))
        except BaseException:
            self.release()
            raise
        self._start_refreshing()

    def _take_broker_wide(self) -> Holder | None:
        """An administrator need not have permissions on "/" (or "/" may be gone): then say so, go on."""
        try:
            return self.try_take(GLOBAL_LOCK_VHOST)
        except BrokerError as exc:
            if exc.status not in (401, 404):
                raise
            self.warnings.append(
                f"no broker-wide apply lock: it lives in vhost {GLOBAL_LOCK_VHOST!r}, which "
                f"{'does not exist' if exc.status == 404 else 'this user has no permissions on'}; applies that "
                "create or delete vhosts or manage users are not kept from running at the same time"
            )
            return None

    def take_new(self, vhost: str) -> None:
        """Locks a vhost this apply just created (it had no lock to take before): no waiting."""
        holder = self.try_take(vhost)
        if holder is not None:
            raise LockHeld(self._held_message(vhost, holder, 0))

    def _held_message(self, vhost: str, holder: Holder, timeout: float) -> str:
        waited = f"waited {timeout:g} s; " if timeout else ""
        return (
            f"another apply holds the lock on vhost {vhost!r}: {holder.describe()}.\n"
            f"  ({waited}wait longer with --lock-timeout SECONDS. A holder that was killed loses its lock "
            f"{self.ttl} s after its last refresh; the lock is the queue {LOCK_QUEUE!r} in that vhost.)"
        )

    def _start_refreshing(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._refresh_loop, name="topo-lock", daemon=True)
            self._thread.start()

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            for vhost in list(self.held):
                try:
                    self._declare(vhost)
                    holder = self._holder(vhost)
                except TopoError:
                    continue  # a transient fault: the next refresh is well within the TTL
                if holder is not None and holder.id != self.me.id and vhost not in self.lost:
                    self.lost.append(vhost)

    def release(self) -> None:
        """Deletes our lock queues, only those still ours (one that expired may be someone else's now)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        for vhost in reversed(self.held):
            try:
                holder = self._holder(vhost)
                if holder is not None and holder.id == self.me.id:
                    self.client.delete(self._path(vhost), what=f"release the apply lock in vhost {vhost!r}")
            except TopoError:
                pass  # it expires by itself within the TTL
        self.held.clear()

    def __enter__(self) -> ApplyLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_scope(client: ManagementClient, desired: Desired) -> tuple[list[str], bool]:
    """The vhosts whose locks an apply of `desired` takes, and whether it needs the broker-wide one.

    Vhosts that do not exist yet have no lock to take: creating (or deleting) a vhost, and users and global
    parameters, which belong to no vhost, are covered by the broker-wide lock; a vhost the apply creates is locked right
    after its creation (see `ApplyLock.take_new`).
    """
    listing = client.get("/api/vhosts", what="list vhosts", params={"disable_stats": "true", "columns": "name"})
    existing = {item["name"] for item in listing}
    vhosts = [name for name in desired.vhosts if name in existing]
    users = any(key.kind in (Kind.USER, Kind.USER_LIMIT) for key in (*desired.objects, *desired.absent))
    new_vhosts = any(name not in existing for name in desired.vhosts)
    deleted_vhosts = any(name in existing for name in desired.absent_vhosts)
    # Global runtime parameters (cluster_name...) belong to no vhost either.
    return vhosts, users or new_vhosts or deleted_vhosts or bool(broker_wide(desired))
