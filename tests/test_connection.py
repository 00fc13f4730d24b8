"""Where the management API is and how to log in, and keeping passwords out of messages."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from cli_runner import run_topo
from topo.connection import DEFAULT_URL, Connection, ParsedUrl, parse_url, resolve_connection
from topo.errors import ConfigError
from topo.model import BrokerSpec
from topo.redact import forget_secrets, redact_url, register_secret, scrub


@pytest.fixture(autouse=True)
def _fresh_secret_registry() -> None:
    # Secrets registered by one test (a password "pass") would scrub words in the next one's output.
    forget_secrets()


# ---- parse_url -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://localhost:15672", ParsedUrl("http://localhost:15672", None, None, None)),
        ("https://rabbit.example.com", ParsedUrl("https://rabbit.example.com", None, None, None)),
        ("http://localhost:15672/", ParsedUrl("http://localhost:15672", None, None, None)),
        ("http://localhost:15672/api", ParsedUrl("http://localhost:15672", None, None, None)),
        ("http://localhost:15672/api/", ParsedUrl("http://localhost:15672", None, None, None)),
        ("https://example.com/rabbitmq/api/", ParsedUrl("https://example.com/rabbitmq", None, None, None)),
        ("https://example.com/rabbitmq/", ParsedUrl("https://example.com/rabbitmq", None, None, None)),
        ("  HTTP://Rabbit.Example.COM:15672  ", ParsedUrl("http://rabbit.example.com:15672", None, None, None)),
        ("http://[::1]:15672", ParsedUrl("http://[::1]:15672", None, None, None)),
        ("http://admin:pw@host:15672", ParsedUrl("http://host:15672", "admin", "pw", None)),
        ("http://admin@host:15672", ParsedUrl("http://host:15672", "admin", None, None)),
        # Hosted brokers hand out AMQP URLs: their management API is https on 443, or http on 15672.
        ("amqps://user:pass@host/vhost", ParsedUrl("https://host", "user", "pass", "vhost")),
        ("amqps://user:pass@host:5671/vhost", ParsedUrl("https://host", "user", "pass", "vhost")),
        ("amqps://user:pass@host", ParsedUrl("https://host", "user", "pass", "/")),
        ("amqps://user:pass@host/%2F", ParsedUrl("https://host", "user", "pass", "/")),
        ("amqp://host", ParsedUrl("http://host:15672", None, None, "/")),
        ("amqp://guest:guest@host:5672/prod", ParsedUrl("http://host:15672", "guest", "guest", "prod")),
        ("amqp://[fe80::1]/v", ParsedUrl("http://[fe80::1]:15672", None, None, "v")),
        (
            "amqps://us%40er:p%3Ass%2Fw%25rd%40@host/my%2Fvhost",
            ParsedUrl("https://host", "us@er", "p:ss/w%rd@", "my/vhost"),
        ),
    ],
)
def test_parse_url(url: str, expected: ParsedUrl) -> None:
    assert parse_url(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://user:Hunter2Secret@host", "unsupported URL: use http(s)://host:port"),
        ("mqtt://user:Hunter2Secret@host:1883", "unsupported URL"),
        ("http://user:Hunter2Secret@:15672", "has no host"),
        ("http://user:Hunter2Secret@host:99999", "invalid URL"),
        ("http://user:Hunter2Secret@host:port", "invalid URL"),
    ],
)
def test_bad_url_is_a_config_error_without_the_password(url: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_url(url)
    assert message in str(caught.value)
    assert "Hunter2Secret" not in str(caught.value)
    assert "Hunter2" not in str(caught.value)


def test_bad_scheme_message_says_what_to_use() -> None:
    with pytest.raises(ConfigError, match=r"use http\(s\)://host:port .* or amqp\(s\)://user:password@host/vhost"):
        parse_url("rabbit://host")


@pytest.mark.parametrize(
    "url",
    [
        # The scheme forgotten: urlsplit reads "admin" as the scheme, so there is no "://" to redact after.
        "admin:Hunter2Secret@rabbit.example.com:15672",
        # An unencoded "@" in the password: everything after it must stay hidden too.
        "ftp://admin:Hunter2@Secret@rabbit.example.com",
    ],
)
def test_malformed_url_never_leaks_any_part_of_the_password(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_url(url)
    assert "Secret" not in str(caught.value)


def test_cli_never_prints_the_password_of_a_malformed_url(tmp_path: Path) -> None:
    # Fails before any request is sent: parse_url rejects the URL.
    (tmp_path / "topology.yaml").write_text("vhosts:\n  /: {}\n", encoding="utf-8")
    result = run_topo("plan", "--url", "admin:Cli-Leak-Secret@rabbit.example.com:15672", cwd=str(tmp_path))
    assert result.code == 1
    assert "URL without scheme" in result.stderr
    assert "Cli-Leak-Secret" not in result.output


# ---- resolve_connection ----------------------------------------------------------------------------------


def resolve(
    *,
    url: str | None = None,
    user: str | None = None,
    password: str | None = None,
    env: dict[str, str] | None = None,
    broker: dict[str, Any] | None = None,
    **options: Any,
) -> Connection:
    spec = BrokerSpec.model_validate(broker) if broker is not None else None
    return resolve_connection(url=url, user=user, password=password, env=env or {}, broker=spec, **options)


def test_defaults() -> None:
    connection = resolve()
    assert connection == Connection(
        url=DEFAULT_URL,
        user="guest",
        password="guest",
        verify=True,
        client_cert=None,
        timeout=30.0,
        vhost_hint=None,
    )
    assert DEFAULT_URL == "http://localhost:15672"


def test_amqps_url_gives_https_credentials_and_vhost_hint() -> None:
    connection = resolve(url="amqps://alice:Wonderland-99@broker.example.net/orders")
    assert connection.url == "https://broker.example.net"
    assert (connection.user, connection.password) == ("alice", "Wonderland-99")
    assert connection.vhost_hint == "orders"


def test_password_is_not_in_repr() -> None:
    connection = resolve(password="Repr-Secret-77")
    assert "Repr-Secret-77" not in repr(connection)


# Each level of precedence, highest first: CLI option > TOPO_* environment > broker: section > URL > default.
URL_WITH_CREDENTIALS = "http://url-user:url-pass@host:15672"


@pytest.mark.parametrize(
    ("cli", "env", "broker", "expected"),
    [
        ("cli-user", {"TOPO_USER": "env-user"}, {"user": "file-user"}, "cli-user"),
        (None, {"TOPO_USER": "env-user"}, {"user": "file-user"}, "env-user"),
        (None, {}, {"user": "file-user"}, "file-user"),
        (None, {}, {}, "url-user"),
    ],
)
def test_user_precedence(cli: str | None, env: dict[str, str], broker: dict[str, Any], expected: str) -> None:
    assert resolve(url=URL_WITH_CREDENTIALS, user=cli, env=env, broker=broker).user == expected


def test_user_default_is_guest() -> None:
    assert resolve(url="http://host:15672").user == "guest"


@pytest.mark.parametrize(
    ("cli", "env", "broker", "expected"),
    [
        ("cli-pass", {"TOPO_PASSWORD": "env-pass"}, {"password": "file-pass"}, "cli-pass"),
        (None, {"TOPO_PASSWORD": "env-pass"}, {"password": "file-pass"}, "env-pass"),
        (None, {}, {"password": "file-pass"}, "file-pass"),
        (None, {}, {}, "url-pass"),
    ],
)
def test_password_precedence(cli: str | None, env: dict[str, str], broker: dict[str, Any], expected: str) -> None:
    assert resolve(url=URL_WITH_CREDENTIALS, password=cli, env=env, broker=broker).password == expected


def test_password_default_is_guest() -> None:
    assert resolve(url="http://host:15672").password == "guest"


def test_empty_password_in_url_is_kept() -> None:
    # "user:@host" says the password is empty; only a URL without one falls back to guest.
    assert resolve(url="http://u:@host:15672").password == ""


@pytest.mark.parametrize(
    ("cli", "env", "broker", "expected"),
    [
        ("http://cli:15672", {"TOPO_URL": "http://env:15672"}, {"url": "http://file:15672"}, "http://cli:15672"),
        (None, {"TOPO_URL": "http://env:15672"}, {"url": "http://file:15672"}, "http://env:15672"),
        (None, {}, {"url": "http://file:15672"}, "http://file:15672"),
        (None, {}, {}, DEFAULT_URL),
    ],
)
def test_url_precedence(cli: str | None, env: dict[str, str], broker: dict[str, Any], expected: str) -> None:
    assert resolve(url=cli, env=env, broker=broker).url == expected


def test_url_credentials_from_environment_url() -> None:
    connection = resolve(env={"TOPO_URL": "amqps://env-user:Env-Url-Pass@cloud.example/prod"})
    assert (connection.url, connection.user, connection.password) == (
        "https://cloud.example",
        "env-user",
        "Env-Url-Pass",
    )
    assert connection.vhost_hint == "prod"


def test_tls_options(tmp_path: Path) -> None:
    paths = {}
    for name in ("ca", "env", "file", "cli"):
        paths[name] = str(tmp_path / f"{name}.pem")
        Path(paths[name]).write_text("x")
    assert resolve(ca_cert=paths["ca"]).verify == paths["ca"]
    assert resolve(env={"TOPO_CA_CERT": paths["env"]}).verify == paths["env"]
    assert resolve(broker={"ca_cert": paths["file"]}).verify == paths["file"]
    assert resolve(ca_cert=paths["cli"], env={"TOPO_CA_CERT": paths["env"]}).verify == paths["cli"]
    assert resolve(insecure=True, ca_cert=paths["ca"]).verify is False
    assert resolve(broker={"insecure": True}).verify is False


def test_client_certificate(tmp_path: Path) -> None:
    cert, key = str(tmp_path / "c.pem"), str(tmp_path / "k.pem")
    Path(cert).write_text("x")
    Path(key).write_text("x")
    assert resolve(client_cert=cert).client_cert == cert
    assert resolve(client_cert=cert, client_key=key).client_cert == (cert, key)
    env = {"TOPO_CLIENT_CERT": cert, "TOPO_CLIENT_KEY": key}
    assert resolve(env=env).client_cert == (cert, key)
    with pytest.raises(ConfigError, match="--client-key needs --client-cert"):
        resolve(client_key=key)
    with pytest.raises(ConfigError, match="--client-cert: no such file"):
        resolve(client_cert=str(tmp_path / "missing.pem"))


def test_timeout() -> None:
    assert resolve(timeout=5).timeout == 5.0
    assert resolve(broker={"timeout": 12}).timeout == 12.0
    assert resolve(timeout=2.5, broker={"timeout": 12}).timeout == 2.5
    assert isinstance(resolve(broker={"timeout": 12}).timeout, float)


def test_resolved_passwords_are_scrubbed_from_output() -> None:
    resolve(password="Cli-Scrub-Me-123")
    resolve(url="amqps://u:Url-Scrub-Me-456@host/v", password="Other-Scrub-Me-789")
    text = scrub("tried Cli-Scrub-Me-123 then Url-Scrub-Me-456 and Other-Scrub-Me-789")
    assert text == "tried *** then *** and ***"


def test_bad_url_from_environment_does_not_leak_password() -> None:
    with pytest.raises(ConfigError) as caught:
        resolve(env={"TOPO_URL": "ftp://admin:Env-Leak-Check-1@host"})
    assert "Env-Leak-Check-1" not in str(caught.value)


# ---- redact ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("amqps://user:pass123@host/v", "amqps://user:***@host/v"),
        ("http://admin:s3cret@localhost:15672/api", "http://admin:***@localhost:15672/api"),
        ("amqps://user@host/v", "amqps://user@host/v"),
        ("http://host:15672/api", "http://host:15672/api"),
        (
            "cannot reach http://a:one@h1 or amqp://b:two@h2/v",
            "cannot reach http://a:***@h1 or amqp://b:***@h2/v",
        ),
        ("see https://example.com/a@b", "see https://example.com/a@b"),
    ],
)
def test_redact_url(text: str, expected: str) -> None:
    assert redact_url(text) == expected


def test_scrub_hides_registered_secrets_and_their_url_encoding() -> None:
    register_secret("Tr1cky&Secret/pw")
    assert scrub("password Tr1cky&Secret/pw rejected") == "password *** rejected"
    assert scrub("url amqp://u:Tr1cky%26Secret%2Fpw@h") == "url amqp://u:***@h"
    assert scrub("in a query ?p=Tr1cky%26Secret%2Fpw") == "in a query ?p=***"


def test_scrub_prefers_the_longest_secret() -> None:
    register_secret("overlap-secret")
    register_secret("overlap-secret-longer")
    assert scrub("x overlap-secret-longer y") == "x *** y"


def test_short_secrets_are_not_registered() -> None:
    register_secret("zq")
    register_secret(None)
    register_secret("")
    assert scrub("zqzq xzqx") == "zqzq xzqx"


def test_no_broker_section_has_the_broker_sections_defaults() -> None:
    """resolve_connection uses NoBrokerSection to avoid importing the models: it must say what an empty
    broker: section says."""
    from topo.connection import NoBrokerSection
    from topo.model import BrokerSpec

    assert dataclasses.asdict(NoBrokerSection()) == BrokerSpec().model_dump()
