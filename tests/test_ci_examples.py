"""The CI files in examples/ci/ and .pre-commit-hooks.yaml work as shipped: valid YAML of the right
shape, and every topo command they run parses with topo's own command line (commands, options,
values), so a renamed option breaks this test instead of a user's pipeline."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path
from typing import Any

import pytest
import requests
import typer.main
import yaml

from cli_runner import broker_env, run_topo
from topo.cli import app

ROOT = Path(__file__).resolve().parent.parent
CI = ROOT / "examples" / "ci"
OPERATORS = {"|", "||", "&&", ";", ">", ">>", "<", "&", "|&", "2>&1"}


def _load(path: Path) -> Any:
    # BaseLoader: GitHub's `on:` stays the string "on" (YAML 1.1 would read it as true).
    return yaml.load(path.read_text(encoding="utf-8"), Loader=yaml.BaseLoader)


def topo_commands(script: str) -> list[list[str]]:
    """Every `topo …` invocation in a shell script, as its argument list."""
    found = []
    for line in script.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        words = list(lexer)
        for index, word in enumerate(words):
            if word == "topo" and (index == 0 or words[index - 1] in OPERATORS | {"then", "do", "!"}):
                args = []
                for arg in words[index + 1 :]:
                    if arg in OPERATORS:
                        break
                    args.append(arg)
                found.append(args)
    return found


def github_scripts(workflow: dict[str, Any]) -> list[str]:
    assert set(workflow["on"]) >= {"pull_request", "push", "schedule"}, "PRs, merges and a nightly drift check"
    scripts = []
    for name, job in workflow["jobs"].items():
        assert job["runs-on"], name
        for step in job["steps"]:
            assert "run" in step or "uses" in step, (name, step)
            if "run" in step:
                scripts.append(step["run"])
    return scripts


def gitlab_scripts(pipeline: dict[str, Any]) -> list[str]:
    stages = pipeline["stages"]
    scripts = list(pipeline.get("default", {}).get("before_script", []))
    for name, job in pipeline.items():
        if name in ("stages", "default", "variables", "workflow", "include") or name.startswith("."):
            continue
        assert job["stage"] in stages, name
        assert job["script"], name
        scripts.extend(job["script"])
    return scripts


def check_parses(args: list[str]) -> None:
    """Parses `topo ARGS` as topo's command line does, without running it."""
    group = typer.main.get_command(app)
    command = group.commands.get(args[0]) if args else None  # type: ignore[attr-defined]
    if command is None:
        pytest.fail(f"`topo {shlex.join(args)}`: topo has no such command")
    try:
        command.make_context(args[0], list(args[1:]))
    except Exception as exc:  # click's usage errors: an unknown option, a bad value, a missing argument
        pytest.fail(f"`topo {shlex.join(args)}` does not parse: {exc}")


def test_github_actions_workflow() -> None:
    commands = [c for script in github_scripts(_load(CI / "github-actions.yml")) for c in topo_commands(script)]
    for args in commands:
        check_parses(args)
    joined = [" ".join(c) for c in commands]
    assert any(c.startswith("validate") for c in joined)
    assert any(c.startswith("plan") and "--format markdown" in c and "--out" not in c for c in joined)
    assert any(c.startswith("plan") and "--out plan.json" in c for c in joined)
    assert "apply plan.json --lock-timeout 300 --format markdown" in joined
    assert any("--detailed-exitcode" in c for c in joined)
    text = (CI / "github-actions.yml").read_text()
    assert "$GITHUB_STEP_SUMMARY" in text and "gh pr comment" in text
    assert re.search(r'if \[ "\$code" -eq 2 \]', text), "the drift check reports exit code 2 as drift"


def test_gitlab_ci_pipeline() -> None:
    commands = [c for script in gitlab_scripts(_load(CI / "gitlab-ci.yml")) for c in topo_commands(script)]
    for args in commands:
        check_parses(args)
    joined = [" ".join(c) for c in commands]
    assert any(c.startswith("validate") for c in joined)
    assert any(c.startswith("plan") and "--out plan.json" in c and "--format markdown" in c for c in joined)
    assert any(c.startswith("apply plan.json") for c in joined)
    assert any("--detailed-exitcode" in c for c in joined)


def test_pre_commit_hook_and_its_example() -> None:
    hooks = _load(ROOT / ".pre-commit-hooks.yaml")
    hook = next(h for h in hooks if h["id"] == "topo-validate")
    assert hook["language"] == "python" and hook["pass_filenames"] == "false"
    re.compile(hook["files"])
    example = _load(CI / "pre-commit-config.yaml")
    used = next(h for repo in example["repos"] for h in repo["hooks"] if h["id"] == "topo-validate")
    for args in topo_commands(hook["entry"]):
        check_parses(args)
        check_parses([*args, *used["args"]])


def test_the_checker_catches_what_would_break_a_pipeline() -> None:
    assert topo_commands("set -e\ntopo plan -f t --out p.json > x.md && topo apply p.json | tee s") == [
        ["plan", "-f", "t", "--out", "p.json"],
        ["apply", "p.json"],
    ]
    for bad in (["plan", "--no-such-option"], ["plan", "--format", "html"], ["deploy"], ["apply", "a", "b"]):
        with pytest.raises(pytest.fail.Exception):
            check_parses(bad)


def test_the_github_pipeline_runs_on_the_documented_layout(broker, api, vhost_name: str, tmp_path: Path) -> None:
    """Every topo command of the workflow, job by job, on examples/environments against the real node."""
    shutil.copytree(ROOT / "examples" / "environments", tmp_path, dirs_exist_ok=True)
    user = f"{vhost_name}-app"
    env = {**broker_env(broker), "SHOP_VHOST": vhost_name, "SHOP_APP_USER": user, "SHOP_APP_PASSWORD": "ci-Pw-1"}
    workflow = _load(CI / "github-actions.yml")
    try:
        for job in ("plan", "apply-plan", "apply", "drift"):
            for step in workflow["jobs"][job]["steps"]:
                for args in topo_commands(step.get("run", "")):
                    result = run_topo(*args, env=env, cwd=str(tmp_path))
                    assert result.code == 0, (job, args, result.output)
                    if "--format" in args and "markdown" in args:
                        assert result.stdout.startswith(("### topo plan", "### topo apply")), result.stdout[:200]
        assert {q["name"] for q in api.get("queues", vhost_name)} == {"orders.created", "orders.parking"}
    finally:
        requests.delete(api._url("users", user), auth=api.auth, timeout=30)
