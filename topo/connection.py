"""Where the management API is and how to log in: options > TOPO_* environment > broker: section > defaults.

Hosted brokers hand out an AMQP URL (amqps://user:pass@host/vhost); the management API of such a broker
lives at https://host, so such URLs are translated rather than rejected.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from topo.errors import ConfigError
from topo.redact import register_secret, register_url_secret

if TYPE_CHECKING:  # imported when needed: the models cost 0.25 s of a start that reads the broker first
    from topo.model import BrokerSpec

DEFAULT_URL = "http://localhost:15672"
DEFAULT_TIMEOUT = 30  # seconds per request


@dataclass(frozen=True, slots=True)
class NoBrokerSection:
    """What files without a broker: section say: BrokerSpec's defaults, without importing the models."""

    url: str | None = None
    user: str | None = None
    password: str | None = None
    ca_cert: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    insecure: bool = False
    timeout: float | int = DEFAULT_TIMEOUT


# How long to wait for a broker that stops answering mid-run (restarting): a restart of a test node on
# a busy 2-core machine took 25-45 s (stop, boot, management plugin up); twice the slowest, rounded up.
DEFAULT_RESTART_WAIT = 120.0


@dataclass(frozen=True, slots=True)
class Connection:
    url: str  # management base URL without credentials, e.g. https://host:443
    user: str
    password: str = field(repr=False)
    verify: bool | str = True  # False, True, or a CA bundle path
    client_cert: tuple[str, str] | str | None = None
    timeout: float = 30.0
    vhost_hint: str | None = None  # the vhost named in an AMQP URL
    restart_wait: float = DEFAULT_RESTART_WAIT  # seconds to wait for a broker that is restarting
    restart_wait_set: bool = False  # set explicitly: waited for even before the broker first answered
    # Where the user and password came from, for the hint after a failed login (never the password).
    user_source: str = field(default="", compare=False)
    password_source: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class ParsedUrl:
    base: str
    user: str | None
    password: str | None
    vhost: str | None


def parse_url(url: str) -> ParsedUrl:
    """Management base URL (and any credentials) from an http(s):// or amqp(s):// URL."""
    register_url_secret(url)
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises ValueError for an invalid port
    except ValueError:
        raise ConfigError("invalid URL: use http(s)://host:port or amqp(s)://user:password@host/vhost") from None
    scheme = parts.scheme.lower()
    if "://" not in url:
        raise ConfigError("URL without scheme: start it with http:// or https:// (e.g. http://localhost:15672)")
    if scheme not in ("http", "https", "amqp", "amqps"):
        # Not echoed: a malformed URL may hold a password the parser did not recognise as one.
        raise ConfigError(
            "unsupported URL: use http(s)://host:port for the management API or amqp(s)://user:password@host/vhost"
        )
    if not parts.hostname:
        raise ConfigError("URL has no host: use http(s)://host:port or amqp(s)://user:password@host/vhost")
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    user = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    port = parts.port
    vhost: str | None = None
    if scheme in ("amqp", "amqps"):
        # The AMQP port says nothing about the management port: https on 443, http on 15672.
        web_scheme = "https" if scheme == "amqps" else "http"
        base = f"{web_scheme}://{host}" if web_scheme == "https" else f"http://{host}:15672"
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        vhost = unquote(path) if path else "/"
    else:
        base = f"{scheme}://{host}" + (f":{port}" if port else "")
        prefix = parts.path.rstrip("/")
        if prefix.endswith("/api"):
            prefix = prefix[: -len("/api")]
        base += prefix
    return ParsedUrl(base, user, password, vhost)


def resolve_connection(
    *,
    url: str | None,
    user: str | None,
    password: str | None,
    env: Mapping[str, str],
    broker: BrokerSpec | None,
    ca_cert: str | None = None,
    client_cert: str | None = None,
    client_key: str | None = None,
    insecure: bool = False,
    timeout: float | None = None,
    restart_wait: float | None = None,
) -> Connection:
    spec: BrokerSpec | NoBrokerSection = broker or NoBrokerSection()
    chosen_url = url or env.get("TOPO_URL") or spec.url or DEFAULT_URL
    parsed = parse_url(chosen_url)
    chosen_user = user or env.get("TOPO_USER") or spec.user or parsed.user or "guest"
    user_source = _source(user, env.get("TOPO_USER"), spec.user, parsed.user, "TOPO_USER", "--user")
    chosen_password = password or env.get("TOPO_PASSWORD") or spec.password
    password_source = _source(password, env.get("TOPO_PASSWORD"), spec.password, parsed.password, "TOPO_PASSWORD")
    if chosen_password is None:
        chosen_password = parsed.password if parsed.password is not None else "guest"
    if chosen_password != "guest":  # RabbitMQ's well-known default is no secret; scrubbing it garbles text
        register_secret(chosen_password)
    if parsed.password:
        register_secret(parsed.password)
    ca = ca_cert or env.get("TOPO_CA_CERT") or spec.ca_cert
    verify: bool | str = False if (insecure or spec.insecure) else (ca or True)
    cert_file = client_cert or env.get("TOPO_CLIENT_CERT") or spec.client_cert
    key_file = client_key or env.get("TOPO_CLIENT_KEY") or spec.client_key
    if key_file and not cert_file:
        raise ConfigError("--client-key needs --client-cert")
    for option, path in (("--ca-cert", ca), ("--client-cert", cert_file), ("--client-key", key_file)):
        if path and not os.path.isfile(path):
            raise ConfigError(f"{option}: no such file: {path}")
    cert: tuple[str, str] | str | None = (cert_file, key_file) if cert_file and key_file else cert_file
    wait, wait_set = _restart_wait(restart_wait, env)
    return Connection(
        url=parsed.base,
        user=chosen_user,
        password=chosen_password,
        verify=verify,
        client_cert=cert,
        timeout=float(timeout if timeout is not None else spec.timeout),
        vhost_hint=parsed.vhost,
        restart_wait=wait,
        restart_wait_set=wait_set,
        user_source=user_source,
        password_source=password_source,
    )


def _source(
    option: str | None,
    variable: str | None,
    section: str | None,
    in_url: str | None,
    name: str,
    flag: str = "--password",
) -> str:
    if option:
        return f"the {flag} option"
    if variable:
        return f"the {name} variable"
    if section is not None:
        return "the broker: section of the files"
    if in_url is not None:
        return "the URL"
    return "the default (guest)"


def _restart_wait(option: float | None, env: Mapping[str, str]) -> tuple[float, bool]:
    if option is not None:
        return float(option), True
    text = env.get("TOPO_RESTART_WAIT", "").strip()
    if not text:
        return DEFAULT_RESTART_WAIT, False
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 3600:
        raise ConfigError(f"TOPO_RESTART_WAIT must be a number of seconds from 0 to 3600, got {text[:40]!r}")
    return value, True
