"""The connection options every command that talks to a broker takes, and the one way to build its client.

Typer reads options from a function's signature, so `@connection_options` writes the shared ones into
the signature of each command that asks for a `connection: ConnectionOptions` parameter: one list of
options (help, env names, limits) and one client factory, instead of a copy in every command.
"""

from __future__ import annotations

import functools
import inspect
import os
import typing
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

if TYPE_CHECKING:  # imported where used: every command imports this module, even `topo version`
    from topo.client import ManagementClient
    from topo.connection import Connection
    from topo.model import BrokerSpec

Url = Annotated[
    str | None,
    typer.Option(
        metavar="URL",
        help="Management API URL (http(s)://host:port) or amqp(s)://user:pass@host/vhost. "
        "Env: TOPO_URL. Default: http://localhost:15672.",
    ),
]
User = Annotated[str | None, typer.Option(metavar="USER", help="Management user. Env: TOPO_USER. Default: guest.")]
Password = Annotated[
    str | None,
    typer.Option(
        metavar="PASSWORD",
        help="Password (visible to other users: prefer the variable). Env: TOPO_PASSWORD.",
        show_default=False,
    ),
]
CaCert = Annotated[
    str | None,
    typer.Option("--ca-cert", metavar="PEM", help="CA bundle to verify the broker's certificate. Env: TOPO_CA_CERT."),
]
ClientCert = Annotated[
    str | None, typer.Option("--client-cert", metavar="PEM", help="Client certificate. Env: TOPO_CLIENT_CERT.")
]
ClientKey = Annotated[
    str | None, typer.Option("--client-key", metavar="PEM", help="Client certificate key. Env: TOPO_CLIENT_KEY.")
]
Insecure = Annotated[bool, typer.Option("--insecure", help="Do not verify the broker's TLS certificate.")]
Timeout = Annotated[
    float | None,
    typer.Option(min=0.1, max=3600, metavar="SECONDS", help="Seconds to wait for each request. Default: 30."),
]
RestartWait = Annotated[
    float | None,
    typer.Option(
        "--restart-wait",
        min=0,
        max=3600,
        metavar="SECONDS",
        help="How long to wait for a broker that stops answering (restarting). Env: TOPO_RESTART_WAIT. Default: 120.",
    ),
]


@dataclass(frozen=True)
class ConnectionOptions:
    url: str | None
    user: str | None
    password: str | None = field(repr=False)
    ca_cert: str | None
    client_cert: str | None
    client_key: str | None
    insecure: bool
    timeout: float | None
    restart_wait: float | None = None


# What a command declares its `options` parameter's default: every option unset (typer never passes it).
UNSET = ConnectionOptions(None, None, None, None, None, None, False, None)

# The parameters @connection_options adds, in ConnectionOptions' order: (name, annotation, default).
_PARAMETERS: tuple[tuple[str, Any, Any], ...] = (
    ("url", Url, None),
    ("user", User, None),
    ("password", Password, None),
    ("ca_cert", CaCert, None),
    ("client_cert", ClientCert, None),
    ("client_key", ClientKey, None),
    ("insecure", Insecure, False),
    ("timeout", Timeout, None),
    ("restart_wait", RestartWait, None),
)

Command = TypeVar("Command", bound=Callable[..., Any])


def connection_options(command: Command) -> Command:
    """Gives `command` the shared connection options in place of its `options: ConnectionOptions` parameter."""
    signature = inspect.signature(command)
    hints = typing.get_type_hints(command, include_extras=True)
    parameters: list[inspect.Parameter] = []
    for parameter in signature.parameters.values():
        if parameter.name != "options":
            parameters.append(parameter.replace(annotation=hints.get(parameter.name, parameter.annotation)))
            continue
        for name, annotation, default in _PARAMETERS:
            parameters.append(inspect.Parameter(name, parameter.kind, default=default, annotation=annotation))
    if len(parameters) == len(signature.parameters):
        raise TypeError(f"{command.__name__} has no `options` parameter")

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        values = {name: kwargs.pop(name, default) for name, _, default in _PARAMETERS}
        return command(*args, options=ConnectionOptions(**values), **kwargs)

    wrapper.__signature__ = signature.replace(parameters=parameters, return_annotation=None)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
    return typing.cast(Command, wrapper)


def connect(
    options: ConnectionOptions,
    broker: BrokerSpec | None = None,
    notify: Callable[[str], None] | None = None,
) -> ManagementClient:
    """The client for `options` (then TOPO_* variables, then the files' broker: section), as every command builds it.

    `notify` hears what the client has to say while it works (retries, waiting for a restarting broker)
    and the warning that TLS is not verified.
    """
    from topo.client import ManagementClient

    connection = resolve(options, broker)
    if notify is not None and connection.verify is False and connection.url.startswith("https:"):
        notify(f"Warning: not verifying the TLS certificate of {connection.url} (--insecure)")
    return ManagementClient(connection, notify=notify)


def resolve(options: ConnectionOptions, broker: BrokerSpec | None = None) -> Connection:
    from topo.connection import resolve_connection

    return resolve_connection(env=os.environ, broker=broker, **asdict(options))
