"""The definitions request: the longest wait of every plan, so it can be sent before topo is imported.

At 21,000 objects the broker needs about a second to answer GET /api/definitions/{vhost}, while topo
needs 0.3 s to import its models and kinds and more to parse the files. Sent from here (which imports
only the HTTP client), the request leaves first, and the broker's work overlaps all of that.
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from topo.apipath import api_path
from topo.errors import BrokerError

if TYPE_CHECKING:  # the first request leaves before requests and the client are imported
    import ssl

    from topo.client import ManagementClient
    from topo.connection import Connection


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A per-vhost definitions read the client gave up on (after its retries): `reason` says why."""

    reason: str
    status_code: int = 200


if TYPE_CHECKING:
    from typing import TypeAlias

    import requests

    # What a definitions read answers: the broker's response, what the client gave up on, or nothing to read.
    Answer: TypeAlias = requests.Response | Unreadable | None


def request_for(vhosts: list[str] | None) -> tuple[str, str, str | None]:
    """(path, what, single): one vhost's definitions when only one is wanted, else the broker's."""
    if vhosts is not None and len(vhosts) == 1:
        return api_path("definitions", vhosts[0]), f"read definitions of vhost {vhosts[0]!r}", vhosts[0]
    return "/api/definitions", "read definitions", None


# The error answers read_broker handles itself: a vhost not there (yet), a user who may not read definitions.
HANDLED_STATUSES = (400, 401, 404)


def read_definitions(client: ManagementClient, vhosts: list[str] | None) -> Answer:
    """The definitions of `vhosts` (None: every vhost); a vhost that does not exist yet answers 400
    vhost_not_found (or 404), left to the caller."""
    if vhosts == []:
        return None
    path, what, single = request_for(vhosts)
    try:
        return client.request("GET", path, what=what, ok=HANDLED_STATUSES)
    except BrokerError as exc:
        # RabbitMQ 4.x: HTTP 500, or a truncated body, for a vhost name with non-ASCII characters.
        if single is None or not (exc.status == 500 or "cut short" in exc.reason):
            raise
        return Unreadable(f"HTTP {exc.status}: {exc.reason}" if exc.status else exc.reason)


class EarlyDefinitions:
    """The definitions request of `vhosts`, under way on its own thread from construction.

    It goes out over the standard library's HTTP client: requests takes 0.25 s to import, a quarter of
    the broker's time to answer at 21,000 objects. A complete answer the ManagementClient would hand back
    as it is (200, and the 400 and 401 that read_broker handles: a vhost not there yet, a user who may
    not read definitions) is kept; anything else (another status, a 404 that may be a management API
    still starting, a redirect, a proxy to go through, a TLS or network fault) is left to the
    ManagementClient, which sends the request again with its retries and its error messages.
    """

    def __init__(self, connection: Connection, vhosts: list[str] | None) -> None:
        self.connection = connection
        self.vhosts = vhosts
        self._path = request_for(vhosts)[0]
        self._answer: _Kept | None = None
        self._thread: threading.Thread | None = None
        if vhosts != [] and not any(os.environ.get(name) for name in _PROXY_VARIABLES):
            # A daemon thread: a file with errors must not keep the process waiting for a slow broker.
            self._thread = threading.Thread(target=self._send, name="topo-definitions", daemon=True)
            self._thread.start()

    def _send(self) -> None:
        with contextlib.suppress(Exception):  # any failure: the ManagementClient asks again, and reports
            self._answer = _get(self.connection, self._path)

    def answer(self, client: ManagementClient) -> Answer:
        if self._thread is not None:
            self._thread.join()
        if self._answer is None:
            return read_definitions(client, self.vhosts)
        import requests

        response = requests.Response()
        response.status_code, response.reason, response._content = self._answer
        response.encoding = "utf-8"
        response.url = self.connection.url + self._path
        return response

    @property
    def kept(self) -> int | None:
        """The status of the early answer that was kept; None when the ManagementClient asks (again)."""
        return None if self._answer is None else self._answer[0]


# requests sends through these; the standard library's client does not know them.
_PROXY_VARIABLES = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


# What the ManagementClient hands back as it is for a definitions read. Not 404: the client first asks
# whether the whole API answers 404 (a node still starting), and then waits.
_KEPT_STATUSES = frozenset({200, *HANDLED_STATUSES} - {404})
_Kept = tuple[int, str, bytes]  # status, reason, body


def _get(connection: Connection, path: str) -> _Kept | None:
    """Status, reason and body (complete, decompressed) of the answer to GET `path`; None for an answer the
    ManagementClient would not hand back as it is."""
    import base64
    import http.client
    import zlib
    from urllib.parse import urlsplit

    parts = urlsplit(connection.url)
    credentials = f"{connection.user}:{connection.password}".encode()
    headers = {
        "Authorization": "Basic " + base64.b64encode(credentials).decode("ascii"),
        "Accept-Encoding": "gzip",  # as requests asks: the broker's gzip is faster than sending 25x the bytes
        "User-Agent": "topo",
    }
    http_connection: http.client.HTTPConnection
    if parts.scheme == "https":
        http_connection = http.client.HTTPSConnection(
            parts.hostname or "", parts.port, timeout=connection.timeout, context=_tls_context(connection)
        )
    else:
        http_connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=connection.timeout)
    try:
        http_connection.request("GET", parts.path.rstrip("/") + path, headers=headers)
        answer = http_connection.getresponse()
        body = answer.read()  # raises IncompleteRead for a body cut short
        if answer.status not in _KEPT_STATUSES:
            return None
        if (answer.getheader("Content-Encoding") or "").lower() == "gzip":
            body = zlib.decompress(body, 16 + zlib.MAX_WBITS)
        return answer.status, answer.reason, body
    finally:
        http_connection.close()


def _tls_context(connection: Connection) -> ssl.SSLContext:
    """What requests would verify against: the given CA bundle, else REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE,
    else certifi's (requests' own default); the client certificate if one is set."""
    import ssl

    if connection.verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        if isinstance(connection.verify, str):
            bundle = connection.verify
        else:
            import certifi

            bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or certifi.where()
        if os.path.isdir(bundle):
            context = ssl.create_default_context(capath=bundle)
        else:
            context = ssl.create_default_context(cafile=bundle)
    if isinstance(connection.client_cert, tuple):
        context.load_cert_chain(*connection.client_cert)
    elif connection.client_cert:
        context.load_cert_chain(connection.client_cert)
    return context
