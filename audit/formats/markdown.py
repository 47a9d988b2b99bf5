"""`--format markdown`: a compact summary for a pull-request comment or a GitHub job summary.

A headline with the gate's verdict, the counts (runs by status, open findings by severity,
waived findings, score and ``--min-score``), waivers that need attention (expired, unused), then
the runs that fail the gate with their open gaps (rule, the gap, what was found, the provisions
it is relevant to, the fix), their unknown and not-applicable rules, the runs with findings
below the gate, and the waived findings with reason, approver and expiry. Long lists fold into
``<details>``.

**Untrusted text stays text.** Run and experiment names, messages and waiver fields are escaped
for Markdown and HTML: ``&``, ``<`` and ``>`` become entities, every other character Markdown
gives a meaning to is backslash-escaped (``[x](javascript:...)`` stays text, ``|`` cannot split a
table, ``:`` and ``.`` cannot start an autolink), line breaks and control characters are written
out as escapes, and ``@`` is followed by a zero-width space so a name cannot mention (notify)
anyone. Only counts, never MLflow text, go inside ``<summary>``, where Markdown escapes do not
apply.

**Size.** GitHub refuses comments over 65,536 characters. The text is kept within `max_length`
UTF-8 bytes (at least as many as characters, whichever way a service counts them): whole runs
and list entries are left out from the end, with a note saying how many.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import groupby

from audit.formats.rows import (
    experiment_label,
    located,
    run_label,
)
from audit.formats.text import one_line, plural, shorten
from audit.result import SCOPE_NOTE, AuditResult, Finding, RunResult

GITHUB_COMMENT_LIMIT = 65_536
_FOLD_OVER = 5  # more findings than this in a list, and it folds into <details>
_SHOWN_PER_RULE = 5
_ICON = {"error": "🔴", "warning": "🟡", "info": "🔵"}
_STATUS_ICON = {"fail": "❌", "warn": "⚠️", "pass": "✅"}
# Characters Markdown (CommonMark and GitHub's extensions) gives a meaning to somewhere.
_MARKDOWN_SPECIAL = frozenset("\\`*_{}[]()#+-.!|~:")
_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_NOTE_RESERVE = 600  # room kept for the note saying what was left out


def md(text: str) -> str:
    """Untrusted text as Markdown that renders exactly as that text, on one line."""
    out = []
    for char in one_line(text):
        if char in _ENTITIES:
            out.append(_ENTITIES[char])
        elif char in _MARKDOWN_SPECIAL:
            out.append("\\" + char)
        elif char == "@":
            out.append("@\u200b")
        else:
            out.append(char)
    return "".join(out)


def code(text: str) -> str:
    """Untrusted text as a Markdown code span: a fence longer than any backtick run inside."""
    text = one_line(text)
    longest = run = 0
    for char in text:
        run = run + 1 if char == "`" else 0
        longest = max(longest, run)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text.strip() else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def render_markdown(result: AuditResult, *, max_length: int = GITHUB_COMMENT_LIMIT) -> str:
    page = Page(max_length - _NOTE_RESERVE)
    page.add(Section(_headline(result)))
    warnings = [use for use in result.waivers if use.state != "applied"]
    if warnings and not page.add(
        Section(
            [f"> ⚠️ **{plural(len(warnings), 'waiver')} to look at**", ">"],
            [f"> - {use.state}: {md(use.message)}" for use in warnings],
            [""],
            what="waiver warnings",
        )
    ):
        page.left_out.append(plural(len(warnings), "waiver warning"))
    failing = result.failing_runs()
    if failing:
        page.add(Section([f"#### Runs failing the gate ({len(failing)})", ""]))
        for index, run in enumerate(failing):
            if not page.add(_run_section(run, result)):
                page.left_out.append(plural(len(failing) - index, "failing run"))
                break
    failing_ids = {run.run_id for run in failing}
    below = [run for run in result.runs if run.open_findings and run.run_id not in failing_ids]
    if below and not page.add(
        _folded(
            f"Runs with findings below the gate ({len(below)})",
            f"{plural(len(below), 'run')} with findings the gate lets pass",
            [_below_gate_item(run) for run in below],
            what="runs below the gate",
        )
    ):
        page.left_out.append(plural(len(below), "run") + " with findings below the gate")
    waived = [(run, f) for run in result.runs for f in run.waived_findings]
    if waived and not page.add(
        _folded(
            f"Waived findings ({len(waived)})",
            plural(len(waived), "waived finding"),
            [_waived_item(run, finding) for run, finding in waived],
            what="waived findings",
        )
    ):
        page.left_out.append(plural(len(waived), "waived finding"))
    text = "\n".join(page.lines).rstrip("\n") + "\n"
    if page.left_out:
        text += (
            f"\n_Not shown, to stay within {max_length:,} characters: "
            f"{'; '.join(page.left_out)}. The full result: `mlflow-audit check --format json` "
            "or `--format table`._\n"
        )
    return text


# --------------------------------------------------------------------------- parts


def _headline(result: AuditResult) -> list[str]:
    statuses = result.status_counts()
    severities = result.severity_counts()
    waived = sum(len(run.waived_findings) for run in result.runs)
    experiments = {run.experiment_id for run in result.runs}
    failing = len(result.failing_runs())
    outcomes = result.outcome_counts()
    if result.fail_on == "never" and result.min_score is None:
        icon, verdict = "⚪", "gate off (`--fail-on never`)"
    elif result.gate_failed:
        icon, verdict = "❌", "gate failed"
    else:
        icon, verdict = "✅", "gate passed"
    score = f"{result.score:g}% of the applicable rule evaluations pass (unknown ones do not)"
    if result.min_score is not None:
        score += f" (min {result.min_score:g}%)"
    lines = [
        f"### {icon} mlflow-audit: {verdict}",
        "",
        f"**{plural(len(result.runs), 'run')}** in {plural(len(experiments), 'experiment')}: "
        f"{statuses['pass']} pass · {statuses['warn']} warn · {statuses['fail']} fail  ",
        f"**Open findings:** {plural(severities['error'], 'error')} · "
        f"{plural(severities['warning'], 'warning')} · {severities['info']} info · "
        f"{waived} waived  ",
        f"**Rules on runs:** {outcomes['pass']} pass · {outcomes['fail']} fail · "
        f"{outcomes['waived']} waived · {outcomes['unknown']} unknown · "
        f"{outcomes['not_applicable']} not applicable  ",
        f"**Score:** {score}",
        "",
    ]
    reasons = []
    if failing:
        reasons.append(
            f"{plural(failing, 'run has', 'runs have')} findings at or above "
            f"{result.fail_on} (`--fail-on {result.fail_on}`)"
        )
    if result.score_too_low:
        reasons.append(f"the score is below `--min-score {result.min_score:g}`")
    if reasons:
        lines += ["Gate failed: " + "; ".join(reasons) + ".", ""]
    policy = result.policy
    version = f" {md(str(policy['version']))}" if policy.get("version") else ""
    lines += [
        f"<sub>policy {code(str(policy.get('name', '')))}{version} · "
        f"{plural(len(result.rules), 'rule')} · mlflow-audit {md(result.tool_version)}"
        + (f" · stopped after `--max-runs {len(result.runs)}`" if result.truncated else "")
        + f"<br>Evidence mapped to provisions. {md(SCOPE_NOTE)}</sub>",
        "",
    ]
    return lines


def _run_section(run: RunResult, result: AuditResult) -> Section:
    opening = [
        f"##### {_STATUS_ICON[run.status]} {md(run_label(run))} · "
        f"experiment {md(experiment_label(run))}",
        "",
        f"run {code(run.run_id)}"
        # Registered model names are free text: escaped like the rest, not quoted as code.
        + "".join(f" · model {md(version)}" for version in run.model_versions),
        "",
    ]
    closing = [""]
    findings = run.open_findings
    if len(findings) > _FOLD_OVER:
        counts = {s: sum(f.severity == s for f in findings) for s in _ICON}
        summary = ", ".join(
            plural(n, s) if s != "info" else f"{n} info" for s, n in counts.items() if n
        )
        opening += [
            f"<details><summary>{plural(len(findings), 'open finding')}: {summary}</summary>",
            "",
        ]
        closing = ["", "</details>", ""]
    items = [_gap_item(list(group)) for _, group in groupby(findings, key=lambda f: f.rule_id)]
    rules = {rule.id: rule for rule in result.rules}
    items += [
        f"- ❔ **unknown** {code(rule_id)} {md(rules[rule_id].title)}  \n"
        f"  why: {md(rules[rule_id].unknown or '')}"
        for rule_id in run.unknown
        if rule_id in rules
    ]
    if run.not_applicable:
        items.append(
            "- ⚪ not applicable: " + ", ".join(code(rule_id) for rule_id in run.not_applicable)
        )
    # The note saying what was left out has a fixed room: the id, never the (long) name.
    return Section(opening, items, closing, what=f"the gaps of run {md(shorten(run.run_id, 40))}")


def _gap_item(findings: list[Finding]) -> str:
    first = findings[0]
    lines = [
        f"- {_ICON[first.severity]} **{first.severity}** {code(first.rule_id)} {md(first.gap_text)}"
    ]
    shown = findings[:_SHOWN_PER_RULE]
    lines += [f"  - found: {md(located(finding))}" for finding in shown]
    if len(findings) > len(shown):
        lines.append(f"  - … and {len(findings) - len(shown)} more like it")
    if first.severity != "info":  # an observation, not a gap: no fix to spell out
        citations = tuple(first.citations)
        if citations:
            lines.append("  - relevant to: " + ", ".join(md(c) for c in citations))
        lines.append(f"  - fix: {md(first.remediation)}")
    return "\n".join(lines)


def _below_gate_item(run: RunResult) -> str:
    rules = {f.rule_id: f.severity for f in run.open_findings}
    return (
        f"- {_STATUS_ICON[run.status]} {md(run_label(run))} · {md(experiment_label(run))} "
        f"({code(run.run_id)}): "
        + ", ".join(f"{_ICON[severity]} {code(rule)}" for rule, severity in rules.items())
    )


def _waived_item(run: RunResult, finding: Finding) -> str:
    waiver = finding.waiver
    assert waiver is not None
    return (
        f"- 🔕 {code(finding.rule_id)} on {md(run_label(run))} ({code(run.run_id)}): "
        f"{md(located(finding))}  \n"
        f"  waived: {md(waiver.reason)} — approved by {md(waiver.approved_by)}, expires "
        f"{waiver.expires.isoformat()} ({md(waiver.origin)})"
    )


def _folded(title: str, summary: str, items: list[str], *, what: str) -> Section:
    if len(items) <= _FOLD_OVER:
        return Section([f"#### {title}", ""], items, [""], what=what)
    return Section(
        [f"#### {title}", "", f"<details><summary>{html.escape(summary)}</summary>", ""],
        items,
        ["", "</details>", ""],
        what=what,
    )


# --------------------------------------------------------------------------- size budget


@dataclass
class Section:
    opening: list[str]
    items: list[str] = field(default_factory=list)
    closing: list[str] = field(default_factory=list)
    what: str = ""


@dataclass
class Page:
    budget: int
    lines: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)
    used: int = 0

    def add(self, section: Section) -> bool:
        """Add the section with as many of its items as fit. False, and nothing added, when not
        even its opening and first item fit: the caller says what was left out."""
        fixed = _size(section.opening) + _size(section.closing)
        first = _size(section.items[:1])
        if self.used + fixed + first > self.budget:
            return False
        self._take(section.opening)
        kept = 0
        for item in section.items:
            if self.used + _size([item]) + _size(section.closing) > self.budget:
                break
            self._take([item])
            kept += 1
        if kept < len(section.items):
            self.left_out.append(
                f"{plural(len(section.items) - kept, 'entry', 'entries')} of {section.what}"
            )
        self._take(section.closing)
        return True

    def _take(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.lines.append(line)
            self.used += len(line.encode("utf-8")) + 1


def _size(lines: Iterable[str]) -> int:
    return sum(len(line.encode("utf-8")) + 1 for line in lines)
