"""The topology file's schema: strict pydantic models, also the source of the JSON Schema in schemas/.

RabbitMQ's management API silently ignores unknown keys, so these models are the only guard against a
typo like `durabel: true`: every model forbids extra keys and checks value types strictly.
"""

from __future__ import annotations

import re
from types import UnionType
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    JsonValue,
    Tag,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from topo.arguments import (
    BUILTIN_EXCHANGE_TYPES,
    HEADERS_MATCH,
    exchange_argument_problems,
    generic_argument_problems,
    queue_argument_problems,
)
from topo.connection import DEFAULT_TIMEOUT
from topo.passwords import hash_problem

ApplyTo = Literal["all", "queues", "exchanges", "classic_queues", "quorum_queues", "streams"]
QueueType = Literal["classic", "quorum", "stream"]
Arguments = dict[str, JsonValue]
# A shell-style name pattern (`ignore:`); an empty one would match nothing, and is a mistake.
IgnorePattern = Annotated[str, Field(min_length=1)]


class Spec(BaseModel):
    """Base for every model in the file: strict, closed, immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=False)

    @classmethod
    def describe(cls) -> str:
        return cls.__name__


def raise_argument_problems(problems: list[tuple[str, str]]) -> None:
    """One error carrying every bad argument, so each can be reported at its own line."""
    if problems:
        raise PydanticCustomError(
            "bad_arguments",
            "{summary}",
            {"summary": "; ".join(f"{name}: {reason}" for name, reason in problems), "problems": problems},
        )


class Managed(Spec):
    """An object topo declares: `absent: true` makes sure it does not exist instead."""

    absent: bool = Field(False, description="Make sure this object does not exist (delete it if it does).")

    @model_validator(mode="after")
    def _absent_stands_alone(self) -> Managed:
        if self.absent:
            others = sorted(self.model_fields_set - {"absent"})
            if others:
                raise ValueError(f"an object marked absent: true takes no other keys (found {', '.join(others)})")
        return self


class ExchangeSpec(Managed):
    """An exchange. Properties are immutable in RabbitMQ: changing one replaces the exchange."""

    type: str = Field("direct", description="direct, fanout, topic, headers, or a plugin type (x-...).")
    durable: bool = True
    auto_delete: bool = False
    internal: bool = False
    arguments: Arguments = Field(default_factory=dict, description="e.g. alternate-exchange.")
    external: bool = Field(False, description="Exists on the broker but is not managed here; bindings may refer to it.")

    @classmethod
    def describe(cls) -> str:
        return "an exchange"

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in BUILTIN_EXCHANGE_TYPES and not value.startswith("x-"):
            raise ValueError(
                f"unknown exchange type {value!r}; built-in types are {', '.join(BUILTIN_EXCHANGE_TYPES)}, "
                "plugin types start with x- (e.g. x-delayed-message, x-consistent-hash)"
            )
        return value

    @field_validator("arguments")
    @classmethod
    def _check_arguments(cls, arguments: dict[str, Any]) -> dict[str, Any]:
        raise_argument_problems(exchange_argument_problems(arguments))
        return arguments

    @model_validator(mode="after")
    def _external_stands_alone(self) -> ExchangeSpec:
        if self.external and len(self.model_fields_set - {"external"}) > 0:
            raise ValueError("an external exchange is not managed here: it takes no other keys")
        return self


class _QueueBase(Managed):
    arguments: Arguments = Field(default_factory=dict, description="x-arguments; the queue type sets which.")
    external: bool = Field(False, description="Exists on the broker but is not managed here; bindings may refer to it.")
    migrate: bool = Field(
        False,
        description="A replace (new type or arguments) moves the messages into the new queue while traffic flows, "
        "instead of refusing or losing them (as `topo apply --migrate` does for every queue); see docs/migrate.md.",
    )

    @field_validator("arguments")
    @classmethod
    def _check_arguments(cls, arguments: dict[str, Any]) -> dict[str, Any]:
        # A field validator, not a model one: it runs even when other keys of the queue are wrong.
        raise_argument_problems(queue_argument_problems(_tag_of(cls) or "classic", arguments))
        return arguments

    @model_validator(mode="after")
    def _external_stands_alone(self) -> _QueueBase:
        if self.external and len(self.model_fields_set - {"external", "type"}) > 0:
            raise ValueError("an external queue is not managed here: it takes no other keys")
        return self


class ClassicQueueSpec(_QueueBase):
    type: Literal["classic"] = "classic"
    durable: bool = True
    auto_delete: bool = False

    @classmethod
    def describe(cls) -> str:
        return "a classic queue"


class QuorumQueueSpec(_QueueBase):
    """Quorum queues are always durable and never auto-delete or exclusive."""

    type: Literal["quorum"]
    durable: Literal[True] = True

    @classmethod
    def describe(cls) -> str:
        return "a quorum queue (always durable, never auto_delete)"


class StreamQueueSpec(_QueueBase):
    """Streams are always durable and accept only the stream arguments."""

    type: Literal["stream"]
    durable: Literal[True] = True

    @classmethod
    def describe(cls) -> str:
        return "a stream (always durable, never auto_delete)"


def _queue_type_of(value: Any) -> str:
    if isinstance(value, dict):
        return value.get("type", "classic")
    return getattr(value, "type", "classic")


QueueSpec = Annotated[
    Annotated[ClassicQueueSpec, Tag("classic")]
    | Annotated[QuorumQueueSpec, Tag("quorum")]
    | Annotated[StreamQueueSpec, Tag("stream")],
    Discriminator(
        _queue_type_of,
        custom_error_type="invalid_queue_type",
        custom_error_message="queue type must be one of classic, quorum, stream",
    ),
]


class BindingSpec(Managed):
    """A binding from an exchange to a queue or to another exchange."""

    source: str = Field(description="The source exchange.")
    destination: str
    destination_type: Literal["queue", "exchange"] = "queue"
    routing_key: str = ""
    arguments: Arguments = Field(default_factory=dict, description="For headers exchanges: x-match and headers.")

    @classmethod
    def describe(cls) -> str:
        return "a binding"

    @field_validator("arguments")
    @classmethod
    def _check_arguments(cls, arguments: dict[str, Any]) -> dict[str, Any]:
        raise_argument_problems(generic_argument_problems(arguments))
        return arguments

    @model_validator(mode="after")
    def _check(self) -> BindingSpec:
        match = self.arguments.get("x-match")
        if match is not None and match not in HEADERS_MATCH:
            raise ValueError(f"x-match must be one of {', '.join(HEADERS_MATCH)}, got {match!r}")
        if self.source == "":
            raise ValueError("source: the default exchange cannot be bound explicitly")
        return self

    @model_validator(mode="after")
    def _absent_stands_alone(self) -> BindingSpec:
        # Overrides Managed's rule: a binding is identified by all its fields, so `absent` goes with them.
        return self


class PolicySpec(Managed):
    """A policy or operator policy: applies `definition` to objects whose name matches `pattern`."""

    pattern: str = Field("", description="A regular expression matched against object names.")
    apply_to: ApplyTo = Field("all", alias="apply-to")
    priority: int = 0
    definition: dict[str, JsonValue] = Field(default_factory=dict)

    @classmethod
    def describe(cls) -> str:
        return "a policy"

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"pattern {value!r} is not a valid regular expression: {exc}") from None
        return value

    @field_validator("definition")
    @classmethod
    def _check_definition(cls, definition: dict[str, Any]) -> dict[str, Any]:
        problems = generic_argument_problems(definition)
        if problems:
            raise ValueError("; ".join(f"{name} {problem}" for name, problem in problems))
        return definition

    @model_validator(mode="after")
    def _complete(self) -> PolicySpec:
        if not self.absent:
            missing = [k for k in ("pattern", "definition") if k not in self.model_fields_set]
            if missing:
                raise ValueError(f"a policy needs {' and '.join(missing)}")
            if not self.definition:
                raise ValueError("definition must not be empty")
        return self


class LimitsSpec(Spec):
    """Per-vhost limits; a negative value means no limit."""

    max_connections: int | None = Field(None, alias="max-connections", ge=-1)
    max_queues: int | None = Field(None, alias="max-queues", ge=-1)

    @classmethod
    def describe(cls) -> str:
        return "vhost limits"


def _compile(value: str | None, what: str) -> str | None:
    if value is not None:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"{what} {value!r} is not a valid regular expression: {exc}") from None
    return value


class PermissionSpec(Managed):
    """What a user may do in a vhost: regular expressions over resource names ("" = nothing)."""

    configure: str | None = None
    write: str | None = None
    read: str | None = None

    @classmethod
    def describe(cls) -> str:
        return "a permission"

    @field_validator("configure", "write", "read")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        return _compile(value, "pattern")

    @model_validator(mode="after")
    def _complete(self) -> PermissionSpec:
        missing = [k for k in ("configure", "write", "read") if getattr(self, k) is None]
        if not self.absent and missing:
            raise ValueError(f"a permission needs configure, write and read (missing: {', '.join(missing)})")
        return self


class TopicPermissionSpec(Managed):
    """What a user may publish (write) and consume (read) through a topic exchange, by routing key."""

    write: str | None = None
    read: str | None = None

    @classmethod
    def describe(cls) -> str:
        return "a topic permission"

    @field_validator("write", "read")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        return _compile(value, "pattern")

    @model_validator(mode="after")
    def _complete(self) -> TopicPermissionSpec:
        missing = [k for k in ("write", "read") if getattr(self, k) is None]
        if not self.absent and missing:
            raise ValueError(f"a topic permission needs write and read (missing: {', '.join(missing)})")
        return self


SHOVEL_KEYS = (
    "src-protocol", "src-uri", "src-queue", "src-exchange", "src-exchange-key", "src-prefetch-count",
    "src-delete-after", "src-consumer-args", "src-address",
    "dest-protocol", "dest-uri", "dest-queue", "dest-queue-args", "dest-exchange", "dest-exchange-key",
    "dest-add-forward-headers", "dest-add-timestamp-header", "dest-publish-properties", "dest-address",
    "dest-properties", "dest-application-properties", "dest-message-annotations",
    "ack-mode", "reconnect-delay",
    # Pre-3.7 names, still accepted by the plugin.
    "add-forward-headers", "add-timestamp-header", "publish-properties", "publish-fields", "delete-after",
    "prefetch-count",
)  # fmt: skip
FEDERATION_UPSTREAM_KEYS = (
    "uri", "prefetch-count", "reconnect-delay", "ack-mode", "trust-user-id", "exchange", "max-hops", "expires",
    "message-ttl", "ha-policy", "queue", "consumer-tag", "resource-cleanup-mode", "bind-nowait",
    "channel-use-mode",
)  # fmt: skip


class _ParameterSpec(Managed):
    """A runtime parameter of a plugin: its keys are the plugin's own, written as the broker stores them."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)
    KEYS: ClassVar[tuple[str, ...]] = ()
    REQUIRED: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="after")
    def _known_keys(self) -> _ParameterSpec:
        extra = self.model_extra or {}
        unknown = [key for key in extra if key not in self.KEYS]
        if unknown:
            raise ValueError(f"unknown key {unknown[0]!r}; allowed: absent, {', '.join(self.KEYS)}")
        problems = generic_argument_problems(extra)
        if problems:
            raise ValueError("; ".join(f"{name} {problem}" for name, problem in problems))
        missing = [key for key in self.REQUIRED if key not in extra]
        if not self.absent and missing:
            raise ValueError(f"{self.describe()} needs {' and '.join(missing)}")
        return self

    def value(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class ShovelSpec(_ParameterSpec):
    """A dynamic shovel (rabbitmq_shovel plugin): moves messages from a source to a destination."""

    KEYS: ClassVar[tuple[str, ...]] = SHOVEL_KEYS
    REQUIRED: ClassVar[tuple[str, ...]] = ("src-uri", "dest-uri")

    @classmethod
    def describe(cls) -> str:
        return "a shovel"


class FederationUpstreamSpec(_ParameterSpec):
    """A federation upstream (rabbitmq_federation plugin): a broker to federate exchanges or queues from."""

    KEYS: ClassVar[tuple[str, ...]] = FEDERATION_UPSTREAM_KEYS
    REQUIRED: ClassVar[tuple[str, ...]] = ("uri",)

    @classmethod
    def describe(cls) -> str:
        return "a federation upstream"


class FederationUpstreamSetSpec(Managed):
    """A named set of federation upstreams, for a policy's federation-upstream-set."""

    upstreams: list[dict[str, JsonValue]] = Field(
        default_factory=list, description="Entries like {upstream: name}, with optional per-upstream overrides."
    )

    @classmethod
    def describe(cls) -> str:
        return "a federation upstream set"

    @model_validator(mode="after")
    def _named(self) -> FederationUpstreamSetSpec:
        for entry in self.upstreams:
            if not isinstance(entry.get("upstream"), str):
                raise ValueError("each entry of upstreams needs upstream: <name of a federation upstream>")
        if not self.absent and not self.upstreams:
            raise ValueError("a federation upstream set needs upstreams")
        return self


def _with_type(spec: Any, default: str) -> Any:
    # Absent and external queues are only names: a type would be one key too many for them.
    if not isinstance(spec, dict) or "type" in spec or spec.get("absent") or spec.get("external"):
        return spec
    return {"type": default, **spec}


class VhostSpec(Spec):
    """A virtual host and everything declared in it. Metadata keys left out are not managed."""

    description: str = ""
    tags: list[str] = Field(default_factory=list)
    tracing: bool = False
    default_queue_type: QueueType | None = Field(
        None, description="Queue type for queues declared without one (RabbitMQ 3.11+ stores it on the vhost)."
    )
    protected_from_deletion: bool = Field(
        False, description="Refuse to delete this vhost (RabbitMQ 4.0.6+; managed only when set)."
    )
    absent: bool = Field(False, description="Delete this vhost and everything in it (needs --allow-data-loss).")
    prune: bool | None = Field(
        None, description="Delete objects in this vhost that the files do not declare (default: top-level prune)."
    )
    prune_non_durable: bool = Field(
        False,
        description="With prune, also delete undeclared non-durable queues and exchanges (left alone by default: "
        "applications declare them for themselves).",
    )
    ignore: list[IgnorePattern] = Field(
        default_factory=list,
        description="Name patterns (* ? [...]) of exchanges, queues, bindings (either end), policies, shovels and "
        "federation upstreams that topo never touches nor reports in this vhost.",
    )
    limits: LimitsSpec | None = None
    exchanges: dict[str, ExchangeSpec] = Field(default_factory=dict)
    queues: dict[str, QueueSpec] = Field(default_factory=dict)
    bindings: list[BindingSpec] = Field(default_factory=list)
    policies: dict[str, PolicySpec] = Field(default_factory=dict)
    operator_policies: dict[str, PolicySpec] = Field(default_factory=dict)
    shovels: dict[str, ShovelSpec] = Field(default_factory=dict, description="Dynamic shovels (rabbitmq_shovel).")
    federation_upstreams: dict[str, FederationUpstreamSpec] = Field(
        default_factory=dict, description="Federation upstreams (rabbitmq_federation)."
    )
    federation_upstream_sets: dict[str, FederationUpstreamSetSpec] = Field(default_factory=dict)
    permissions: dict[str, PermissionSpec] | None = Field(
        None, description="By user. Present (even {}) = topo manages this vhost's permissions."
    )
    topic_permissions: dict[str, dict[str, TopicPermissionSpec]] | None = Field(
        None, description="By user, then exchange. Present (even {}) = managed."
    )

    @classmethod
    def describe(cls) -> str:
        return "a vhost"

    @field_validator("tags")
    @classmethod
    def _tags_without_commas(cls, tags: list[str]) -> list[str]:
        # The management API joins and splits tags on commas: a comma inside a tag cannot survive.
        bad = [tag for tag in tags if "," in tag]
        if bad:
            raise ValueError(f"tags cannot contain commas: {bad}")
        return tags

    @model_validator(mode="before")
    @classmethod
    def _queue_type_default(cls, data: Any) -> Any:
        # A queue without `type` takes the vhost's default_queue_type, as the broker would.
        if isinstance(data, dict) and isinstance(data.get("default_queue_type"), str):
            default = data["default_queue_type"]
            queues = data.get("queues")
            if isinstance(queues, dict):
                filled = {name: _with_type(spec, default) for name, spec in queues.items()}
                data = {**data, "queues": filled}
        return data

    @model_validator(mode="after")
    def _absent_stands_alone(self) -> VhostSpec:
        if self.absent:
            others = sorted(self.model_fields_set - {"absent"})
            if others:
                raise ValueError(f"a vhost marked absent: true takes no other keys (found {', '.join(others)})")
        return self


USER_TAGS = ("administrator", "monitoring", "policymaker", "management", "impersonator")
HashingAlgorithm = Literal[
    "rabbit_password_hashing_sha256", "rabbit_password_hashing_sha512", "rabbit_password_hashing_md5"
]


class UserLimitsSpec(Spec):
    """Per-user limits; -1 removes a limit."""

    max_connections: int | None = Field(None, alias="max-connections", ge=-1)
    max_channels: int | None = Field(None, alias="max-channels", ge=-1)

    @classmethod
    def describe(cls) -> str:
        return "user limits"


class UserSpec(Managed):
    """A user. Without password or password_hash the user has no password (certificate/external auth)."""

    password: str | None = Field(None, description="Plaintext; use ${VARIABLE}. Never printed, never sent.")
    password_hash: str | None = Field(None, description="As exported by RabbitMQ (base64 of salt + digest).")
    hashing_algorithm: HashingAlgorithm = "rabbit_password_hashing_sha256"
    tags: list[str] = Field(default_factory=list)
    limits: UserLimitsSpec | None = None

    @classmethod
    def describe(cls) -> str:
        return "a user"

    @field_validator("tags")
    @classmethod
    def _known_tags(cls, tags: list[str]) -> list[str]:
        # RabbitMQ stores any tag (plugins and auth backends read custom ones); a tag that looks like a
        # misspelt built-in one gets a warning (see load.py), since `adminstrator` grants nothing.
        for tag in tags:
            if "," in tag or not tag.strip():
                raise ValueError(f"tag {tag!r} must be a non-empty word without commas")
        return tags

    @model_validator(mode="after")
    def _one_password(self) -> UserSpec:
        if self.password is not None and self.password_hash is not None:
            raise ValueError("give password or password_hash, not both")
        if self.password_hash is not None:
            problem = hash_problem(self.password_hash, self.hashing_algorithm)
            if problem:
                raise ValueError(f"password_hash {problem}")
        return self


class GlobalParameterSpec(Managed):
    """A broker-wide runtime parameter, e.g. cluster_name or mqtt_port_to_vhost_mapping."""

    value: JsonValue = Field(None, description="The parameter's value, as the broker stores it (any JSON value).")

    @classmethod
    def describe(cls) -> str:
        return "a global parameter"

    @model_validator(mode="after")
    def _complete(self) -> GlobalParameterSpec:
        if not self.absent and "value" not in self.model_fields_set:
            raise ValueError("a global parameter needs value")
        return self


class BrokerSpec(Spec):
    """How to reach the management API. Command-line options and TOPO_* variables take precedence."""

    url: str | None = Field(None, description="http(s)://host:port of the management API, or an amqp(s):// URL.")
    user: str | None = None
    password: str | None = Field(None, description="Use ${VARIABLE} so the file holds no secret.")
    ca_cert: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    insecure: bool = False
    timeout: float | int = Field(DEFAULT_TIMEOUT, gt=0, le=3600, description="Seconds to wait for each request.")

    @classmethod
    def describe(cls) -> str:
        return "the broker section"


class Topology(Spec):
    """One topology file. Several files are merged; an object may be declared in one file only."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        json_schema_extra={"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "topo topology"},
    )

    version: Literal[1] = 1
    broker: BrokerSpec | None = None
    prune: bool = Field(False, description="Delete undeclared objects in every managed vhost.")
    ignore: list[IgnorePattern] = Field(
        default_factory=list, description="Name patterns that topo never touches nor reports, in every vhost."
    )
    vhosts: dict[str, VhostSpec] = Field(default_factory=dict)
    users: dict[str, UserSpec] = Field(default_factory=dict)
    global_parameters: dict[str, GlobalParameterSpec] = Field(
        default_factory=dict,
        description="Broker-wide runtime parameters (cluster_name, mqtt_port_to_vhost_mapping...). Only those "
        "declared are managed; internal_cluster_id is the broker's own.",
    )

    @classmethod
    def describe(cls) -> str:
        return "the top level"


def _unwrap(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def model_at(loc: tuple[Any, ...], root: type[BaseModel] | None = None) -> type[Spec] | None:
    """The model class that validates the mapping at `loc` (pydantic's error location), if any.

    Used to say which keys are allowed where an unknown key was found.
    """
    current: Any = root or Topology
    for element in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = next((f for name, f in current.model_fields.items() if element in (name, f.alias)), None)
            if field is None:
                return None
            current = field.annotation
            continue
        origin = get_origin(current)
        if origin in (Union, UnionType):
            members = [_unwrap(m) for m in get_args(current) if m is not type(None)]
            tagged = [m for m in members if isinstance(m, type) and element == _tag_of(m)]
            if tagged:
                current = tagged[0]
                continue
            if len(members) == 1:
                current = _descend(members[0])
                continue
            return None
        current = _descend(current)
    current = _unwrap(current)
    if get_origin(current) in (Union, UnionType):
        members = [m for m in get_args(current) if m is not type(None)]
        current = _unwrap(members[0]) if len(members) == 1 else None
    return current if isinstance(current, type) and issubclass(current, Spec) else None


def _descend(container: Any) -> Any:
    """dict[str, X] and list[X] take one location element (the key or index) to reach X."""
    args = get_args(_unwrap(container))
    return args[-1] if args else None


def _tag_of(model: type) -> str | None:
    field = getattr(model, "model_fields", {}).get("type")
    if field is not None and get_origin(field.annotation) is Literal:
        return get_args(field.annotation)[0]
    return None


def allowed_keys(model: type[Spec]) -> list[str]:
    return [field.alias or name for name, field in model.model_fields.items()]


def json_schema() -> dict[str, Any]:
    return Topology.model_json_schema(by_alias=True)
