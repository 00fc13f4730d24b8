"""Global runtime parameters (the kind added to prove the kind registry): files, plan order, definitions
files and export, without a broker."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cli_runner import run_topo
from topo.definitions import read_definitions
from topo.diff import Action, Change
from topo.errors import ValidationFailed
from topo.export import build_export
from topo.load import Source, load_topology
from topo.plan import steps
from topo.state import Key, Kind

MAPPING = {"1883": "sensors", "8883": "/"}


def load(text: str) -> Any:
    return load_topology([], env={}, sources=[Source("topology.yaml", text)]).desired


def test_declared_parameters_become_objects_and_absent_ones_keys() -> None:
    desired = load(
        "global_parameters:\n"
        '  mqtt_port_to_vhost_mapping: {value: {"1883": sensors, "8883": /}}\n'
        "  cluster_name: {value: prod-eu}\n"
        "  retired: {absent: true}\n"
    )
    assert desired.objects[Key(Kind.GLOBAL_PARAMETER, "", "mqtt_port_to_vhost_mapping")].attrs == {"value": MAPPING}
    assert desired.objects[Key(Kind.GLOBAL_PARAMETER, "", "cluster_name")].attrs == {"value": "prod-eu"}
    assert Key(Kind.GLOBAL_PARAMETER, "", "retired") in desired.absent
    assert str(desired.locations[Key(Kind.GLOBAL_PARAMETER, "", "cluster_name")]) == "topology.yaml:3"


@pytest.mark.parametrize(
    ("text", "path", "message"),
    [
        ("global_parameters:\n  internal_cluster_id: {value: x}\n", "global_parameters.internal_cluster_id",
         "internal_cluster_id is the broker's own identity: topo never manages it"),
        ("global_parameters:\n  cluster_name: {}\n", "global_parameters.cluster_name",
         "a global parameter needs value"),
        ("global_parameters:\n  cluster_name: {value: x, absent: true}\n", "global_parameters.cluster_name",
         "an object marked absent: true takes no other keys (found value)"),
        ("global_parameters:\n  cluster_name: prod\n", "global_parameters.cluster_name", "valid dictionary"),
    ],
)  # fmt: skip
def test_bad_declarations_are_named_with_file_and_line(text: str, path: str, message: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        load(text)
    problem = caught.value.problems[0]
    assert (problem.file, problem.line, problem.path) == ("topology.yaml", 2, path)
    assert message in problem.message


def test_set_after_vhosts_exist_and_removed_before_they_go() -> None:
    def change(action: Action, kind: Kind, name: str) -> Change:
        key = Key(kind, name if kind is Kind.VHOST else "", name)
        return Change(action, key, None if action is Action.CREATE else {}, None if action is Action.DELETE else {})

    created = steps([change(Action.CREATE, Kind.GLOBAL_PARAMETER, "m"), change(Action.CREATE, Kind.VHOST, "v")])
    assert [s.change.kind for s in created] == [Kind.VHOST, Kind.GLOBAL_PARAMETER]
    deleted = steps([change(Action.DELETE, Kind.VHOST, "v"), change(Action.DELETE, Kind.GLOBAL_PARAMETER, "m")])
    assert [s.change.kind for s in deleted] == [Kind.GLOBAL_PARAMETER, Kind.VHOST]


def definitions_file(tmp_path: Path, cluster_name: str) -> Path:
    data = {
        "vhosts": [{"name": "/"}, {"name": "sensors"}],
        "global_parameters": [
            {"name": "cluster_name", "value": cluster_name},
            {"name": "internal_cluster_id", "value": "rabbitmq-cluster-id-I25xJdt3QpmEFzeKaPqmdQ"},
            {"name": "mqtt_port_to_vhost_mapping", "value": {"8883": "/", "1883": "sensors"}},
        ],
    }
    path = tmp_path / "definitions.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_export_writes_settings_but_never_the_broker_identity_or_a_default_cluster_name(tmp_path: Path) -> None:
    read = read_definitions(str(definitions_file(tmp_path, "rabbit@d89fd1c6ee51")))
    assert Key(Kind.GLOBAL_PARAMETER, "", "internal_cluster_id") not in read.actual.objects
    result = build_export(read.actual, read.vhosts, read.has_users, False, "a test", read.notes)
    assert "global_parameters:\n  mqtt_port_to_vhost_mapping:\n    value:\n      '1883': sensors\n" in result.text
    assert "internal_cluster_id" not in result.text and "rabbitmq-cluster-id" not in result.text
    assert "cluster_name" not in result.text
    assert any("left out cluster_name 'rabbit@d89fd1c6ee51': the broker's default" in n for n in result.notes)
    assert not any("topo does not manage them" in note for note in result.notes)
    # The export reads back as what it was made from.
    desired = load(result.text)
    key = Key(Kind.GLOBAL_PARAMETER, "", "mqtt_port_to_vhost_mapping")
    assert desired.objects[key].attrs == {"value": MAPPING}


def test_a_cluster_name_someone_chose_is_exported(tmp_path: Path) -> None:
    read = read_definitions(str(definitions_file(tmp_path, "prod-eu")))
    result = build_export(read.actual, read.vhosts, read.has_users, False, "a test", read.notes)
    assert "  cluster_name:\n    value: prod-eu\n" in result.text


def test_an_export_of_chosen_vhosts_leaves_broker_wide_settings_out(tmp_path: Path) -> None:
    path = definitions_file(tmp_path, "prod-eu")
    result = run_topo("export", "--from-definitions", str(path), "--vhost", "sensors")
    assert result.code == 0, result.output
    assert "global_parameters" not in result.stdout and "sensors: {}" in result.stdout
    whole = run_topo("export", "--from-definitions", str(path))
    assert whole.code == 0 and "global_parameters:" in whole.stdout


def test_a_definitions_value_topo_would_refuse_is_named(tmp_path: Path) -> None:
    path = tmp_path / "definitions.json"
    path.write_text(json.dumps({"global_parameters": [{"name": 3, "value": 1}]}), encoding="utf-8")
    with pytest.raises(ValidationFailed) as caught:
        read_definitions(str(path))
    assert "global_parameters[0].name" in str(caught.value)
