"""Lint inputs: the desired state from files, or the actual state of a live broker, and the target version.

Only here does lint touch the loader and the broker reader; rules see a LintInput and nothing else.
"""

from __future__ import annotations

from topo.client import ManagementClient
from topo.compat import NEWEST_KNOWN, Version, parse_version
from topo.errors import TopoError
from topo.lint.core import LintInput
from topo.load import Loaded
from topo.read import read_for_export

# /api/deprecated-features/used exists from 3.13 (rabbitmq_management's dispatcher at v3.13.0).
DEPRECATED_FEATURES_API = (3, 13, 0)


def target_version(given: str | None, broker: Version | None = None) -> Version:
    """--target-version, or by default the newest RabbitMQ topo knows (the broker's own when it is newer).

    An upgrade goes to a current release, and a current release is what refuses what older ones only
    deprecated; so that is the question lint answers unless told otherwise.
    """
    if given is not None:
        try:
            return parse_version(given)
        except ValueError as exc:
            raise TopoError(f"--target-version: {exc}") from None
    if broker is not None and broker > NEWEST_KNOWN:
        return broker
    return NEWEST_KNOWN


def from_files(loaded: Loaded, target: str | None) -> LintInput:
    desired = loaded.desired
    return LintInput(objects=desired.objects, target=target_version(target), locations=desired.locations)


def from_broker(client: ManagementClient, vhosts: list[str] | None, target: str | None) -> tuple[LintInput, list[str]]:
    """The broker's state (all the vhosts it shows, or `vhosts`), with notes on what could not be read."""
    actual, _, _, notes = read_for_export(client, vhosts, with_users=False)
    try:
        version: Version | None = parse_version(actual.version)
    except ValueError:
        version = None
        notes.append(f"the broker reports no version topo can read ({actual.version!r})")
    # Read once with the state (topo.capabilities), like everything else that depends on the broker.
    used = actual.capabilities.deprecated_features_used
    if version is not None and version < DEPRECATED_FEATURES_API:
        notes.append(f"RabbitMQ {actual.version} cannot report the deprecated features it uses (3.13+ can)")
        used = None
    elif version is not None and used is None:
        notes.append("deprecated features in use not checked: GET /api/deprecated-features/used was refused")
    lint_input = LintInput(
        objects=actual.objects,
        target=target_version(target, version),
        live=True,
        broker_version=version,
        deprecated_used=list(used) if used is not None else None,
    )
    return lint_input, notes
