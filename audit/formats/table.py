"""`--format table`: what a person reads in a terminal or a CI log, 80 columns wide.

Every run's block up to `COMPACT_ABOVE` runs; above it, the runs that fail the gate with their
rule ids and the rules by number of failing runs, since a block per run of 300 runs is 17,000
lines nobody reads (`detail="full"` gives every block, written run by run; `"summary"` only the
summary).
"""

from __future__ import annotations

import functools
import re
import textwrap
from collections.abc import Iterator, Mapping
from itertools import groupby
from typing import Literal

from audit.formats.text import plural, shorten
from audit.policy import Rule
from audit.result import AuditResult, Finding, RunResult

_COLORS = {
    "unknown": "35",
    "fail": "31;1",
    "warn": "33;1",
    "pass": "32;1",
    "error": "31",
    "warning": "33",
    "info": "36",
    "dim": "2",
    "bold": "1",
    # What `mlflow-audit diff` marks (audit.formats.diff).
    "added": "32",
    "removed": "31",
    "changed": "33",
    "not_comparable": "35",
}
_STATUS_LABEL = {"fail": "FAIL", "warn": "WARN", "pass": "PASS"}
#: Above this many runs, the default table is compact (see the module's docstring).
COMPACT_ABOVE = 20
Detail = Literal["auto", "full", "summary"]
# Control characters from run contents must not reach a terminal (escape-sequence injection).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _one_line(text: str) -> str:
    """`printable`, with line breaks escaped too: for lines that are not wrapped (wrapping
    turns a line break into a space)."""
    return printable(text).replace("\n", "\\x0a")


class Painter:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, text: str, style: str) -> str:
        if not self.enabled:
            return text
        return f"\x1b[{_COLORS[style]}m{text}\x1b[0m"


def render_table(
    result: AuditResult, *, color: bool = False, width: int = 80, detail: Detail = "auto"
) -> str:
    return "".join(table_chunks(result, color=color, width=width, detail=detail))


def table_chunks(
    result: AuditResult, *, color: bool = False, width: int = 80, detail: Detail = "auto"
) -> Iterator[str]:
    """The table in pieces: the header, each run's block (or the compact overview), the
    summary."""
    paint = Painter(color)
    width = max(width, 60)
    policy = result.policy
    version = f" {policy['version']}" if policy.get("version") else ""
    yield (
        paint(f"mlflow-audit {result.tool_version}", "bold")
        + f" · policy {_one_line(str(policy['name']))}{version} · {len(result.rules)} rules\n"
        + f"store {_one_line(result.store)}\n\n"
    )
    rules = {rule.id: rule for rule in result.rules}
    if detail == "full" or (detail == "auto" and len(result.runs) <= COMPACT_ABOVE):
        for run in result.runs:
            yield "\n".join(_run_block(run, rules, paint, width)) + "\n"
    elif detail == "auto":
        yield "\n".join(_overview(result, rules, paint, width)) + "\n"
    yield "\n".join(_summary_block(result, paint, width)) + "\n"


def _overview(
    result: AuditResult, rules: Mapping[str, Rule], paint: Painter, width: int
) -> list[str]:
    """The compact table: which runs fail the gate and on what, then which rules fail most."""
    # With the gate off, the runs it would fail by default.
    threshold = result.fail_on if result.fail_on != "never" else "error"
    failing = result.failing_runs(threshold)
    order = {rule.id: index for index, rule in enumerate(result.rules)}
    lines = wrap(
        f"{len(result.runs)} runs, more than {COMPACT_ABOVE}: the runs with findings at or "
        f"above {threshold}, then the rules by failing runs (--verbose shows every run's "
        "findings and fixes)",
        "",
        width,
    )
    lines.append("")
    if failing:
        lines.append(paint(f"{plural(len(failing), 'run')} at or above {threshold}", "bold"))
    for run in failing:
        name = shorten(_one_line(run.run_name or "(unnamed run)"), 40)
        ids = sorted(
            {f.rule_id for f in run.open_findings if f.fails_gate(threshold)},
            key=lambda rule_id: order.get(rule_id, len(order)),
        )
        lines.append(f"{paint(_STATUS_LABEL[run.status], run.status)}  {name}  {run.run_id}")
        lines += wrap(", ".join(ids), " " * 6, width)
    if failing:
        lines.append("")
    counts = _failing_runs_by_rule(result, order)
    if counts:
        lines.append(paint("rules by failing runs", "bold"))
        lines.append(f"{'runs':>6}  {'severity':<8}  rule")
        for rule_id, number in counts:
            rule = rules.get(rule_id)
            severity = rule.severity if rule is not None else "error"
            lines.append(f"{number:>6}  {paint(f'{severity:<8}', severity)}  {rule_id}")
        lines.append("")
    return lines


def _failing_runs_by_rule(result: AuditResult, order: Mapping[str, int]) -> list[tuple[str, int]]:
    """Each rule with open findings and the number of runs it fails, most first (ties in the
    policy's order)."""
    runs_per_rule: dict[str, int] = {}
    for run in result.runs:
        for rule_id in {finding.rule_id for finding in run.open_findings}:
            runs_per_rule[rule_id] = runs_per_rule.get(rule_id, 0) + 1
    return sorted(
        runs_per_rule.items(), key=lambda item: (-item[1], order.get(item[0], len(order)))
    )


def _run_block(run: RunResult, rules: Mapping[str, Rule], paint: Painter, width: int) -> list[str]:
    name = shorten(_one_line(run.run_name or "(unnamed run)"), width - 6)
    experiment = printable(run.experiment_name or run.experiment_id)
    lines = [f"{paint(_STATUS_LABEL[run.status], run.status)}  {name}"]
    lines += wrap(f"run {run.run_id} · experiment {experiment}", " " * 6, width, hang=4)
    for version in run.model_versions:
        lines += wrap(f"model version {printable(version)}", " " * 6, width, hang=4)
    # Open gaps first, most severe first; accepted ones after them, marked as waived.
    for _, group in groupby(run.open_findings, key=lambda f: f.rule_id):
        lines.extend(_finding_block(list(group), paint, width))
    for _, group in groupby(run.waived_findings, key=lambda f: (f.rule_id, f.waiver)):
        lines.extend(_waived_block(list(group), paint, width))
    # Undecided rules: unknown ones with why (a reader can act on them), the rules that do
    # not apply by id only; the outcomes line counts every rule of the policy.
    for rule_id in run.unknown:
        rule = rules.get(rule_id)
        lines.append(f"  {paint('unknown ', 'unknown')}{paint(rule_id, 'bold')}")
        if rule is not None:
            lines += wrap(printable(rule.title), " " * 6, width)
            lines += wrap(f"why: {printable(rule.unknown or '')}", " " * 6, width, hang=5)
    if run.not_applicable:
        lines += wrap(
            paint("n/a", "dim") + "     " + ", ".join(run.not_applicable), "  ", width, hang=8
        )
    lines += wrap(_outcomes_line(run, rules), " " * 6, width)
    lines.append("")
    return lines


def _outcomes_line(run: RunResult, policy_rules: Mapping[str, Rule]) -> str:
    """``9 pass · 7 fail · 1 unknown · 12 not applicable`` for one run."""
    grouped = run.outcomes(policy_rules)
    parts = [f"{len(grouped['pass'])} pass", f"{len(grouped['fail'])} fail"]
    if grouped["waived"]:
        parts.append(f"{len(grouped['waived'])} waived")
    parts += [
        f"{len(grouped['unknown'])} unknown",
        f"{len(grouped['not_applicable'])} not applicable",
    ]
    return "rules: " + " · ".join(parts)


def _finding_block(findings: list[Finding], paint: Painter, width: int) -> list[str]:
    first = findings[0]
    indent = " " * 6
    severity = paint(f"{first.severity:<8}", first.severity)
    lines = [f"  {severity}{paint(first.rule_id, 'bold')}"]
    lines += wrap(printable(first.gap_text), indent, width)
    if first.severity == "info":
        return lines  # an observation, not a gap: no fix to spell out
    shown = findings[:5]
    for finding in shown:
        lines += wrap("found: " + printable(finding.message), indent, width, hang=7)
    if len(findings) > len(shown):
        lines.append(f"{indent}... and {len(findings) - len(shown)} more like it")
    if first.citations:
        # A citation is one unit: "ISO/IEC 42001 A.7.5" never breaks across lines.
        joined = ", ".join(c.replace(" ", "\u00a0") for c in first.citations)
        lines += [
            line.replace("\u00a0", " ")
            for line in wrap("relevant to: " + joined, indent, width, hang=13)
        ]
    lines += wrap("fix: " + printable(first.remediation), indent, width, hang=5)
    return lines


def _waived_block(findings: list[Finding], paint: Painter, width: int) -> list[str]:
    first = findings[0]
    waiver = first.waiver
    assert waiver is not None
    indent = " " * 6
    lines = [f"  {paint('waived  ', 'dim')}{paint(first.rule_id, 'bold')}"]
    lines += wrap(printable(first.title), indent, width)
    shown = findings[:5]
    for finding in shown:
        lines += wrap("found: " + printable(finding.message), indent, width, hang=7)
    if len(findings) > len(shown):
        lines.append(f"{indent}... and {len(findings) - len(shown)} more like it")
    lines += wrap(
        f"waived: {printable(waiver.reason)} (approved by {printable(waiver.approved_by)}, "
        f"expires {waiver.expires.isoformat()}; {printable(waiver.origin)})",
        indent,
        width,
        hang=8,
    )
    return lines


def wrap(text: str, indent: str, width: int = 80, hang: int = 0) -> list[str]:
    """Wrap text at width, every line indented, continuation lines by `hang` more."""
    return list(_wrapped(text, indent, width, hang))


# A rule's title, citations and fix recur in every run it fails, and so do most messages
# ("/models: none recorded"): textwrap is the table's main cost on large audits.
@functools.lru_cache(maxsize=4096)
def _wrapped(text: str, indent: str, width: int, hang: int) -> tuple[str, ...]:
    return tuple(
        textwrap.wrap(
            text,
            width=width,
            initial_indent=indent,
            subsequent_indent=indent + " " * hang,
            break_on_hyphens=False,
            break_long_words=True,
        )
        or [indent]
    )


def _summary_block(result: AuditResult, paint: Painter, width: int) -> list[str]:
    statuses = result.status_counts()
    severities = result.severity_counts()
    experiments = {run.experiment_id for run in result.runs}
    runs_word = "run" if len(result.runs) == 1 else "runs"
    waived = sum(len(run.waived_findings) for run in result.runs)
    # Waived findings are counted apart: the severities count the open ones, which the gate
    # and the run statuses go by. Shown whenever waivers are in play, even when none applied.
    waived_text = f", {waived} waived" if waived or result.waivers else ""
    minimum = f" (min {result.min_score:g}%)" if result.min_score is not None else ""
    lines = wrap(
        f"{len(result.runs)} {runs_word} in {len(experiments)} "
        f"experiment{'s' if len(experiments) != 1 else ''}: "
        f"{statuses['pass']} pass, {statuses['warn']} warn, {statuses['fail']} fail · "
        f"{plural(severities['error'], 'error')}, {plural(severities['warning'], 'warning')}, "
        f"{severities['info']} info{waived_text} · {_outcomes_text(result)} · "
        f"score {result.score:g}%{minimum}",
        "",
        width,
    )
    if result.truncated:
        lines.append(f"stopped after --max-runs {len(result.runs)}")
    for use in result.waivers:
        if use.state != "applied":
            lines += wrap(
                f"{paint('warning', 'warning')}: waiver {use.state}: {printable(use.message)}",
                "",
                width,
                hang=2,
            )
    lines += wrap(f"gate {_verdict(result, paint)}", "", width, hang=5)
    return lines


def _verdict(result: AuditResult, paint: Painter) -> str:
    failing = len(result.failing_runs())
    if result.fail_on == "never" and result.min_score is None:
        return paint("gate off", "dim") + " (--fail-on never)"
    reasons = []
    if failing:
        reasons.append(
            f"{failing} {'run has' if failing == 1 else 'runs have'} findings at or above "
            f"{result.fail_on} (--fail-on {result.fail_on})"
        )
    if result.score_too_low:
        reasons.append(f"score {result.score:g}% is below --min-score {result.min_score:g}%")
    if reasons:
        return paint("FAILED", "fail") + ": " + "; ".join(reasons)
    passed = []
    if result.fail_on != "never":
        passed.append(f"no findings at or above {result.fail_on}")
    if result.min_score is not None:
        passed.append(f"score at least {result.min_score:g}%")
    return paint("passed", "pass") + ": " + ", ".join(passed)


def _outcomes_text(result: AuditResult) -> str:
    counts = result.outcome_counts()
    return (
        f"rules {counts['pass']} pass, {counts['fail']} fail, {counts['unknown']} unknown, "
        f"{counts['not_applicable']} n/a"
    )
