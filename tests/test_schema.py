"""The committed JSON Schema (for editors) must be the one the models generate."""

from __future__ import annotations

import json
from pathlib import Path

from cli_runner import run_topo
from topo.model import json_schema

SCHEMA = Path(__file__).parent.parent / "schemas" / "topology.schema.json"
HINT = "schemas/topology.schema.json is stale: run `topo schema > schemas/topology.schema.json` and commit it"


def test_committed_schema_matches_the_models() -> None:
    committed = json.loads(SCHEMA.read_text(encoding="utf-8"))
    assert committed == json_schema(), HINT


def test_schema_command_prints_the_same_schema() -> None:
    result = run_topo("schema")
    assert result.code == 0, result.output
    assert json.loads(result.stdout) == json_schema()


def test_schema_is_closed_and_describes_the_top_level() -> None:
    schema = json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == {"version", "broker", "prune", "ignore", "vhosts", "users", "global_parameters"}
    # Aliases, not Python names: the schema must accept what the files contain.
    policy = schema["$defs"]["PolicySpec"]["properties"]
    assert "apply-to" in policy and "apply_to" not in policy
    limits = schema["$defs"]["LimitsSpec"]["properties"]
    assert set(limits) == {"max-connections", "max-queues"}
