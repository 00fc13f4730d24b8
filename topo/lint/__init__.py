"""`topo lint`: advice about a topology, and the upgrade check for a target RabbitMQ version.

core.py is the framework (findings, inputs, the rule registry); each rules module registers its rules
when imported here. To add a rule: write a function over a LintInput in a rules module, decorate it
with @rule, and document it in docs/lint.md.
"""

from __future__ import annotations

from topo.lint import upgrade  # noqa: F401  (registers the upgrade rules)
from topo.lint.core import RULES, Finding, Level, LintInput, Rule, rule, run
from topo.lint.output import render_json, render_text
from topo.lint.sources import from_broker, from_files, target_version

__all__ = [
    "RULES",
    "Finding",
    "Level",
    "LintInput",
    "Rule",
    "from_broker",
    "from_files",
    "render_json",
    "render_text",
    "rule",
    "run",
    "target_version",
]
