"""Issue 16: plans you can trust. Messages, hints and the CLI, offline and against the real node."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
import requests

from broker_api import Api
from cli_runner import broker_env, run_topo
from topo.diff import Action, Change
from topo.errors import ConfigError, ValidationFailed
from topo.load import load_topology
from topo.passwords import Password
from topo.plan import Held, Plan
from topo.render import render_text
from topo.state import Key, Kind

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str, name: str = "topology.yaml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return str(path)


# ---- offline --------------------------------------------------------------------------------------


def test_schema_errors_do_not_hide_reference_errors_elsewhere(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        vhosts:
          v:
            queues:
              broken: {durabel: true}
              fine: {}
            exchanges:
              e: {type: fanoutt}
            bindings:
              - {source: e, destination: broken}
              - {source: e, destination: fine, bogus: 1}
              - {source: e, destination: missing}
        """,
    )
    with pytest.raises(ValidationFailed) as caught:
        load_topology([path], env={})
    text = str(caught.value)
    assert "unknown key 'durabel'" in text and "unknown exchange type 'fanoutt'" in text
    assert "vhosts.v.bindings[1].bogus" in text
    # Found although other objects failed their schema; a binding to a broken object is not an error.
    assert "vhosts.v.bindings[2].destination: destination queue 'missing' is not declared" in text
    assert "'broken' is not declared" not in text and "source exchange 'e'" not in text
    assert text.startswith("4 problems")


def test_validate_prints_warnings_even_when_it_finds_problems(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        vhosts:
          v:
            queues:
              q: {arguments: {x-dead-letter-exchange: nope, x-max-lenght: 5}}
              r: {durabel: true}
        users:
          bob: {tags: [adminstrator]}
        """,
    )
    result = run_topo("validate", "-f", path)
    assert result.code == 1
    assert "dead-letters to exchange 'nope'" in result.stderr
    assert "has tag 'adminstrator'" in result.stderr
    assert "argument 'x-max-lenght', which RabbitMQ does not know (did you mean 'x-max-length'?)" in result.stderr


def test_unknown_arguments_and_topic_permissions_on_other_exchange_types_are_warned_about(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        vhosts:
          v:
            exchanges:
              direct-one: {arguments: {alternat-exchange: ae, hash-header: h}}
            queues:
              q: {arguments: {max-length: 5, x-custom: 1, plain: 2}}
            topic_permissions:
              bob:
                direct-one: {write: ".*", read: ".*"}
        """,
    )
    warnings = load_topology([path], env={}).desired.warnings
    text = "\n".join(warnings)
    assert "argument 'max-length', which RabbitMQ does not know (did you mean 'x-max-length'?)" in text
    assert "argument 'x-custom', which RabbitMQ does not know (a plugin may read it)" in text
    assert "'alternat-exchange', which RabbitMQ does not know (did you mean 'alternate-exchange'?)" in text
    assert "'plain'" not in text and "'hash-header'" not in text  # may be a plugin's: no noise
    assert "which is a direct exchange: RabbitMQ applies topic permissions to topic exchanges only" in text
    assert len(warnings) == 4


@pytest.mark.parametrize("value", ["12345678", "true", "0x1F", "1e3", "null", "~"])
def test_a_password_variable_that_looks_like_a_number_stays_text(tmp_path: Path, value: str) -> None:
    text = "users:\n  a: {tags: []}\n  b:\n    password: ${PW}\nbroker:\n  user: ${PW}\n  password: ${PW}\n"
    loaded = load_topology([write(tmp_path, text)], env={"PW": value})
    password = loaded.desired.objects[Key(Kind.USER, "", "b")].attrs["password"]
    assert password.plaintext == value
    assert loaded.broker is not None and loaded.broker.password == value and loaded.broker.user == value


def test_a_literal_number_as_password_says_to_quote_it(tmp_path: Path) -> None:
    result = run_topo("validate", "-f", write(tmp_path, "users:\n  a: {password: 12345678}\n"))
    assert result.code == 1 and "quote it" in result.stderr and "12345678" not in result.stderr


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("vhosts:\n  v:\n\tqueues: {}\n", "YAML indents with spaces only"),
        ("users:\n  a: {password: ${PW}}\n", 'quote it: "${VARIABLE}"'),
    ],
)
def test_yaml_syntax_errors_say_what_fixes_them(tmp_path: Path, text: str, hint: str) -> None:
    result = run_topo("validate", "-f", write(tmp_path, text), env={"PW": "x"})
    assert result.code == 1 and "YAML syntax error" in result.stderr and hint in result.stderr, result.stderr


def test_a_url_without_scheme_says_so() -> None:
    from topo.connection import resolve_connection

    with pytest.raises(ConfigError, match="URL without scheme: start it with http:// or https://"):
        resolve_connection(url="localhost:15672", user=None, password=None, env={}, broker=None)


def _user_change(password: Password) -> Change:
    after = {"tags": [], "password": password}
    return Change(Action.CREATE, Key(Kind.USER, "", "cert-user"), None, after)


def test_users_are_not_grouped_under_an_empty_vhost_and_no_password_is_not_sensitive() -> None:
    text = render_text(Plan([_user_change(Password(""))]))
    assert "users:" in text and 'vhost "":' not in text
    assert "password = (none: no password login)" in text and "(sensitive value)" not in text
    assert "password = (sensitive value)" in render_text(Plan([_user_change(Password("", plaintext="s3cret"))]))


def test_the_data_loss_line_says_whether_the_flag_was_given() -> None:
    change = Change(Action.DELETE, Key(Kind.QUEUE, "v", "q"), {"type": "classic"}, None, "declared absent")
    plan = Plan((change,), held={change.key: Held(3)})
    assert "(apply needs --allow-data-loss)" in render_text(plan)
    text = render_text(plan, allow_data_loss=True)
    assert "(allowed by --allow-data-loss)" in text and "apply needs" not in text


# ---- --help and the README --------------------------------------------------------------------------


def test_help_is_plain_complete_and_names_the_variables() -> None:
    top = run_topo("-h")
    assert top.code == 0 and "Usage: topo" in top.stdout and "..." not in top.stdout.split("Commands:")[1]
    assert run_topo("--version").stdout.startswith("topo ")
    text = run_topo("plan", "--help").stdout
    assert "-f, --file PATH" in text
    for variable in ("TOPO_URL", "TOPO_USER", "TOPO_PASSWORD", "TOPO_CA_CERT", "TOPO_CLIENT_CERT", "TOPO_CLIENT_KEY"):
        assert variable in text
    for command in COMMANDS:
        text = run_topo(command, "--help").stdout
        # Python types (<bool>, <str>, <list[str]>, <float range>) are not what a user types; names are.
        assert not re.search(r"<(bool|str|int|float|list)|range>|\[\[", text), (command, text)
        assert "…" not in text, (command, text)


COMMANDS = ["validate", "plan", "apply", "export", "lint", "route", "test", "graph", "explain", "schema", "version"]


CONNECTION = {
    "--url", "--user", "--password", "--ca-cert", "--client-cert", "--client-key", "--insecure", "--timeout",
    "--restart-wait",
}  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS)
def test_the_readme_command_reference_matches_help(command: str) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = [line for line in readme.splitlines() if line.startswith((f"| `topo {command} ", f"| `topo {command}`"))]
    pattern = r"(?<![\w-])--[a-z-]+|(?<![\w-])-[a-z]\b"
    documented = {flag for row in rows for flag in re.findall(pattern, row.split("` |")[0])}
    # The options themselves: the start of each option line (descriptions may mention other commands' flags).
    heads = [
        line.strip().split("  ")[0]
        for line in run_topo(command, "--help").stdout.splitlines()
        if re.match(r"\s+-", line)
    ]
    shown = {flag for head in heads for flag in re.findall(pattern, head)}
    shown -= {"--help", "-h", "--no-color", *CONNECTION}
    assert documented == shown
    if command in ("plan", "apply", "export"):
        table = readme.split("| option | variable | default |")[1].split("\n\n")[0]
        assert set(re.findall(r"--[a-z-]+", table)) >= CONNECTION


# ---- against the node ---------------------------------------------------------------------------------


@pytest.fixture
def topo(broker: Any, tmp_path: Path):
    def run(*args: str, topology: str | None = None, env: dict[str, str | None] | None = None):
        path = tmp_path / "topology.yaml"
        if topology is not None:
            path.write_text(textwrap.dedent(topology), encoding="utf-8")
        return run_topo(*args, "-f", str(path), env={**broker_env(broker), **(env or {})})

    return run


def test_connection_mistakes_get_the_hint_that_fixes_them(topo, broker: Any, vhost_name: str) -> None:
    topology = f"vhosts:\n  {vhost_name}: {{}}\n"
    https = topo("plan", topology=topology, env={"TOPO_URL": broker.url.replace("http://", "https://")})
    assert https.code == 1 and "use http:// for it" in https.stderr, https.output
    path = topo("plan", env={"TOPO_URL": broker.url + "/rabbit"})
    assert path.code == 1 and "does not look like the management API's base URL" in path.stderr, path.output
    login = topo("plan", env={"TOPO_PASSWORD": "Wrong-Pw-4711"})
    assert login.code == 1 and f"Login failed for user {broker.user!r}" in login.stderr
    assert "password from the TOPO_PASSWORD variable" in login.stderr and "Wrong-Pw-4711" not in login.output


def test_drift_checks_can_fail_on_unmanaged_objects(topo, api: Api, vhost_name: str) -> None:
    topology = f"vhosts:\n  {vhost_name}:\n    queues: {{jobs: {{}}}}\n"
    assert topo("apply", "--auto-approve", topology=topology).code == 0
    api.put({"durable": True}, "queues", vhost_name, "hand-made")
    plain = topo("plan", "--detailed-exitcode")
    assert plain.code == 0 and "1 unmanaged object left alone" in plain.stdout, plain.output
    strict = topo("plan", "--detailed-exitcode", "--fail-on-unmanaged")
    assert strict.code == 2 and "hand-made" in strict.stdout
    assert topo("plan", "--fail-on-unmanaged").code == 1


def test_a_vhost_delete_says_what_it_destroys(topo, api: Api, vhost_name: str) -> None:
    topology = f"""
    vhosts:
      {vhost_name}:
        exchanges: {{orders: {{type: topic}}}}
        queues: {{a: {{}}, b: {{}}, c: {{}}}}
        bindings:
          - {{source: orders, destination: a}}
    """
    result = topo("apply", "--auto-approve", topology=topology)
    assert result.code == 0 and "(6 steps)" in result.stderr, result.output
    api.publish(vhost_name, "a", 2)
    plan = topo("plan", topology=f"vhosts:\n  {vhost_name}: {{absent: true}}\n")
    assert "destroys everything in it: 3 queues, 1 binding, 1 exchange" in plan.stdout, plan.output
    assert "holds 2 messages" in plan.stdout and f"delete vhost {vhost_name!r} in vhost" not in plan.output
    applied = topo("apply", "--auto-approve", "--allow-data-loss")
    assert applied.code == 0 and "(allowed by --allow-data-loss)" in applied.stdout
    assert "(1 step)" in applied.stderr, applied.output


def test_removing_default_queue_type_says_why_queues_are_replaced(topo, vhost_name: str) -> None:
    typed = f"vhosts:\n  {vhost_name}:\n    default_queue_type: quorum\n    queues: {{jobs: {{}}}}\n"
    assert topo("apply", "--auto-approve", topology=typed).code == 0
    plan = topo("plan", topology=f"vhosts:\n  {vhost_name}:\n    queues: {{jobs: {{}}}}\n")
    assert "-/+ queue" in plan.stdout
    assert "declared without type, and its vhost sets no default_queue_type (any more), so it is classic" in plan.stdout


def test_a_non_administrator_declaring_users_is_refused_before_any_request_fails(
    topo, api: Api, vhost_name: str
) -> None:
    user = f"{vhost_name}-mgmt"
    api.put({}, "vhosts", vhost_name)
    api.put({"password": "mgmt-Pw-123", "tags": "management"}, "users", user)
    api.put({"configure": ".*", "write": ".*", "read": ".*"}, "permissions", vhost_name, user)
    try:
        topology = f"users:\n  someone: {{tags: []}}\nvhosts:\n  {vhost_name}:\n    permissions: {{}}\n"
        result = topo("plan", topology=topology, env={"TOPO_USER": user, "TOPO_PASSWORD": "mgmt-Pw-123"})
        assert result.code == 1 and "may not manage users and permissions" in result.stderr, result.output
        assert "needs the administrator tag" in result.stderr and "HTTP" not in result.stderr
    finally:
        api.delete("users", user)


def test_changing_the_connected_users_own_password_is_applied_last_and_verified(
    topo, api: Api, broker: Any, vhost_name: str
) -> None:
    me = f"{vhost_name}-self"
    api.put({"password": "Old-Pw-1234", "tags": "administrator"}, "users", me)
    topology = f"""
    users:
      {me}: {{password: "${{NEW_PW}}", tags: [administrator]}}
    vhosts:
      {vhost_name}:
        queues: {{jobs: {{}}}}
        permissions:
          {me}: {{configure: ".*", write: ".*", read: ".*"}}
    """
    env = {"TOPO_USER": me, "TOPO_PASSWORD": "Old-Pw-1234", "NEW_PW": "New-Pw-5678"}
    try:
        result = topo("apply", "--auto-approve", topology=topology, env=env)
        assert result.code == 0, result.output
        assert "the old password no longer works (topo verified with the new one)" in result.stderr
        assert "New-Pw-5678" not in result.output and "Old-Pw-1234" not in result.output

        def logs_in(password: str) -> bool:
            return requests.get(broker.url + "/api/whoami", auth=(me, password), timeout=30).status_code == 200

        assert logs_in("New-Pw-5678") and not logs_in("Old-Pw-1234")
        again = topo("plan", "--detailed-exitcode", env={**env, "TOPO_PASSWORD": "New-Pw-5678"})
        assert again.code == 0, again.output
    finally:
        api.delete("users", me)


def test_changing_the_own_password_to_a_hash_says_it_could_not_verify(
    topo, api: Api, broker: Any, vhost_name: str
) -> None:
    from topo.passwords import hash_password

    me = f"{vhost_name}-hash"
    api.put({"password": "Old-Pw-1234", "tags": "administrator"}, "users", me)
    topology = f"users:\n  {me}: {{password_hash: {hash_password('Hashed-Pw-9')}, tags: [administrator]}}\n"
    try:
        result = topo(
            "apply", "--auto-approve", topology=topology, env={"TOPO_USER": me, "TOPO_PASSWORD": "Old-Pw-1234"}
        )
        assert result.code == 0, result.output
        assert "Verified: not verified." in result.stderr and "the old password no longer works" in result.stderr
        response = requests.get(broker.url + "/api/whoami", auth=(me, "Hashed-Pw-9"), timeout=30)
        assert response.status_code == 200
    finally:
        api.delete("users", me)


def test_a_topic_permission_on_an_exchange_that_exists_nowhere_is_refused_where_the_broker_refuses_it(
    topo, broker: Any, api: Api, vhost_name: str, rabbitmq_version: tuple[int, int]
) -> None:
    # 3.10 stores it (applications may declare the exchange later): the plan warns, naming a near miss.
    # 4.x refuses it (400 no_such_exchange): the plan refuses it before any change.
    topology = f"""
    vhosts:
      {vhost_name}:
        exchanges: {{events: {{type: topic}}}}
        topic_permissions:
          {broker.user}:
            evnets: {{write: ".*", read: ".*"}}
            "": {{write: ".*", read: ".*"}}
    """
    assert topo("validate", topology=topology).code == 0  # whether it exists only the broker knows
    plan = topo("plan", topology=topology)
    nowhere = "on exchange 'evnets', which exists neither in the files nor on the broker"
    if rabbitmq_version >= (4, 1):
        assert plan.code == 1 and nowhere in plan.stderr and "no_such_exchange" in plan.stderr, plan.output
        assert "HTTP" not in plan.stderr
        applied = topo("apply", "--auto-approve", topology=topology)
        assert applied.code == 1 and nowhere in applied.stderr, applied.output
        assert vhost_name not in {v["name"] for v in api.get("vhosts")}  # refused before the first change
    else:
        assert plan.code == 0, plan.output
        assert nowhere in plan.stdout and "RabbitMQ 3.10" in plan.stdout
    assert "(did you mean 'events'?)" in plan.output and "on exchange ''" not in plan.output


def test_plan_json_is_unchanged_in_shape(topo, vhost_name: str) -> None:
    plan = json.loads(topo("plan", "--json", topology=f"vhosts:\n  {vhost_name}: {{}}\n").stdout)
    assert {"format_version", "changes", "summary", "data_loss", "unmanaged", "warnings"} <= set(plan)
