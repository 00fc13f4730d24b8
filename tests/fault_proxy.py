"""An HTTP proxy in front of the real test broker that injects the faults real networks and brokers
produce: connections dropped before or after the broker acted, resets mid-body, truncated bodies,
5xx answers, delays and stalls longer than the client's timeout.

Loopback only and bounded: every socket has a timeout, threads are daemons, and `close()` stops it.
Each request is forwarded on a connection of its own (so a fault never leaks into the next request);
the answer goes back with a Content-Length on the client's keep-alive connection.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import struct
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

FAULTS = (
    "drop",  # close the connection without forwarding: the broker never saw the request
    "drop_after",  # forward, then close without answering: the broker acted, the answer is lost
    "reset",  # forward, then reset the connection (RST) before any byte of the answer
    "reset_mid_body",  # forward, send the headers and half the body, then reset
    "truncate",  # forward, send the headers and half the body, then close (Content-Length unmet)
    "bad_json",  # forward, answer 200 with the body cut short but a matching Content-Length
    "http_500",  # answer 500 without forwarding
    "http_502",
    "http_503",
    "delay",  # forward after a pause shorter than the client's timeout
    "stall",  # forward after a pause longer than the client's timeout
)
SOCKET_TIMEOUT = 60.0


@dataclass
class Request:
    method: str
    path: str
    head: bytes  # request line and headers, with Connection: close for the broker
    body: bytes


# Decides the fault for a request (None: pass it through), given the request and how many times in a
# row the same request has been faulted already.
Policy = Callable[[Request, int], str | None]


def cycling_policy(every: int = 2, faults: tuple[str, ...] = FAULTS, max_in_a_row: int = 2,
                   limits: dict[str, int] | None = None) -> Policy:  # fmt: skip
    """Faults every `every`-th request, cycling through `faults` (each fault type is injected), never
    one request more than `max_in_a_row` times running, each fault at most `limits[fault]` times."""
    count = 0
    used: Counter[str] = Counter()
    order = list(faults)
    lock = threading.Lock()

    def policy(request: Request, in_a_row: int) -> str | None:
        nonlocal count
        with lock:
            count += 1
            if in_a_row >= max_in_a_row or count % every:
                return None
            for _ in range(len(order)):
                fault = order.pop(0)
                order.append(fault)
                if limits is None or used[fault] < limits.get(fault, 10**9):
                    used[fault] += 1
                    return fault
            return None

    return policy


class FaultProxy:
    def __init__(self, target_host: str, target_port: int, policy: Policy | None = None, *, delay: float = 0.3,
                 stall: float = 6.0, pace: float = 0.0):  # fmt: skip
        self.target = (target_host, target_port)
        self.policy: Policy = policy or (lambda request, in_a_row: None)
        self.delay, self.stall, self.pace = delay, stall, pace
        self.injected: Counter[str] = Counter()
        self.requests = 0
        self._in_a_row: Counter[tuple[str, str, bytes]] = Counter()
        self._lock = threading.Lock()
        self._pacing = threading.Lock()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._closed = False
        self.starting_until = 0.0  # until then, answer 404 to everything, as the management API does while it starts
        # Called with each request the broker has answered, before the answer goes back (a test's kill point).
        self.forwarded: Callable[[Request], None] | None = None
        self.forwarding: Callable[[Request], None] | None = None  # called before a request goes to the broker
        self.active = 0  # requests being served: the broker may still act on them
        threading.Thread(target=self._serve, daemon=True, name="fault-proxy").start()

    def close(self) -> None:
        self._closed = True
        self.server.close()

    def _serve(self) -> None:
        while not self._closed:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            client.settimeout(SOCKET_TIMEOUT)
            threading.Thread(target=self._connection, args=(client,), daemon=True).start()

    def _connection(self, client: socket.socket) -> None:
        buffer = b""
        try:
            while not self._closed:
                request, buffer = _read_request(client, buffer)
                if request is None:
                    return
                if not self._handle(client, request):
                    return
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                client.close()

    def _handle(self, client: socket.socket, request: Request) -> bool:
        """Serves one request; False when the connection is to be closed."""
        with self._lock:
            self.active += 1
        try:
            return self._serve_one(client, request)
        finally:
            with self._lock:
                self.active -= 1

    def idle(self, timeout: float = 60.0) -> None:
        """Waits until no request is being served (what was forwarded has been answered)."""
        deadline = time.monotonic() + timeout
        while self.active and time.monotonic() < deadline:
            time.sleep(0.02)

    def _serve_one(self, client: socket.socket, request: Request) -> bool:
        key = (request.method, request.path, request.body)
        with self._lock:
            self.requests += 1
            fault = self.policy(request, self._in_a_row[key])
            if fault is None:
                self._in_a_row.pop(key, None)
            else:
                self._in_a_row[key] += 1
                self.injected[fault] += 1
        if self.pace:
            with self._pacing:  # one request at a time, however many the client sends at once
                time.sleep(self.pace)
        if time.monotonic() < self.starting_until:
            with self._lock:
                self.injected["starting_404"] += 1
            body = b'{"error":"Object Not Found","reason":"Not Found"}'
            client.sendall(_response(404, b"content-type: application/json\r\n", body))
            return True
        if fault == "drop":
            return False
        if fault in ("http_500", "http_502", "http_503"):
            status = int(fault[-3:])
            body = b'{"error":"injected","reason":"injected by the test\'s fault proxy"}'
            client.sendall(_response(status, b"content-type: application/json\r\n", body))
            return True
        if fault == "delay":
            time.sleep(self.delay)
        elif fault == "stall":
            time.sleep(self.stall)
        if self.forwarding is not None:
            self.forwarding(request)
        try:
            status_line, headers, body = _forward(self.target, request)
        except OSError as exc:  # the broker is down: what a reverse proxy answers then
            body = f'{{"error":"bad gateway","reason":"{type(exc).__name__}"}}'.encode()
            client.sendall(_response(502, b"content-type: application/json\r\n", body))
            return True
        if self.forwarded is not None:
            self.forwarded(request)
        if fault == "drop_after":
            return False
        if fault == "reset":
            _reset(client)
            return False
        if fault in ("truncate", "reset_mid_body"):
            client.sendall(
                status_line + headers + f"content-length: {len(body)}\r\n\r\n".encode() + body[: len(body) // 2]
            )
            if fault == "reset_mid_body":
                _reset(client)
            return False
        if fault == "bad_json" and body:
            body = body[: len(body) // 2]
        client.sendall(status_line + headers + f"content-length: {len(body)}\r\n\r\n".encode() + body)
        return True


def _reset(sock: socket.socket) -> None:
    # SO_LINGER with a zero timeout: close() sends RST instead of FIN.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _response(status: int, headers: bytes, body: bytes) -> bytes:
    return f"HTTP/1.1 {status} Injected\r\n".encode() + headers + f"content-length: {len(body)}\r\n\r\n".encode() + body


def _read_request(sock: socket.socket, buffer: bytes) -> tuple[Request | None, bytes]:
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            return None, b""
        buffer += chunk
        if len(buffer) > 1 << 20:
            return None, b""
    head, _, rest = buffer.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    method, path, _ = lines[0].decode("latin-1").split(" ", 2)
    length = 0
    kept = [lines[0]]
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        lowered = name.strip().lower()
        if lowered == b"content-length":
            length = int(value.strip())
        if lowered not in (b"connection", b"keep-alive"):
            kept.append(line)
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            return None, b""
        rest += chunk
    body, remaining = rest[:length], rest[length:]
    kept.append(b"connection: close")
    return Request(method, path, b"\r\n".join(kept) + b"\r\n\r\n", body), remaining


def _forward(target: tuple[str, int], request: Request) -> tuple[bytes, bytes, bytes]:
    """The broker's answer: status line, headers without framing ones, and the whole body."""
    with socket.create_connection(target, timeout=SOCKET_TIMEOUT) as upstream:
        upstream.sendall(request.head + request.body)
        data = b""
        while chunk := upstream.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = b""
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        lowered = name.strip().lower()
        if lowered == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        if lowered not in (b"content-length", b"transfer-encoding", b"connection"):
            headers += line + b"\r\n"
    if chunked:
        body = _dechunk(body)
    return lines[0] + b"\r\n", headers, body


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2 :]
    return out


def is_write(request: Request) -> bool:
    return request.method != "GET"


class KillAtWrite:
    """Proxy hooks that SIGKILL the process under test on its `point`-th write request: before forwarding
    it (the broker never sees it), or `after` the broker answered it (the answer is lost). Point 0 never
    kills: it counts the writes of a whole run (`seen`, and `writes`: the method and path of each)."""

    def __init__(self, point: int, after: bool) -> None:
        self.point, self.after = point, after
        self.seen = 0
        self.target: Request | None = None
        self.process: subprocess.Popen[Any] | None = None
        self.writes: list[str] = []

    def _kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=60)

    def policy(self, request: Request, in_a_row: int) -> str | None:
        if not is_write(request):
            return None
        self.seen += 1  # the proxy calls its policy under its lock: one at a time
        self.writes.append(f"{request.method} {request.path}")
        if self.point and self.seen == self.point:
            self.target = request
            if not self.after:
                self._kill()
                return "drop"
        return None

    def forwarded(self, request: Request) -> None:
        if self.after and request is self.target:
            self._kill()
