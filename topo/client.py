"""The one way topo talks HTTP: session, auth, TLS, timeouts, retries, and quoting of every path segment."""

from __future__ import annotations

import html
import json
import re
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from topo.capabilities import OVERVIEW_PARAMS
from topo.connection import Connection
from topo.errors import BrokerError
from topo.redact import scrub

IDEMPOTENT = frozenset({"GET", "PUT", "DELETE", "HEAD"})
# Worth another try: overload (429), a crash in the broker's handler (500), and what a node or a proxy
# in front of it answers while the node restarts (502, 503, 504).
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
UNAVAILABLE_STATUSES = frozenset({502, 503, 504})
# How often the overview is asked whether a 404 comes from a management API that is still starting.
PROBE_TRIES = 3
# Longest pause between two tries while waiting for a restarting broker.
MAX_PAUSE = 2.0
# Errors in what topo would send, which no retry changes.
PERMANENT = (
    requests.exceptions.InvalidURL,
    requests.exceptions.InvalidSchema,
    requests.exceptions.MissingSchema,
    requests.exceptions.InvalidHeader,
)


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
    if isinstance(exc, (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError)):
        return f"the answer was cut short ({text[:160]})"
    if "RemoteDisconnected" in text or "Connection aborted" in text:
        return "the connection was closed without an answer"
    return f"{type(exc).__name__}: {text[:200]}"


# A 401's reason when the user or password is wrong: 3.x says "Login failed", 4.x "Not_Authorized" (4.3.6
# probed; a known user without the right tag gets "Not administrator user" and the like on both).
LOGIN_FAILED = frozenset({"Login failed", "Not_Authorized"})


@dataclass(frozen=True, slots=True)
class _Fault:
    """A failed try: what went wrong, whether the broker looks down (restarting), whether it may have
    acted on the request (a refused connection carried nothing)."""

    reason: str
    status: int | None = None
    unavailable: bool = False
    sent: bool = True

    def __str__(self) -> str:
        return self.reason if self.status is None else f"HTTP {self.status}: {self.reason}"


class ManagementClient:
    """Retries what a network or a restarting broker does to a request, and reports what it cannot.

    Transient faults (a reset or closed connection, an answer cut short or not parseable, 429/500/502/
    503/504) are retried `retries` times with backoff for every request that is safe to repeat. A broker
    that looks down (connection refused, 502/503/504, the management API answering 404 to everything
    while it starts) is waited for up to `connection.restart_wait` seconds, once this client has seen it
    answer (or when the wait was set explicitly): a wrong URL still fails within seconds. `notify`
    receives one line when a wait starts and one when the broker is back.
    """

    def __init__(
        self,
        connection: Connection,
        *,
        retries: int = 4,
        backoff: float = 0.2,
        pool_size: int = 32,
        notify: Callable[[str], None] | None = None,
    ):
        self.connection = connection
        self.retries = retries
        self.backoff = backoff
        self.notify = notify
        self.answered = False  # the broker has answered this client at least once
        self._lock = threading.Lock()
        self._waiting_since: float | None = None  # a wait for a restarting broker is under way
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
        first_fault: float | None = None
        attempt = 0
        while True:
            fault, response = self._try(method, url, data, params, ok, what)
            if fault is None:
                assert response is not None
                self._back()
                return response
            now = time.monotonic()
            first_fault = now if first_fault is None else first_fault
            if fault.sent and not repeatable:
                raise self._error(what, fault, attempt, waited=0)
            waited = now - first_fault
            wait_for_restart = fault.unavailable and (self.answered or self.connection.restart_wait_set)
            if wait_for_restart and waited < self.connection.restart_wait:
                self._announce_wait(fault)
                pause = min(self.backoff * 2**attempt, MAX_PAUSE, self.connection.restart_wait - waited)
            elif attempt < self.retries:
                pause = self.backoff * 2**attempt
                if fault.status == 429 and response is not None:
                    retry_after = response.headers.get("retry-after", "")
                    if retry_after.isdigit():
                        pause = max(pause, min(float(retry_after), 10.0))
            else:
                raise self._error(what, fault, attempt, waited if wait_for_restart else 0)
            time.sleep(max(pause, 0.0))
            attempt += 1

    def _try(
        self, method: str, url: str, data: str | None, params: dict[str, str] | None, ok: tuple[int, ...], what: str
    ) -> tuple[_Fault | None, requests.Response | None]:
        """One try: (None, response) when it got an answer to keep, else (fault, response or None)."""
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
            reason = _tls_reason(exc)
            if "WRONG_VERSION_NUMBER" in str(exc) or "wrong version number" in reason:
                reason += " (the port answers plain HTTP, not TLS: use http:// for it)"
            raise BrokerError(what, None, scrub(f"TLS error talking to {self.connection.url}: {reason}")) from None
        except PERMANENT as exc:
            raise BrokerError(what, None, scrub(f"cannot send to {self.connection.url}: {exc}")) from None
        except requests.RequestException as exc:
            # Resets, truncated bodies (ChunkedEncodingError, IncompleteRead), timeouts, refused connections.
            reason = _short(exc)
            not_sent = isinstance(exc, requests.exceptions.ConnectTimeout) or reason == "connection refused"
            # A connection closed or reset before any answer: the broker (or a proxy in front of it) going down.
            going = reason in ("connection reset", "the connection was closed without an answer")
            return _Fault(reason, unavailable=not_sent or going, sent=not not_sent), None
        status = response.status_code
        if status in RETRY_STATUSES:
            return _Fault(scrub(_reason(response)), status, status in UNAVAILABLE_STATUSES), response
        if status == 404 and self._starting():
            return _Fault("the management API is still starting (404 for every path)", 404, True), response
        if status < 400:
            self.answered = True
        elif status not in ok:
            raise BrokerError(what, status, scrub(self._hinted(response, url[len(self.connection.url) :])))
        if status < 300 and response.content and "json" in response.headers.get("content-type", ""):
            try:
                parsed = response.json()
            except ValueError:
                return _Fault("the answer was cut short (not valid JSON)", status), response
            # Parsed once here, to know the body is whole; callers get the same value without a second parse.
            response.json = lambda **_: parsed  # type: ignore[method-assign]
        return None, response

    def _starting(self) -> bool:
        """Whether a 404 means the management API is not up yet (while it starts it answers 404, with the
        same body as for a missing object, to every path): then its overview is not found either.

        A probe that meets a transient fault itself tells nothing either way, so it is sent again (up to
        PROBE_TRIES times): taking that fault for "starting" turned a real 404 (a listing 3.10 does not
        have) into a failed try of the request, and a few of those in a row used up its retries."""
        for attempt in range(PROBE_TRIES):
            try:
                probe = self.session.get(
                    self.connection.url + "/api/overview",
                    # The cheap overview: every lock check's 404 asks it.
                    params={**OVERVIEW_PARAMS, "columns": "rabbitmq_version"},
                    timeout=self.connection.timeout,
                    verify=self.connection.verify,
                    cert=self.connection.client_cert,
                )
            except requests.exceptions.Timeout:
                return True  # it already took a whole timeout: no second one
            except requests.RequestException:
                status = None
            else:
                status = probe.status_code
                if status < 400:
                    self.answered = True
                if status not in RETRY_STATUSES:
                    return status == 404
            if attempt + 1 < PROBE_TRIES:
                time.sleep(self.backoff * 2**attempt)
        # Still no answer: a broker going down, which the caller waits for like any other.
        return True

    def _announce_wait(self, fault: _Fault) -> None:
        with self._lock:
            if self._waiting_since is not None:
                return
            self._waiting_since = time.monotonic()
        if self.notify is not None:
            self.notify(
                f"Waiting for the broker at {self.connection.url} ({fault}): up to "
                f"{self.connection.restart_wait:.0f} s (--restart-wait, TOPO_RESTART_WAIT)..."
            )

    def _back(self) -> None:
        if self._waiting_since is None:
            return
        with self._lock:
            since, self._waiting_since = self._waiting_since, None
        if since is not None and self.notify is not None:
            self.notify(f"The broker at {self.connection.url} answers again (after {time.monotonic() - since:.1f} s).")

    def _error(self, what: str, fault: _Fault, attempt: int, waited: float) -> BrokerError:
        tries = f"{attempt + 1} {'try' if attempt == 0 else 'tries'}"
        if waited:
            tries += f", {waited:.0f} s of waiting for the broker to come back (--restart-wait)"
        if not fault.sent and not self.answered:
            return BrokerError(what, None, scrub(f"cannot reach {self.connection.url}: {fault.reason} ({tries})"))
        reason = fault.reason
        if fault.status == 404 and not self.answered:
            # Never answered anything but 404: more often a wrong URL than a broker still starting.
            reason += (
                f"; if it is not starting, {self.connection.url} does not look like the management API's base URL: "
                "give http(s)://host:port (with a path prefix only if the management plugin is configured with one)"
            )
        return BrokerError(what, fault.status, scrub(f"{reason} ({tries})"))

    def _hinted(self, response: requests.Response, path: str) -> str:
        """The broker's reason, with what usually fixes it where that is known."""
        reason = _reason(response)
        connection = self.connection
        if response.status_code == 401 and reason in LOGIN_FAILED:
            # Which user and where both came from; never the password itself.
            said = "" if reason == "Login failed" else f"the broker says {reason}; "
            user_source = connection.user_source or "the settings"
            return (
                f"Login failed for user {connection.user!r} ({said}user from {user_source}, "
                f"password from {connection.password_source or 'the settings'}): check that password"
            )
        if response.status_code == 404 and path.startswith(("/api/overview", "/api/whoami")):
            return (
                f"{reason}: {connection.url} does not look like the management API's base URL; give "
                "http(s)://host:port (with the path prefix only if the management plugin is configured with one)"
            )
        return reason

    def get(self, path: str, *, what: str, params: dict[str, str] | None = None) -> Any:
        response = self.request("GET", path, what=what, params=params)
        try:
            return response.json()
        except ValueError:
            raise BrokerError(
                what,
                response.status_code,
                f"the answer is not JSON ({response.headers.get('content-type', 'no content type')}): is "
                f"{self.connection.url} the management API's base URL?",
            ) from None

    def get_or_none(self, path: str, *, what: str, params: dict[str, str] | None = None) -> Any:
        response = self.request("GET", path, what=what, params=params, ok=(404,))
        return None if response.status_code == 404 else response.json()

    def put(self, path: str, body: Any, *, what: str) -> None:
        self.request("PUT", path, what=what, body=body)

    def delete(self, path: str, *, what: str) -> None:
        # Already gone is what we wanted: deleting a queue or exchange drops its bindings implicitly.
        self.request("DELETE", path, what=what, ok=(404,))
