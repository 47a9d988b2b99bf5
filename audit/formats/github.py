"""`--format github`: GitHub Actions workflow commands, which the runner turns into annotations
on the workflow run and the pull request.

One command per finding: ``::error`` for errors, ``::warning`` for warnings, ``::notice`` for
info, each ``title=<rule id> (<run name>)`` with the message, where it was found and the fix. A
waived finding is a ``::notice`` saying it is waived, by whom and until when: on the record,
never a failure. A rule whose answer MLflow's record cannot show is one ``::notice`` per rule
(``unknown``, with why and on how many runs); the rules that do not apply are counted in the last
plain line, which sums up. Expired and unused waivers are ``::warning``s.

GitHub keeps only the first 10 errors, 10 warnings and 10 notices of a step as annotations (50 per
job), and the rest in the log only; the commands therefore come most severe first, across runs.

**Injection.** The runner reads a command from every line that starts with ``::``. Untrusted text
(run names, messages) is escaped as the runner's own toolkit escapes it: ``%``, CR and LF are
percent-encoded in the message, and also ``:`` and ``,`` in properties (where they would end the
value). No value can then start a line, so a run named ``x\\n::error::pwned`` stays inside its
annotation. Control characters are written out (``\\x1b``), so ANSI escapes cannot rewrite the
log either.

`write_step_summary` appends the Markdown summary to the job summary (``$GITHUB_STEP_SUMMARY``).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from audit.formats.markdown import render_markdown
from audit.formats.rows import experiment_label, located, run_label, waiver_text
from audit.formats.text import one_line, plural, visible
from audit.result import AuditResult, Finding, RunResult

_COMMAND = {"error": "error", "warning": "warning", "info": "notice"}


def escape_data(text: str) -> str:
    """A command's message, as the runner's toolkit (``@actions/core``) escapes it."""
    escaped = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return visible(escaped)  # after: it would write CR and LF as \x0d, \x0a


def escape_property(text: str) -> str:
    """A command property's value, as the toolkit escapes it: also ``:`` and ``,``."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def command(name: str, message: str, **properties: str) -> str:
    props = ",".join(f"{key}={escape_property(value)}" for key, value in properties.items())
    return f"::{name}{' ' + props if props else ''}::{escape_data(message)}"


def render_github(result: AuditResult) -> str:
    lines = []
    for severity in ("error", "warning", "info"):
        for run in result.runs:
            lines += [
                _finding_command(run, finding)
                for finding in run.open_findings
                if finding.severity == severity
            ]
    for run in result.runs:
        lines += [_waived_command(run, finding) for finding in run.waived_findings]
    lines += _unknown_commands(result)
    for use in result.waivers:
        if use.state != "applied":
            lines.append(command("warning", use.message, title=f"mlflow-audit: waiver {use.state}"))
    lines.append(_summary(result))
    return "\n".join(lines) + "\n"


def stop_commands(text: str, token: str | None = None) -> str:
    """`text` between ``::stop-commands::TOKEN`` and ``::TOKEN::``: the runner reads no workflow
    command inside, so any other format can be printed to a GitHub Actions log. The runner reads
    a command from a line starting with ``::`` (after spaces, so a wrapped table line counts)
    and, in the legacy form, from ``##[`` anywhere in a line; untrusted text can produce both.
    The token is random so the text cannot end the pause itself."""
    return "".join(stop_commands_around([text.rstrip("\n") + "\n"], token))


def stop_commands_around(chunks: Iterable[str], token: str | None = None) -> Iterator[str]:
    """`stop_commands` for text written in pieces."""
    token = token or secrets.token_hex(16)
    yield f"::stop-commands::{token}\n"
    ends_line = True
    for chunk in chunks:
        if chunk:
            yield chunk
            ends_line = chunk.endswith("\n")
    yield f"::{token}::\n" if ends_line else f"\n::{token}::\n"


def write_step_summary(result: AuditResult, environ: Mapping[str, str] = os.environ) -> Path | None:
    """Append the Markdown summary to the file ``$GITHUB_STEP_SUMMARY`` names (the job summary
    page of GitHub Actions); the path written, or None when the variable is not set."""
    name = environ.get("GITHUB_STEP_SUMMARY")
    if not name:
        return None
    path = Path(name)
    # Appended: other steps of the job add their own sections to the same file.
    with path.open("a", encoding="utf-8") as summary:
        summary.write(render_markdown(result) + "\n")
    return path


def _where(run: RunResult) -> str:
    return f"run {_name(run)} ({run.run_id}), experiment {one_line(experiment_label(run))}"


def _name(run: RunResult) -> str:
    # An annotation's title and location read on one line; escaping alone would keep the break.
    return one_line(run_label(run))


def _finding_command(run: RunResult, finding: Finding) -> str:
    message = f"{located(finding)} [{_where(run)}]"
    if finding.severity != "info":  # an observation, not a gap: no fix to spell out
        message += f". Fix: {finding.remediation}"
    return command(
        _COMMAND[finding.severity],
        message,
        title=f"{finding.rule_id} ({_name(run)})",
    )


def _waived_command(run: RunResult, finding: Finding) -> str:
    assert finding.waiver is not None
    return command(
        "notice",
        f"{located(finding)} [{_where(run)}]. Waived: {waiver_text(finding.waiver)}",
        title=f"waived: {finding.rule_id} ({_name(run)})",
    )


def _unknown_commands(result: AuditResult) -> list[str]:
    runs_by_rule: dict[str, int] = {}
    for run in result.runs:
        for rule_id in run.unknown:
            runs_by_rule[rule_id] = runs_by_rule.get(rule_id, 0) + 1
    rules = {rule.id: rule for rule in result.rules}
    return [
        command(
            "notice",
            f"{rules[rule_id].title}: unknown on {plural(count, 'run')}. "
            f"Why: {rules[rule_id].unknown or ''}",
            title=f"unknown: {rule_id}",
        )
        for rule_id, count in runs_by_rule.items()
        if rule_id in rules
    ]


def _summary(result: AuditResult) -> str:
    statuses = result.status_counts()
    severities = result.severity_counts()
    waived = sum(len(run.waived_findings) for run in result.runs)
    outcomes = result.outcome_counts()
    if result.fail_on == "never" and result.min_score is None:
        verdict = "gate off (--fail-on never)"
    else:
        verdict = "gate FAILED" if result.gate_failed else "gate passed"
    score = f"score {result.score:g}%"
    if result.min_score is not None:
        score += f" (min {result.min_score:g}%)"
    return (
        f"mlflow-audit: {verdict} · {plural(len(result.runs), 'run')}: {statuses['pass']} pass, "
        f"{statuses['warn']} warn, {statuses['fail']} fail · "
        f"{plural(severities['error'], 'error')}, {plural(severities['warning'], 'warning')}, "
        f"{severities['info']} info, {waived} waived · rules {outcomes['pass']} pass, "
        f"{outcomes['fail']} fail, {outcomes['unknown']} unknown, "
        f"{outcomes['not_applicable']} not applicable · {score}"
    )
