"""Errors that stop an audit. Each one means exit code 2: the audit could not be completed."""

from __future__ import annotations


class AuditError(Exception):
    """An audit that could not be completed. The message is one line, naming what and where."""


class StoreError(AuditError):
    """The tracking store is missing, unreachable, unreadable, or would be changed by opening it."""


class SelectionError(AuditError):
    """The selection names something that does not exist, is malformed, or matches no run."""


class PolicyError(AuditError):
    """The policy cannot be loaded: bad JSON or YAML, not a JSON Schema, or a bad x-audit."""


class ArtifactError(AuditError):
    """An artifact the policy needs exists but could not be read."""
