"""Findings as text (one line each, then a summary) or as JSON."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from topo.compat import version_text
from topo.lint.core import Finding, Level, LintInput

_COLOURS = {Level.ERROR: "31", Level.WARNING: "33", Level.INFO: "36"}


def line(finding: Finding, colour: bool = False) -> str:
    level = finding.level.value
    if colour:
        level = f"\033[{_COLOURS[finding.level]}m{level}\033[0m"
    return f"{level}: {finding.where}: {finding.message}; fix: {finding.fix} [{finding.rule}]"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def summary(findings: list[Finding], lint_input: LintInput) -> str:
    counts = Counter(finding.level for finding in findings)
    against = f"RabbitMQ {lint_input.target_text}"
    if lint_input.broker_version is not None:
        against += f" (broker runs {version_text(lint_input.broker_version)})"
    if not findings:
        return f"Lint: no findings for {against}."
    parts = [_plural(counts[Level.ERROR], "error"), _plural(counts[Level.WARNING], "warning")]
    parts.append(f"{counts[Level.INFO]} info")
    return f"Lint: {', '.join(parts)} for {against}."


def render_text(findings: list[Finding], lint_input: LintInput, colour: bool = False) -> str:
    lines = [line(finding, colour) for finding in findings]
    lines.append(summary(findings, lint_input))
    return "\n".join(lines) + "\n"


def to_json(findings: list[Finding], lint_input: LintInput) -> dict[str, Any]:
    counts = Counter(finding.level.value for finding in findings)
    return {
        "target_version": lint_input.target_text,
        "broker_version": version_text(lint_input.broker_version) if lint_input.broker_version else None,
        "live": lint_input.live,
        "findings": [finding.to_json() for finding in findings],
        "summary": {level.value: counts.get(level.value, 0) for level in Level},
    }


def render_json(findings: list[Finding], lint_input: LintInput) -> str:
    return json.dumps(to_json(findings, lint_input), indent=2, ensure_ascii=False) + "\n"
