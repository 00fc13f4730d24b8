"""A throwaway RabbitMQ node for the integration tests.

Each ``RabbitNode`` runs its own Erlang node (own node name, own ports, own data
and log directories) so that tests never touch, and are never disturbed by, a
system RabbitMQ service or another test run on the same machine.

Usage::

    with RabbitNode() as node:
        requests.get(node.url + "/api/overview", auth=(node.user, node.password))
        node.rabbitmqctl("list_queues", "-p", "/")

    # Extra rabbitmq.conf lines, e.g. an HTTPS management listener:
    port = free_ports(1)[0]
    RabbitNode([f"management.ssl.port = {port}", "management.ssl.certfile = /path/cert.pem", ...])

Runs as root (the Debian wrapper then runs the node as the `rabbitmq` user) or
as any user (then the scripts in /usr/lib/rabbitmq/bin are used directly).

Two broker versions: ``RabbitNode(version="4.3")`` (or ``TOPO_TEST_RABBITMQ=4.3`` for
every node of a test run) runs Debian forky's RabbitMQ 4.3 from the chroot that
scripts/setup-rabbitmq4.sh prepares; the default "3.10" is the host's Debian 12
package. A 4.3 node runs as the chroot's `rabbitmq` user in a private mount
namespace (unshare -m) that mounts /proc, binds /dev and binds the host's /tmp
(so paths under /tmp, e.g. certificates, are the same inside); those mounts
exist only inside the namespace and vanish with its last process, so an
interrupted or crashed test run cannot leave anything mounted on the host.
Each 4.3 node also has an epmd of its own on its own port, never the host's.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import requests

# Where the Debian package puts its scripts. /usr/sbin is often missing from
# PATH for non-login shells, so it is searched explicitly.
_SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")
# The Debian wrappers in /usr/sbin su to this user when called by root.
_RABBITMQ_USER = "rabbitmq"
# The real scripts behind the Debian wrappers; used directly when we are
# neither root nor the rabbitmq user (the wrappers refuse to run then).
_DEBIAN_LIB_BIN = Path("/usr/lib/rabbitmq/bin")

# rabbitmqctl itself listens for distribution on 35672-35682 by default
# (RABBITMQ_CTL_DIST_PORT_MIN/MAX), and epmd on 4369: never hand those out.
_RESERVED_PORTS = frozenset({4369, *range(35672, 35683)})

# Marks the environment of one rabbitmqctl call so it can be killed on timeout.
_CALL_TAG_VAR = "TOPO_TEST_CTL_CALL"

_SETUP_HINT = "run scripts/setup-debian.sh (as root) to install it"

# The broker versions a node can run, and the one the suite uses by default.
VERSIONS = ("3.10", "4.3")
VERSION_VAR = "TOPO_TEST_RABBITMQ"
_REPO = Path(__file__).resolve().parent.parent
# Prepared by scripts/setup-rabbitmq4.sh (gitignored); overridable for a chroot elsewhere.
_CHROOT_VAR = "TOPO_RABBITMQ4_CHROOT"
_CHROOT_BIN = "/usr/lib/rabbitmq/bin"
# Mounts what the node needs inside the chroot, in the private mount namespace
# `unshare -m` gives this shell, then becomes the chrooted command.
_CHROOT_SHELL = """set -e
root=$1; user=$2; shift 2
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount --bind /tmp "$root/tmp"
exec chroot --userspec="$user" "$root" "$@"
"""


def selected_version() -> str:
    """The broker version this test run uses (``TOPO_TEST_RABBITMQ``, default 3.10)."""
    version = os.environ.get(VERSION_VAR, "").strip() or VERSIONS[0]
    if version not in VERSIONS:
        raise RabbitNodeError(f"{VERSION_VAR}={version!r}: expected one of {', '.join(VERSIONS)}")
    return version


def chroot_dir() -> Path:
    return Path(os.environ.get(_CHROOT_VAR) or _REPO / ".rabbitmq4" / "root")


def _chroot_user(root: Path) -> tuple[int, int]:
    """uid and gid of the chroot's own `rabbitmq` user (not the host's, which may differ)."""
    try:
        for line in (root / "etc" / "passwd").read_text().splitlines():
            fields = line.split(":")
            if fields[0] == _RABBITMQ_USER:
                return int(fields[2]), int(fields[3])
    except OSError:
        pass
    raise RabbitNodeError(f"no {_RABBITMQ_USER} user in {root}; run scripts/setup-rabbitmq4.sh")


_instance_counter = itertools.count(1)
# What every test node enables; `RabbitNode(plugins=...)` starts one with others (e.g. without the shovel).
DEFAULT_PLUGINS = ("rabbitmq_management", "rabbitmq_mqtt", "rabbitmq_shovel", "rabbitmq_federation")


class RabbitNodeError(RuntimeError):
    """The test node could not be started or controlled."""


@dataclass(frozen=True)
class Broker:
    """What a test needs to talk to the broker (see the ``broker`` fixture)."""

    url: str  # management API base URL, no trailing slash
    user: str
    password: str
    node: RabbitNode | None  # None when TOPO_TEST_URL points at an external broker

    @property
    def auth(self) -> tuple[str, str]:
        return (self.user, self.password)


def _find_program(name: str) -> str | None:
    """Locate a RabbitMQ script, preferring what works for the current user."""
    euid = os.geteuid()
    if euid != 0 and not _is_rabbitmq_user(euid):
        # The Debian wrapper would refuse ("Only root or rabbitmq should run");
        # the underlying script runs the node as the current user instead.
        direct = _DEBIAN_LIB_BIN / name
        if direct.is_file():
            return str(direct)
    search_path = os.pathsep.join([os.environ.get("PATH", ""), *_SBIN_DIRS])
    return shutil.which(name, path=search_path)


def _is_rabbitmq_user(uid: int) -> bool:
    try:
        return pwd.getpwnam(_RABBITMQ_USER).pw_uid == uid
    except KeyError:
        return False


def free_ports(count: int) -> list[int]:
    """Ask the kernel for ``count`` distinct free TCP ports.

    All sockets are held open until every port is chosen so the kernel cannot
    hand out the same port twice. There is an unavoidable window between
    closing them and the node binding; on a test machine it is negligible.
    """
    sockets: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
            if port not in _RESERVED_PORTS and port not in ports:
                ports.append(port)
    finally:
        for sock in sockets:
            sock.close()
    return ports


def _excerpt(path: Path, lines: int = 30) -> str:
    """The first error lines and the tail of a log file.

    Boot errors name their cause first ("You've tried to set X...") and then
    bury it under long crash reports, so the tail alone is not enough.
    """
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    tail = text[-lines:]
    head = [line for line in text[: len(text) - len(tail)] if "[error]" in line][:lines]
    return "\n".join([*head, "[...]", *tail] if head else tail)


def _pid_alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (exited, not yet reaped) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state letter follows the parenthesised command name, which may itself
    # contain spaces or parentheses.
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _pids_with_env(entry: bytes, *, include_epmd: bool = False) -> list[int]:
    """Live processes whose environment contains ``entry`` (``b"KEY=VALUE"``).

    The node's VM does not carry its node name on the command line (it comes
    from RABBITMQ_NODENAME), so the environment is what identifies it.
    ``include_epmd`` for a node with an epmd of its own (4.3 nodes).
    """
    found: list[int] = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            # epmd is started by whichever node comes up first and inherits
            # that node's environment, but it serves every node on the host.
            if not include_epmd and (proc / "comm").read_text().strip() == "epmd":
                continue
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if entry in environ.split(b"\0"):
            found.append(int(proc.name))
    return found


def _kill_pids(pids: Iterable[int], *, graceful: bool) -> None:
    """SIGTERM (when ``graceful``), wait up to 10 s, then SIGKILL survivors."""
    pids = [p for p in pids if _pid_alive(p)]
    if graceful:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_pid_alive(p) for p in pids):
            time.sleep(0.2)
    for pid in pids:
        if _pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


class RabbitNode:
    """A RabbitMQ node with its own name, ports and data directory.

    ``extra_config`` lines are appended verbatim to the node's
    ``rabbitmq.conf`` (new-style sysctl format), e.g. to add an HTTPS
    management listener. Certificates it references must be readable by the
    ``rabbitmq`` user when running as root.
    """

    user = "guest"
    password = "guest"

    def __init__(
        self,
        extra_config: Iterable[str] = (),
        *,
        version: str | None = None,
        start_timeout: float = 60.0,
        stop_timeout: float = 60.0,
        plugins: Iterable[str] = DEFAULT_PLUGINS,
    ) -> None:
        self.version = version or selected_version()
        if self.version not in VERSIONS:
            raise RabbitNodeError(f"RabbitMQ {self.version!r}: expected one of {', '.join(VERSIONS)}")
        self.chrooted = self.version != "3.10"
        self.extra_config = list(extra_config)
        self.plugins = tuple(plugins)
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        n = next(_instance_counter)
        suffix = "" if n == 1 else f"-{n}"
        # Short name on localhost: needs no DNS and is unique per test process.
        self.nodename = f"topo-test-{os.getpid()}{suffix}@localhost"
        self.amqp_port, self.dist_port, self.mgmt_port, self.mqtt_port, self.epmd_port = free_ports(5)
        self.base_dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self.start_seconds: float | None = None
        self.stop_seconds: float | None = None

    # -- public properties -------------------------------------------------

    @property
    def url(self) -> str:
        """Management API base URL (no trailing slash)."""
        return f"http://127.0.0.1:{self.mgmt_port}"

    @property
    def log_file(self) -> Path:
        return self._dir / "log" / f"{self.nodename}.log"

    @property
    def _dir(self) -> Path:
        if self.base_dir is None:
            raise RabbitNodeError("node directory not created yet; call start() first")
        return self.base_dir

    # -- lifecycle ---------------------------------------------------------

    def __enter__(self) -> RabbitNode:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start the node and wait until it has fully booted (see ``start_timeout``)."""
        if self.base_dir is not None:
            raise RabbitNodeError(f"{self.nodename} was already started; use a new RabbitNode")
        server = self._program("rabbitmq-server")
        self._prepare_dir()
        began = time.monotonic()
        # Run the node in the foreground as our child rather than with
        # `-detached`: a boot failure is then seen at once (the child exits)
        # and its console output, which holds errors raised before logging is
        # set up (e.g. a bad config line), lands in startup.out. A new session
        # keeps a terminal's Ctrl-C away from the node; stop() shuts it down.
        with (self._dir / "startup.out").open("wb") as out:
            self._proc = subprocess.Popen(
                self._command(server),
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_ready(began)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began

    def stop(self) -> None:
        """Stop the node and delete its directory.

        Best effort: never raises, so it is safe in fixture teardown and after
        a failed start. The data is thrown away anyway, so when the polite
        `rabbitmqctl stop` fails the node's processes are simply killed.
        """
        if self.base_dir is None:
            return
        began = time.monotonic()
        if self._proc is not None:
            pid_file = self._dir / "rabbit.pid"
            pid = self._read_pid(pid_file)
            # `rabbitmqctl stop PIDFILE` also waits for that pid to exit, but it
            # hangs when the node is not up; so only ask a live node.
            if self._proc.poll() is None and pid is not None and _pid_alive(pid):
                # A timeout is fine: the processes are killed below.
                with contextlib.suppress(RabbitNodeError):
                    self.rabbitmqctl("stop", str(pid_file), check=False, timeout=self.stop_timeout)
            # Even after a clean stop, make sure nothing of this node lingers
            # (a stray VM would keep its ports and files busy).
            _kill_pids(self._node_pids(), graceful=True)
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        self.stop_seconds = time.monotonic() - began
        shutil.rmtree(self.base_dir, ignore_errors=True)
        self.base_dir = None

    def restart(self, pause: float = 0.0, *, sigterm: bool = False) -> float:
        """Stop the node (its data kept) and start it again, as an operator's restart does; returns the
        seconds from the stop until it has fully booted again. `sigterm`: stop it with SIGTERM (a graceful
        stop too, as systemd or Kubernetes do it) instead of `rabbitmqctl stop`, whose CLI takes a second or
        two to start: the stop then begins at once."""
        if self._proc is None or self.base_dir is None:
            raise RabbitNodeError(f"{self.nodename} is not running")
        began = time.monotonic()
        pid_file = self._dir / "rabbit.pid"
        pid = self._read_pid(pid_file) if sigterm else None
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
        else:
            self.rabbitmqctl("stop", str(pid_file), timeout=self.stop_timeout)
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._fail("the node did not exit after rabbitmqctl stop")
        time.sleep(pause)
        with (self._dir / "startup.out").open("ab") as out:
            self._proc = subprocess.Popen(
                self._command(self._program("rabbitmq-server")),
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_ready(time.monotonic())
        return time.monotonic() - began

    def rabbitmqctl(self, *args: str, check: bool = True, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run ``rabbitmqctl -n NODENAME ARGS`` against this node."""
        ctl = self._program("rabbitmqctl")
        # The Debian wrapper runs the CLI under `su`, in a process group of its
        # own, so killing our direct child on timeout would orphan the CLI's
        # Erlang VM. Tag the call's environment to find all of it again.
        call_id = uuid.uuid4().hex
        env = {**self._env(), _CALL_TAG_VAR: call_id}
        try:
            result = subprocess.run(
                self._command(ctl, "-n", self.nodename, *args, env=env),
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            _kill_pids(_pids_with_env(f"{_CALL_TAG_VAR}={call_id}".encode(), include_epmd=True), graceful=False)
            raise RabbitNodeError(f"rabbitmqctl {' '.join(args)} timed out after {timeout:.0f}s") from exc
        if check and result.returncode != 0:
            raise RabbitNodeError(
                f"rabbitmqctl {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
            )
        return result

    # -- internals ---------------------------------------------------------

    def _program(self, name: str) -> str:
        if not self.chrooted:
            found = _find_program(name)
            if found is None:
                raise RuntimeError(f"{name} is not installed; {_SETUP_HINT}")
            return found
        root = chroot_dir()
        if not (root / _CHROOT_BIN.lstrip("/") / name).is_file():
            raise RuntimeError(
                f"RabbitMQ {self.version} is not prepared in {root}; run scripts/setup-rabbitmq4.sh (as root)"
            )
        if os.geteuid() != 0:
            raise RuntimeError(f"a RabbitMQ {self.version} test node runs in a chroot and needs root")
        return f"{_CHROOT_BIN}/{name}"

    def _command(self, program: str, *args: str, env: dict[str, str] | None = None) -> list[str]:
        """The command line that runs ``program`` for this node (inside the chroot for 4.3)."""
        if not self.chrooted:
            return [program, *args]
        root = chroot_dir()
        uid, gid = _chroot_user(root)
        # Inside, only the node's own environment: nothing of the host's leaks in.
        inner = [f"{key}={value}" for key, value in (env or self._env()).items()]
        return [
            "unshare", "--mount", "--propagation", "private", "--",
            "/bin/sh", "-c", _CHROOT_SHELL, "topo-rabbitmq4", str(root), f"{uid}:{gid}",
            "/usr/bin/env", "-i", *inner, program, *args,
        ]  # fmt: skip

    def _prepare_dir(self) -> None:
        # Under /tmp rather than a per-user TMPDIR: when root runs the Debian
        # wrapper the node runs as `rabbitmq`, which must be able to reach it.
        base = Path(tempfile.mkdtemp(prefix="topo-node-", dir="/tmp"))
        self.base_dir = base
        for sub in ("mnesia", "log"):
            (base / sub).mkdir()
        (base / "rabbit-env.conf").write_text("")  # keeps /etc/rabbitmq/rabbitmq-env.conf out
        (base / "enabled_plugins").write_text(f"[{','.join(self.plugins)}].\n")
        conf = [
            f"listeners.tcp.default = {self.amqp_port}",
            "management.tcp.ip = 127.0.0.1",
            f"management.tcp.port = {self.mgmt_port}",
            f"mqtt.listeners.tcp.default = {self.mqtt_port}",
            # guest may only log in from localhost by default; tests may reach
            # the node through another address, so lift that restriction.
            "loopback_users = none",
            *self.extra_config,
        ]
        (base / "rabbitmq.conf").write_text("\n".join(conf) + "\n")
        owner: tuple[int, int] | None = None
        if self.chrooted:
            owner = _chroot_user(chroot_dir())
        elif os.geteuid() == 0:
            # The Debian wrapper drops root to `rabbitmq`; hand it the tree.
            with contextlib.suppress(KeyError):
                pw = pwd.getpwnam(_RABBITMQ_USER)
                owner = (pw.pw_uid, pw.pw_gid)
        if owner is not None:
            for path in [base, *base.rglob("*")]:
                os.chown(path, *owner)
        base.chmod(0o755)

    def _env(self) -> dict[str, str]:
        base = self._dir
        if self.chrooted:
            # A clean environment inside the chroot; HOME holds the Erlang cookie
            # that the node and its rabbitmqctl calls share.
            return {
                "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                "HOME": str(base),
                "LANG": "C.UTF-8",
                "LC_ALL": "C.UTF-8",
                **self._node_env(base),
                # Its own epmd: never the host's on 4369, nor another node's.
                "ERL_EPMD_PORT": str(self.epmd_port),
            }
        env = dict(os.environ)
        # Inherited RABBITMQ_* settings (e.g. from a developer's shell) would
        # point this node at someone else's files; start from a clean slate.
        for key in list(env):
            if key.startswith("RABBITMQ_"):
                del env[key]
        env.update(self._node_env(base))
        return env

    def _node_env(self, base: Path) -> dict[str, str]:
        return dict(
            RABBITMQ_NODENAME=self.nodename,
            RABBITMQ_NODE_PORT=str(self.amqp_port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(base / "mnesia"),
            RABBITMQ_LOG_BASE=str(base / "log"),
            RABBITMQ_PID_FILE=str(base / "rabbit.pid"),
            RABBITMQ_CONFIG_FILE=str(base / "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(base / "advanced.config"),  # absent on purpose
            RABBITMQ_ENABLED_PLUGINS_FILE=str(base / "enabled_plugins"),
            RABBITMQ_CONF_ENV_FILE=str(base / "rabbit-env.conf"),
            # A crash dump would otherwise land in the wrapper's cwd (/var/lib/rabbitmq).
            ERL_CRASH_DUMP=str(base / "erl_crash.dump"),
        )

    def _wait_ready(self, began: float) -> None:
        """Block until the node has fully booted, or fail with its log."""
        deadline = began + self.start_timeout
        # The management API answers a few seconds before boot completes (the
        # MQTT plugin's Raft setup and the AMQP listener come later), and
        # `rabbitmqctl` commands fail until then; so wait for all three.
        api_ready = amqp_ready = False
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if not api_ready:
                try:
                    resp = requests.get(f"{self.url}/api/overview", auth=(self.user, self.password), timeout=5)
                    api_ready = resp.status_code == 200
                    last_error = f"GET /api/overview: HTTP {resp.status_code} {resp.text[:200]}"
                except requests.RequestException as exc:
                    last_error = f"GET /api/overview: {exc}"
            if api_ready and not amqp_ready:
                try:
                    socket.create_connection(("127.0.0.1", self.amqp_port), timeout=2).close()
                    amqp_ready = True
                except OSError as exc:
                    last_error = f"AMQP port {self.amqp_port}: {exc}"
            if amqp_ready:
                remaining = max(1, int(deadline - time.monotonic()))
                result = self.rabbitmqctl(
                    "await_startup", "--timeout", str(remaining), check=False, timeout=remaining + 15
                )
                if result.returncode == 0:
                    return
                self._fail(f"rabbitmqctl await_startup failed:\n{result.stdout}{result.stderr}")
            # Fail fast when the node has already died instead of waiting it out.
            if self._proc is not None and self._proc.poll() is not None:
                self._fail(f"rabbitmq-server exited during boot (exit code {self._proc.returncode})")
            time.sleep(0.3)
        self._fail(f"not ready after {self.start_timeout:.0f}s ({last_error})")

    def _fail(self, why: str) -> None:
        parts = [f"RabbitMQ test node {self.nodename} failed to start: {why}"]
        if self.base_dir is not None:
            for path in (self._dir / "startup.out", self.log_file):
                excerpt = _excerpt(path)
                if excerpt:
                    parts.append(f"--- {path} (excerpt) ---\n{excerpt}")
        raise RabbitNodeError("\n".join(parts))

    @staticmethod
    def _read_pid(pid_file: Path) -> int | None:
        try:
            return int(pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def _node_pids(self) -> list[int]:
        """PIDs of this node's VM, its helpers and any CLI call aimed at it."""
        pids = set(_pids_with_env(f"RABBITMQ_NODENAME={self.nodename}".encode(), include_epmd=self.chrooted))
        pid = self._read_pid(self._dir / "rabbit.pid")
        if pid is not None and _pid_alive(pid):
            pids.add(pid)
        return sorted(pids)
