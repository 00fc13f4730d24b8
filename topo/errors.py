"""Typed errors. Every error a user can cause carries enough context to act on without a traceback."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class TopoError(Exception):
    """Base class: the CLI prints these as a message and exits 1."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One validation finding, pointing at the source."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        key = f" {self.path}:" if self.path else ""
        return f"{where}:{key} {self.message}"


class ValidationFailed(TopoError):
    """All problems found in the input at once, not just the first."""

    def __init__(self, problems: list[Problem], what: str = "topology", warnings: list[str] | None = None):
        # Warnings found on the way are shown too: fixing the problems should not reveal new surprises.
        self.warnings = list(warnings or [])
        self.problems = sorted(problems, key=lambda p: (p.file, p.line or 0, p.path, p.message))
        count = len(self.problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{count} problem{'s' if count != 1 else ''} in the {what}:\n{lines}")


class ConfigError(TopoError):
    """Bad command-line or connection settings."""


class BrokerError(TopoError):
    """The management API refused or failed a request; names the object, status and the broker's reason."""

    def __init__(self, action: str, status: int | None, reason: str):
        self.action = action
        self.status = status
        self.reason = reason
        status_text = f"HTTP {status}" if status is not None else "no response"
        super().__init__(f"{action}: {status_text}: {reason}")


class StepRefused(BrokerError):
    """topo itself refused a step at the last moment (e.g. messages arrived since the plan)."""

    def __init__(self, action: str, reason: str):
        self.action, self.status, self.reason = action, None, reason
        TopoError.__init__(self, f"{action}: refused: {reason}")


class UnsafePlan(TopoError):
    """The plan would lose data or lock the caller out; the message names the flag that allows it."""


class ApplyFailed(TopoError):
    """Apply stopped part-way; the message says what was and was not done (and the attributes, for machines)."""

    def __init__(self, message: str, failures: list[Any] | None = None, not_attempted: list[Any] | None = None):
        super().__init__(message)
        self.failures = failures or []  # (Step, BrokerError) pairs
        self.not_attempted = not_attempted or []  # Steps


class NotConverged(TopoError):
    """The broker did not end up as planned after apply (it silently ignores some redeclarations)."""

    def __init__(self, message: str, remaining: list[Any] | None = None):
        super().__init__(message)
        self.remaining = remaining or []  # the Changes still pending
