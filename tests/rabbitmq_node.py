"""A throwaway RabbitMQ node for the integration tests.

Each ``RabbitNode`` runs its own Erlang node (own node name, own ports, own data
and log directories) so that tests never touch, and are never disturbed by, a
system RabbitMQ service or another test run on the same machine.

Usage::

    with RabbitNode() as node:
        requests.get(node.url + "/api/overview", auth=("guest", "guest"))
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
from collections.abc import Iterable
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

_SETUP_HINT = "run scripts/setup-debian.sh (as root) to install it"

_instance_counter = itertools.count(1)


class RabbitNodeError(RuntimeError):
    """The test node could not be started or controlled."""


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


def _free_ports(count: int) -> list[int]:
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


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
        start_timeout: float = 60.0,
        stop_timeout: float = 60.0,
    ) -> None:
        self.extra_config = list(extra_config)
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        n = next(_instance_counter)
        suffix = "" if n == 1 else f"-{n}"
        # Short name on localhost: needs no DNS and is unique per test process.
        self.nodename = f"topo-test-{os.getpid()}{suffix}@localhost"
        self.amqp_port, self.dist_port, self.mgmt_port, self.mqtt_port = _free_ports(4)
        self.base_dir: Path | None = None
        self.started = False
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
        server = _find_program("rabbitmq-server")
        if server is None or _find_program("rabbitmqctl") is None:
            raise RuntimeError(f"rabbitmq-server is not installed; {_SETUP_HINT}")
        self._prepare_dir()
        began = time.monotonic()
        startup_out = self._dir / "startup.out"
        with startup_out.open("wb") as out:
            # -detached makes the script return once the VM is spawned; readiness
            # is established by polling the management API below.
            proc = subprocess.run(
                [server, "-detached"],
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=self.start_timeout,
                check=False,
            )
        if proc.returncode != 0:
            self._fail(f"`rabbitmq-server -detached` exited with {proc.returncode}")
        self.started = True
        try:
            self._wait_ready(began)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began

    def stop(self) -> None:
        """Stop the node (best effort, never raises) and delete its directory."""
        if self.base_dir is None:
            return
        began = time.monotonic()
        if self.started:
            pid_file = self._dir / "rabbit.pid"
            try:
                # With a pid file, `stop` also waits for the VM to exit.
                result = self.rabbitmqctl("stop", str(pid_file), check=False, timeout=self.stop_timeout)
                stopped = result.returncode == 0
            except subprocess.TimeoutExpired:
                stopped = False
            # Even after a clean stop, make sure nothing of this node lingers
            # (a stray beam would keep its ports and the data dir busy).
            self._kill_leftovers(graceful=not stopped)
            self.started = False
        self.stop_seconds = time.monotonic() - began
        print("KEEP", self.base_dir)
        self.base_dir = None

    def rabbitmqctl(
        self, *args: str, check: bool = True, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run ``rabbitmqctl -n NODENAME ARGS`` against this node."""
        ctl = _find_program("rabbitmqctl")
        if ctl is None:
            raise RuntimeError(f"rabbitmqctl is not installed; {_SETUP_HINT}")
        result = subprocess.run(
            [ctl, "-n", self.nodename, *args],
            env=self._env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise RabbitNodeError(
                f"rabbitmqctl {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result

    # -- internals ---------------------------------------------------------

    def _prepare_dir(self) -> None:
        # Under /tmp rather than a per-user TMPDIR: when root runs the Debian
        # wrapper the node runs as `rabbitmq`, which must be able to reach it.
        base = Path(tempfile.mkdtemp(prefix="topo-node-", dir="/tmp"))
        self.base_dir = base
        for sub in ("mnesia", "log"):
            (base / sub).mkdir()
        (base / "rabbit-env.conf").write_text("")  # keeps /etc/rabbitmq/rabbitmq-env.conf out
        (base / "enabled_plugins").write_text("[rabbitmq_management,rabbitmq_mqtt].\n")
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
        if os.geteuid() == 0:
            # The Debian wrapper drops root to `rabbitmq`; hand it the tree.
            try:
                pw = pwd.getpwnam(_RABBITMQ_USER)
            except KeyError:
                pw = None
            if pw is not None:
                for path in [base, *base.rglob("*")]:
                    os.chown(path, pw.pw_uid, pw.pw_gid)
        base.chmod(0o755)

    def _env(self) -> dict[str, str]:
        base = self._dir
        env = dict(os.environ)
        # Inherited RABBITMQ_* settings (e.g. from a developer's shell) would
        # point this node at someone else's files; start from a clean slate.
        for key in list(env):
            if key.startswith("RABBITMQ_"):
                del env[key]
        env.update(
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
        return env

    def _wait_ready(self, began: float) -> None:
        deadline = began + self.start_timeout
        pid_file = self._dir / "rabbit.pid"
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            try:
                resp = requests.get(
                    f"{self.url}/api/overview", auth=(self.user, self.password), timeout=5
                )
                if resp.status_code == 200:
                    return
                last_error = f"HTTP {resp.status_code}: {resp.text[:200]}"
            except requests.RequestException as exc:
                last_error = str(exc)
            # Fail fast when the VM has already died instead of waiting it out.
            pid = self._read_pid(pid_file)
            if pid is not None and not _pid_alive(pid):
                self._fail(f"node process {pid} exited during boot")
            time.sleep(0.5)
        self._fail(f"management API not ready after {self.start_timeout:.0f}s ({last_error})")

    def _fail(self, why: str) -> None:
        parts = [f"RabbitMQ test node {self.nodename} failed to start: {why}"]
        if self.base_dir is not None:
            for path in (self._dir / "startup.out", self.log_file):
                tail = _tail(path)
                if tail:
                    parts.append(f"--- tail of {path} ---\n{tail}")
        raise RabbitNodeError("\n".join(parts))

    @staticmethod
    def _read_pid(pid_file: Path) -> int | None:
        try:
            return int(pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def _node_pids(self) -> list[int]:
        """PIDs whose command line names this node (beam and its helpers)."""
        pids: set[int] = set()
        pid = self._read_pid(self._dir / "rabbit.pid")
        if pid is not None:
            pids.add(pid)
        # The node name embeds our pid, so this matches only our own node.
        needle = self.nodename.split("@")[0].encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if needle in cmdline.split(b"\0") or any(
                arg.startswith(needle + b"@") for arg in cmdline.split(b"\0")
            ):
                pids.add(int(entry.name))
        pids.discard(os.getpid())
        return sorted(p for p in pids if _pid_alive(p))

    def _kill_leftovers(self, *, graceful: bool) -> None:
        pids = self._node_pids()
        if not pids:
            return
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

