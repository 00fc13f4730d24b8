"""--var-file: dotenv files for ${…}; one set of topology files for dev, staging and production."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from broker_api import Api
from cli_runner import broker_env, run_topo
from topo.errors import ValidationFailed
from topo.varfile import environment_with, parse_line, read_var_files

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "environments"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("NAME=value", ("NAME", "value")),
        ("  NAME = spaced value   ", ("NAME", "spaced value")),
        ("export NAME=v", ("NAME", "v")),
        ("NAME=v # comment", ("NAME", "v")),
        ("NAME=a#b", ("NAME", "a#b")),
        ("NAME='lit $x # not a comment'", ("NAME", "lit $x # not a comment")),
        ('NAME="a\\nb \\"q\\" \\\\ \\$"  # c', ("NAME", 'a\nb "q" \\ $')),
        ("NAME=", ("NAME", "")),
        ("# comment", None),
        ("   ", None),
    ],
)
def test_lines(line: str, expected: object) -> None:
    assert parse_line(line) == expected


def test_later_files_override_earlier_ones_and_the_environment_wins(tmp_path: Path) -> None:
    first, second = tmp_path / "a.env", tmp_path / "b.env"
    first.write_text("A=1\nB=1\nC=1\n", encoding="utf-8")
    second.write_text("B=2\nC=2\n", encoding="utf-8")
    assert read_var_files([str(first), str(second)]) == {"A": "1", "B": "2", "C": "2"}
    merged = environment_with([str(first), str(second)], {"C": "env"})
    assert dict(merged) == {"A": "1", "B": "2", "C": "env"}
    assert environment_with(None, {"X": "1"}) == {"X": "1"}


def test_every_bad_line_is_reported_with_file_and_line_and_never_its_value(tmp_path: Path) -> None:
    path = tmp_path / "bad.env"
    path.write_text(
        "OK=1\nTopSecret-Value-1\nTopSecret Value-2=x\nPW=\"TopSecret-Value-3\nPW2=Top'Secret-4\nPW3='x' tail\n",
        encoding="utf-8",
    )
    with pytest.raises(ValidationFailed) as caught:
        read_var_files([str(path), str(tmp_path / "missing.env")])
    message = str(caught.value)
    for line in (2, 3, 4, 5, 6):
        assert f"bad.env:{line}:" in message
    assert "missing.env: no such var file" in message
    assert "TopSecret" not in message and "Secret-4" not in message and "tail" not in message


def _copy_example(tmp_path: Path) -> Path:
    target = tmp_path / "environments"
    shutil.copytree(EXAMPLE, target)
    return target


def test_one_topology_serves_dev_and_production(tmp_path: Path, api: Api, broker, vhost_name: str) -> None:
    example = _copy_example(tmp_path)
    # Secrets live outside git: here a local var file, as a developer would keep one.
    secrets = tmp_path / "secrets.env"
    secrets.write_text("SHOP_APP_PASSWORD='Var-File-Secret-9'\n", encoding="utf-8")
    user = f"{vhost_name}-app"
    env = {**broker_env(broker), "SHOP_VHOST": vhost_name, "SHOP_APP_USER": user}  # the environment wins

    def topo(*args: str, environment: str) -> object:
        files = ["--var-file", str(example / "env" / "common.env"), "--var-file", str(example / "env" / environment)]
        return run_topo(*args, "-f", str(example / "topology"), *files, "--var-file", str(secrets), env=env)

    try:
        outputs = []
        dev = topo("apply", "--auto-approve", environment="dev.env")
        assert dev.code == 0, dev.output
        outputs.append(dev.output)
        parking = next(q for q in api.get("queues", vhost_name) if q["name"] == "orders.parking")
        assert parking["arguments"]["x-message-ttl"] == 86400000 and parking["arguments"]["x-max-length"] == 1000
        assert api.get("vhosts", vhost_name)["description"] == "order pipeline (dev)"
        prod = topo("plan", "--json", environment="prod.env")
        assert prod.code == 0, prod.output
        outputs.append(prod.output)
        changes = {(c["kind"], c["name"]): c for c in json.loads(prod.stdout)["changes"]}
        assert changes[("queue", "orders.parking")]["action"] == "replace"
        assert changes[("queue", "orders.created")]["after"]["arguments"]["x-delivery-limit"] == 10
        assert ("user", user) not in changes  # same password: no drift
        for fmt in ("text", "markdown"):
            outputs.append(topo("plan", "--format", fmt, environment="staging.env").output)
        for output in outputs:
            assert "Var-File-Secret-9" not in output
        assert topo("plan", "--detailed-exitcode", environment="dev.env").code == 0
    finally:
        if any(u["name"] == user for u in api.get("users")):
            api.delete("users", user)


def test_validate_takes_var_files_and_bad_ones_are_clear_errors(tmp_path: Path) -> None:
    example = _copy_example(tmp_path)
    env = {"SHOP_APP_PASSWORD": "x-12345", **{k: None for k in os.environ if k.startswith("SHOP_")}}
    common = str(example / "env" / "common.env")
    ok = run_topo(
        "validate",
        "-f",
        str(example / "topology"),
        "--var-file",
        common,
        "--var-file",
        str(example / "env" / "staging.env"),
        env=env,
    )
    assert ok.code == 0, ok.output
    missing = run_topo("validate", "-f", str(example / "topology"), "--var-file", common, env=env)
    assert missing.code == 1 and "PARKING_TTL_MS is not set" in missing.stderr
    bad = tmp_path / "bad.env"
    bad.write_text("GOOD=1\nnot a line\n", encoding="utf-8")
    refused = run_topo("validate", "-f", str(example / "topology"), "--var-file", str(bad), env=env)
    assert refused.code == 1 and f"{bad}:2: expected NAME=value" in refused.stderr
    assert "Traceback" not in refused.output
