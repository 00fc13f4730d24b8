"""TLS end to end: the real CLI against a management listener that speaks HTTPS and demands client certificates.

One extra throwaway node serves the management API twice: over plain HTTP (for its readiness poll and
for cleanup) and over HTTPS with ``verify_peer`` + ``fail_if_no_peer_cert``. That one listener tests both
directions:

- server verification (topo checks the broker): our throwaway CA is in no trust store, so topo must
  refuse the broker's certificate unless given ``--ca-cert`` (or ``--insecure``);
- client certificates (the broker checks topo): the listener refuses every handshake without one.

The CA and both certificates are made with the ``openssl`` CLI at test time (a dependency of Debian's
``rabbitmq-server`` package). This module overrides the session ``broker`` fixture with that node, so
the conftest machinery (the ``broker`` marker, ``vhost_name`` cleanup) targets it and running this
module alone does not also start the default node.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from urllib3.exceptions import InsecureRequestWarning

from cli_runner import Result, run_topo
from rabbitmq_node import Broker, RabbitNode, free_ports

pytestmark = pytest.mark.broker

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"

CA_EXTENSIONS = """\
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
"""
SERVER_EXTENSIONS = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""
CLIENT_EXTENSIONS = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


@dataclass(frozen=True)
class Pki:
    directory: Path
    ca: Path  # the CA that signed the server and client certificates
    other_ca: Path  # an unrelated CA: trusting it must not make the broker's certificate valid
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


@dataclass(frozen=True)
class TlsBroker:
    node: RabbitNode
    pki: Pki
    https_port: int

    @property
    def https_url(self) -> str:
        return f"https://localhost:{self.https_port}"


def _openssl(directory: Path, *args: str) -> None:
    try:
        result = subprocess.run(
            [OPENSSL, *args], cwd=directory, capture_output=True, text=True, timeout=60, check=False
        )
    except FileNotFoundError:
        pytest.fail(f"{OPENSSL} not found: install the openssl package (rabbitmq-server depends on it)")
    if result.returncode != 0:
        pytest.fail(f"openssl {' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")


def _make_ca(directory: Path, name: str) -> None:
    (directory / f"{name}.ext").write_text(CA_EXTENSIONS)
    _openssl(directory, "genrsa", "-out", f"{name}.key", "2048")
    _openssl(directory, "req", "-new", "-key", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN=topo test {name}")
    _openssl(
        directory,
        "x509", "-req", "-in", f"{name}.csr", "-signkey", f"{name}.key", "-out", f"{name}.pem",
        "-days", "2", "-sha256", "-extfile", f"{name}.ext",
    )  # fmt: skip


def _make_leaf(directory: Path, name: str, common_name: str, extensions: str, ca: str) -> None:
    (directory / f"{name}.ext").write_text(extensions)
    _openssl(directory, "genrsa", "-out", f"{name}.key", "2048")
    _openssl(directory, "req", "-new", "-key", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={common_name}")
    _openssl(
        directory,
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
        "-out", f"{name}.pem", "-days", "2", "-sha256", "-extfile", f"{name}.ext",
    )  # fmt: skip


def _make_pki() -> Pki:
    # Not pytest's tmp_path (mode 0700): when we are root the node runs as `rabbitmq` and must read these.
    directory = Path(tempfile.mkdtemp(prefix="topo-tls-", dir="/tmp"))
    directory.chmod(0o755)
    _make_ca(directory, "ca")
    _make_ca(directory, "other-ca")
    _make_leaf(directory, "server", "localhost", SERVER_EXTENSIONS, "ca")
    _make_leaf(directory, "client", "topo-test-client", CLIENT_EXTENSIONS, "ca")
    for path in directory.iterdir():
        path.chmod(0o644)  # throwaway keys: readable by the node's user is all that matters
    return Pki(
        directory=directory,
        ca=directory / "ca.pem",
        other_ca=directory / "other-ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
    )


@pytest.fixture(scope="module")
def tls_broker() -> Iterator[TlsBroker]:
    """A node whose management API also listens over HTTPS and requires a client certificate there."""
    pki = _make_pki()
    try:
        https_port = free_ports(1)[0]
        node = RabbitNode(
            [
                "management.ssl.ip = 127.0.0.1",
                f"management.ssl.port = {https_port}",
                f"management.ssl.cacertfile = {pki.ca}",
                f"management.ssl.certfile = {pki.server_cert}",
                f"management.ssl.keyfile = {pki.server_key}",
                "management.ssl.verify = verify_peer",
                "management.ssl.fail_if_no_peer_cert = true",
            ]
        )
        node.start()  # raises with the node's log when it cannot start: the tests then error, never skip
        try:
            yield TlsBroker(node=node, pki=pki, https_port=https_port)
        finally:
            node.stop()
    finally:
        shutil.rmtree(pki.directory, ignore_errors=True)


@pytest.fixture(scope="module")
def broker(tls_broker: TlsBroker) -> Broker:
    """Overrides conftest's session broker here: `vhost_name` then cleans up on the TLS node (over plain HTTP)."""
    node = tls_broker.node
    return Broker(url=node.url, user=node.user, password=node.password, node=node)


@pytest.fixture
def topology(tmp_path: Path, vhost_name: str) -> Path:
    path = tmp_path / "topology.yaml"
    path.write_text(f"vhosts:\n  {json.dumps(vhost_name)}:\n    queues:\n      tls.q: {{}}\n")
    return path


def _env(**overrides: str | None) -> dict[str, str | None]:
    """Credentials, and none of the caller's TOPO_* / CA-bundle settings leaking into the test."""
    env: dict[str, str | None] = {
        "TOPO_USER": "guest",
        "TOPO_PASSWORD": "guest",
        "TOPO_URL": None,
        "TOPO_CA_CERT": None,
        "TOPO_CLIENT_CERT": None,
        "TOPO_CLIENT_KEY": None,
        "REQUESTS_CA_BUNDLE": None,
        "CURL_CA_BUNDLE": None,
        "NO_COLOR": "1",
    }
    env.update(overrides)
    return env


def _client_args(tls: TlsBroker) -> list[str]:
    return ["--client-cert", str(tls.pki.client_cert), "--client-key", str(tls.pki.client_key)]


def _assert_clean_error(result: Result) -> None:
    """Exit 1 with one `Error: ...` line: not a traceback, not an internal error, not 'changes pending'."""
    assert result.code == 1, result.output
    assert "Traceback" not in result.output, result.output
    assert "Internal error" not in result.output, result.output
    assert result.stderr.startswith("Error: "), result.output


def _queue_exists(broker: Broker, vhost: str, queue: str) -> bool:
    response = requests.get(
        f"{broker.url}/api/queues/{quote(vhost, safe='')}/{quote(queue, safe='')}", auth=broker.auth, timeout=30
    )
    assert response.status_code in (200, 404), response.text
    return response.status_code == 200


def _apply_then_in_sync(
    args: list[str], topology: Path, broker: Broker, vhost: str, env: Mapping[str, str | None] | None = None
) -> None:
    """plan shows the queue, apply creates it on the broker, and plan --detailed-exitcode then says in sync."""
    env = env if env is not None else _env()
    planned = run_topo("plan", "-f", str(topology), *args, env=env)
    assert planned.code == 0, planned.output
    assert "tls.q" in planned.stdout, planned.output
    assert not _queue_exists(broker, vhost, "tls.q")
    applied = run_topo("apply", "--auto-approve", "-f", str(topology), *args, env=env)
    assert applied.code == 0, applied.output
    assert "Verified" in applied.stderr, applied.output
    assert _queue_exists(broker, vhost, "tls.q")
    again = run_topo("plan", "--detailed-exitcode", "-f", str(topology), *args, env=env)
    assert again.code == 0, again.output


def test_node_listens_over_https_and_requires_a_client_certificate(tls_broker: TlsBroker) -> None:
    """The fixture itself: without this, the tests below could pass against a listener that checks nothing."""
    url = f"{tls_broker.https_url}/api/overview"
    auth = ("guest", "guest")
    pki = tls_broker.pki
    ok = requests.get(url, auth=auth, verify=str(pki.ca), cert=(str(pki.client_cert), str(pki.client_key)), timeout=30)
    assert ok.status_code == 200, ok.text
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(url, auth=auth, verify=str(pki.ca), timeout=30)
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(url, auth=auth, verify=True, cert=(str(pki.client_cert), str(pki.client_key)), timeout=30)


def test_ca_cert_and_client_cert_plan_apply_in_sync(
    tls_broker: TlsBroker, broker: Broker, topology: Path, vhost_name: str
) -> None:
    args = ["--url", tls_broker.https_url, "--ca-cert", str(tls_broker.pki.ca), *_client_args(tls_broker)]
    _apply_then_in_sync(args, topology, broker, vhost_name)


def test_ip_address_in_subject_alt_name_is_accepted(tls_broker: TlsBroker, topology: Path) -> None:
    url = f"https://127.0.0.1:{tls_broker.https_port}"
    args = ["--url", url, "--ca-cert", str(tls_broker.pki.ca), *_client_args(tls_broker)]
    result = run_topo("plan", "-f", str(topology), *args, env=_env())
    assert result.code == 0, result.output


@pytest.mark.parametrize("ca", ["none", "other"], ids=["no-ca-cert", "unrelated-ca-cert"])
def test_broker_certificate_is_verified(tls_broker: TlsBroker, topology: Path, ca: str) -> None:
    ca_args = [] if ca == "none" else ["--ca-cert", str(tls_broker.pki.other_ca)]
    result = run_topo(
        "plan", "-f", str(topology), "--url", tls_broker.https_url, *ca_args, *_client_args(tls_broker), env=_env()
    )
    _assert_clean_error(result)
    assert "TLS" in result.stderr, result.output
    assert "certificate verify failed" in result.stderr, result.output


def test_insecure_skips_verification_and_warns(
    tls_broker: TlsBroker, broker: Broker, topology: Path, vhost_name: str
) -> None:
    args = ["--url", tls_broker.https_url, "--insecure", *_client_args(tls_broker)]
    planned = run_topo("plan", "-f", str(topology), *args, env=_env())
    assert planned.code == 0, planned.output
    assert "not verifying the TLS certificate" in planned.stderr, planned.output
    assert tls_broker.https_url in planned.stderr, planned.output
    # urllib3's InsecureRequestWarning would repeat on every request: topo's one warning is enough.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        applied = run_topo("apply", "--auto-approve", "-f", str(topology), *args, env=_env())
    assert applied.code == 0, applied.output
    assert "not verifying the TLS certificate" in applied.stderr, applied.output
    assert not [w for w in caught if issubclass(w.category, InsecureRequestWarning)], [str(w) for w in caught]
    assert _queue_exists(broker, vhost_name, "tls.q")


def test_missing_client_certificate_is_a_clear_error(tls_broker: TlsBroker, topology: Path) -> None:
    result = run_topo(
        "plan", "-f", str(topology), "--url", tls_broker.https_url, "--ca-cert", str(tls_broker.pki.ca), env=_env()
    )
    _assert_clean_error(result)
    assert "TLS" in result.stderr, result.output
    assert "certificate required" in result.stderr, result.output


@pytest.mark.parametrize("option", ["--ca-cert", "--client-cert", "--client-key"])
def test_missing_certificate_file_is_a_clear_error(tls_broker: TlsBroker, topology: Path, option: str) -> None:
    """A typo in a certificate path is the user's mistake: one `Error:` naming the file, not "a bug in topo"."""
    pki = tls_broker.pki
    given = {"--ca-cert": str(pki.ca), "--client-cert": str(pki.client_cert), "--client-key": str(pki.client_key)}
    missing = str(pki.directory / "no-such-file.pem")
    given[option] = missing
    args = [arg for pair in given.items() for arg in pair]
    result = run_topo("plan", "-f", str(topology), "--url", tls_broker.https_url, *args, env=_env())
    _assert_clean_error(result)
    assert missing in result.stderr, result.output


def test_client_key_without_client_cert_is_a_clear_error(tls_broker: TlsBroker, topology: Path) -> None:
    args = ["--url", tls_broker.https_url, "--ca-cert", str(tls_broker.pki.ca)]
    result = run_topo("plan", "-f", str(topology), *args, "--client-key", str(tls_broker.pki.client_key), env=_env())
    _assert_clean_error(result)
    assert "--client-key needs --client-cert" in result.stderr, result.output
    from_env = run_topo("plan", "-f", str(topology), *args, env=_env(TOPO_CLIENT_KEY=str(tls_broker.pki.client_key)))
    _assert_clean_error(from_env)
    assert "--client-key needs --client-cert" in from_env.stderr, from_env.output


def test_environment_variables(tls_broker: TlsBroker, broker: Broker, topology: Path, vhost_name: str) -> None:
    env = _env(
        TOPO_URL=tls_broker.https_url,
        TOPO_CA_CERT=str(tls_broker.pki.ca),
        TOPO_CLIENT_CERT=str(tls_broker.pki.client_cert),
        TOPO_CLIENT_KEY=str(tls_broker.pki.client_key),
    )
    _apply_then_in_sync([], topology, broker, vhost_name, env)


def test_options_override_environment_variables(tls_broker: TlsBroker, topology: Path) -> None:
    """A wrong CA in TOPO_CA_CERT fails; the right one on the command line wins over it."""
    env = _env(
        TOPO_URL=tls_broker.https_url,
        TOPO_CA_CERT=str(tls_broker.pki.other_ca),
        TOPO_CLIENT_CERT=str(tls_broker.pki.client_cert),
        TOPO_CLIENT_KEY=str(tls_broker.pki.client_key),
    )
    wrong = run_topo("plan", "-f", str(topology), env=env)
    _assert_clean_error(wrong)
    assert "certificate verify failed" in wrong.stderr, wrong.output
    right = run_topo("plan", "-f", str(topology), "--ca-cert", str(tls_broker.pki.ca), env=env)
    assert right.code == 0, right.output


def test_broker_section_of_the_topology_file(
    tls_broker: TlsBroker, broker: Broker, tmp_path: Path, vhost_name: str
) -> None:
    pki = tls_broker.pki
    section = {
        "url": tls_broker.https_url,
        "ca_cert": str(pki.ca),
        "client_cert": str(pki.client_cert),
        "client_key": str(pki.client_key),
    }
    path = tmp_path / "with-broker.yaml"
    path.write_text(
        "broker:\n"
        + "".join(f"  {key}: {json.dumps(value)}\n" for key, value in section.items())
        + f"vhosts:\n  {json.dumps(vhost_name)}:\n    queues:\n      tls.q: {{}}\n"
    )
    _apply_then_in_sync([], path, broker, vhost_name)
    # The section's client certificate really is what made it work: without it the broker refuses us.
    text = path.read_text()
    for key in ("client_cert", "client_key"):
        text = text.replace(f"  {key}: {json.dumps(section[key])}\n", "")
    assert "client_" not in text
    path.write_text(text)
    result = run_topo("plan", "-f", str(path), env=_env())
    _assert_clean_error(result)
    assert "certificate required" in result.stderr, result.output


@pytest.mark.parametrize("option", ["--ca-cert", "--insecure"])
def test_requests_ca_bundle_in_the_environment_does_not_override_the_options(
    tls_broker: TlsBroker, topology: Path, option: str
) -> None:
    """REQUESTS_CA_BUNDLE is common on corporate machines, and requests lets it beat a Session's `verify`.

    Whatever --ca-cert or --insecure says must still be what topo verifies the broker with (a regression
    test: before a9d21c8 both failed with "certificate verify failed").
    """
    bundle = "/etc/ssl/certs/ca-certificates.crt"
    if not Path(bundle).is_file():
        bundle = str(tls_broker.pki.other_ca)  # any CA bundle that does not trust the broker will do
    args = ["--url", tls_broker.https_url, *_client_args(tls_broker), option]
    if option == "--ca-cert":
        args.append(str(tls_broker.pki.ca))
    result = run_topo("plan", "-f", str(topology), *args, env=_env(REQUESTS_CA_BUNDLE=bundle))
    assert result.code == 0, result.output


def test_the_early_definitions_request_verifies_as_requests_does(tls_broker: TlsBroker) -> None:
    """topo.first_read sends the plan's first request over the standard library's HTTPS client: with the
    CA and the client certificate it gets the answer itself; trusting another CA, it gets nothing and the
    ManagementClient's own request fails verification as before."""
    from topo.client import ManagementClient
    from topo.connection import Connection
    from topo.errors import BrokerError
    from topo.first_read import EarlyDefinitions

    pki = tls_broker.pki
    cert = (str(pki.client_cert), str(pki.client_key))

    def connection(ca: Path) -> Connection:
        return Connection(url=tls_broker.https_url, user="guest", password="guest", verify=str(ca), client_cert=cert)

    trusted = EarlyDefinitions(connection(pki.ca), ["/"])
    answer = trusted.answer(ManagementClient(connection(pki.ca)))
    assert trusted.kept == 200
    assert answer is not None and "queues" in answer.json()
    untrusted = EarlyDefinitions(connection(pki.other_ca), ["/"])
    with pytest.raises(BrokerError, match="certificate verify failed"):
        untrusted.answer(ManagementClient(connection(pki.other_ca)))
    assert untrusted.kept is None
