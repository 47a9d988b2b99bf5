"""Errors that stop an audit. Each one means exit code 2: the audit could not be completed."""

from __future__ import annotations

from collections.abc import Iterable


def first_line(error: BaseException) -> str:
    """An exception as one short line, for one-line error messages."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:300]


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


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """ " (did you mean X?)" for the candidate nearest a mistyped word, or "" when none is near."""
    import difflib

    near = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {near[0]}?)" if near else ""
