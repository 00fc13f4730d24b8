"""The one way topo talks HTTP: session, auth, TLS, timeouts, retries, and quoting of every path segment."""

from __future__ import annotations

import html
import json
import re
import time
import warnings
from typing import Any
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter

from topo.connection import Connection
from topo.errors import BrokerError
from topo.redact import scrub

IDEMPOTENT = frozenset({"GET", "PUT", "DELETE", "HEAD"})
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


def api_path(*segments: str) -> str:
    """/api/queues/%2F/a%20b: every segment quoted, so `/`, `%`, `#`, spaces and unicode survive."""
    return "/api/" + "/".join(quote(segment, safe="") for segment in segments)


def _reason(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        return text[:300] if text else response.reason or "no reason given"
    if isinstance(body, dict):
        reason = body.get("reason") or body.get("error")
        if reason:
            return html.unescape(str(reason))
    return json.dumps(body)[:300]


def _tls_reason(exc: Exception) -> str:
    """The SSL library's own words ("certificate verify failed: ...") without urllib3's wrapping."""
    text = str(exc)
    match = re.search(r"\[SSL[^\]]*\] ([^'(]*)", text)
    return match.group(1).strip() if match else text[:300]


def _short(exc: Exception) -> str:
    text = str(exc)
    for known in ("Connection refused", "Name or service not known", "timed out", "Connection reset", "No route"):
        if known in text:
            return known.lower()
    return f"{type(exc).__name__}: {text[:200]}"


class ManagementClient:
    def __init__(self, connection: Connection, *, retries: int = 4, backoff: float = 0.2, pool_size: int = 32):
        self.connection = connection
        self.retries = retries
        self.backoff = backoff
        self.session = requests.Session()
        # requests would send str credentials as latin-1; RabbitMQ expects UTF-8.
        self.session.auth = (connection.user.encode("utf-8"), connection.password.encode("utf-8"))
        self.session.verify = connection.verify
        self.session.cert = connection.client_cert
        self.session.headers.update({"content-type": "application/json", "user-agent": "topo"})
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        if connection.verify is False:
            warnings.filterwarnings("ignore", message="Unverified HTTPS request")

    def close(self) -> None:
        self.session.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        body: Any = None,
        params: dict[str, str] | None = None,
        ok: tuple[int, ...] = (),
        idempotent: bool | None = None,
    ) -> requests.Response:
        """Send one request; `what` names the object for error messages. Statuses in `ok` are not errors."""
        url = self.connection.url + path
        data = json.dumps(body) if body is not None else None
        # A POST that declares something (a binding) is idempotent in effect; callers say so.
        repeatable = method in IDEMPOTENT if idempotent is None else idempotent
        attempts = self.retries + 1 if repeatable else 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                # verify and cert per request: requests lets REQUESTS_CA_BUNDLE override session.verify.
                response = self.session.request(
                    method,
                    url,
                    data=data,
                    params=params,
                    timeout=self.connection.timeout,
                    verify=self.connection.verify,
                    cert=self.connection.client_cert,
                )
            except requests.exceptions.SSLError as exc:
                raise BrokerError(
                    what, None, scrub(f"TLS error talking to {self.connection.url}: {_tls_reason(exc)}")
                ) from None
            except (requests.ConnectionError, requests.Timeout) as exc:
                # The broker sometimes drops a keep-alive connection right after a 400: retry on a new one.
                if last:
                    raise BrokerError(what, None, scrub(f"cannot reach {self.connection.url}: {_short(exc)}")) from None
                time.sleep(self.backoff * 2**attempt)
                continue
            if response.status_code in RETRY_STATUSES and not last:
                delay = self.backoff * 2**attempt
                retry_after = response.headers.get("retry-after", "")
                if retry_after.isdigit():
                    delay = max(delay, min(float(retry_after), 10.0))
                time.sleep(delay)
                continue
            if response.status_code >= 400 and response.status_code not in ok:
                raise BrokerError(what, response.status_code, scrub(_reason(response)))
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def get(self, path: str, *, what: str, params: dict[str, str] | None = None) -> Any:
        return self.request("GET", path, what=what, params=params).json()

    def get_or_none(self, path: str, *, what: str, params: dict[str, str] | None = None) -> Any:
        response = self.request("GET", path, what=what, params=params, ok=(404,))
        return None if response.status_code == 404 else response.json()

    def put(self, path: str, body: Any, *, what: str) -> None:
        self.request("PUT", path, what=what, body=body)

    def delete(self, path: str, *, what: str) -> None:
        # Already gone is what we wanted: deleting a queue or exchange drops its bindings implicitly.
        self.request("DELETE", path, what=what, ok=(404,))
