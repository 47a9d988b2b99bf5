"""`--format junit`: JUnit XML, which Jenkins, GitLab, Azure Pipelines and GitHub test-report
actions show as test results.

One ``<testsuite>`` per run (named ``experiment / run (run id)``, with the run id, experiment
and evidence sha256 as properties), one ``<testcase>`` per rule evaluated on the run: every rule
of the policy, plus the rule ids only findings name (``schema:...``, ``secrets.logged``). The
class name is ``mlflow-audit.<experiment>.<run> (<run id>)``, with the dots of the names made
``_`` because CI tools split class names into packages at dots; the run id keeps two runs of the
same name apart.

**A test fails exactly when its findings fail the gate.** A rule with an open finding at or
above ``--fail-on`` (``result.fail_on``) is a ``<failure>`` (type: the severity; message: the
findings' messages; text: each finding with its pointer, the provisions it is relevant to and the
fix).
Open findings below the threshold (warnings and info with ``--fail-on error``; everything with
``--fail-on never``) leave the test passing and are written to its ``<system-out>``, so they are
on the record without turning the build red for something the gate accepts. A rule whose
findings are all waived is ``<skipped message="waived: REASON (approved by X, expires DATE)">``:
a known, accepted gap, never a failure. A rule that does not apply to the run is
``<skipped message="not applicable: REASON">``, and one whose answer MLflow's record cannot show
is ``<skipped message="unknown: REASON">``: neither is a pass, and the gate does not fail on
them (an unknown is counted as not passed in the score). A rule that passes carries the evidence
it passed on in its ``<system-out>`` when the audit looked for it (reports do). ``errors`` is
always 0: an audit that cannot complete exits 2 and writes no report.

When ``--min-score`` is set, a ``mlflow-audit gate`` suite holds a ``min-score`` test that fails
when the score is below it, so the build's verdict is visible among the tests too; expired and
unused waivers are written to that suite's ``<system-out>`` (the suite is there whenever either
applies).

Counts: each suite has ``tests``, ``failures``, ``errors`` and ``skipped``; the ``<testsuites>``
root has ``tests``, ``failures`` and ``errors``; the schema CI tools follow (the Jenkins xUnit
``junit-10.xsd``) has no ``skipped`` attribute there.

Everything from MLflow is untrusted text: ElementTree escapes markup, and control characters
(illegal in XML 1.0, or terminal escapes) are written out as ``\\x1b``-style escapes.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET  # builds the document; nothing here parses untrusted XML

from audit.formats.rows import (
    experiment_label,
    located,
    run_label,
    waiver_text,
)
from audit.formats.text import one_line, plural, shorten, visible
from audit.policy import SEVERITY_RANK
from audit.result import AuditResult, Finding, RuleOutcome, RunResult

_MESSAGE_LIMIT = 1_000  # a failure message is a one-line headline; the text has everything


def render_junit(result: AuditResult) -> str:
    root = ET.Element("testsuites", {"name": "mlflow-audit"})
    suites = [_run_suite(result, run) for run in result.runs]
    gate = _gate_suite(result)
    if gate is not None:
        suites.append(gate)
    root.extend(suites)
    _set(
        root,
        tests=sum(int(s.get("tests", "0")) for s in suites),
        failures=sum(int(s.get("failures", "0")) for s in suites),
        errors=0,
        time="0",
    )
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, "unicode") + "\n"


def _run_suite(result: AuditResult, run: RunResult) -> ET.Element:
    # Names are shown on one line in every CI tool; the properties keep the values as they are.
    experiment = one_line(experiment_label(run))
    name = one_line(run_label(run))
    suite = ET.Element("testsuite")
    properties = ET.SubElement(suite, "properties")
    for key, value in (
        ("run_id", run.run_id),
        ("run_name", run.run_name or ""),
        ("experiment_id", run.experiment_id),
        ("experiment", run.experiment_name or ""),
        ("evidence_sha256", run.evidence_sha256),
        ("policy", str(result.policy.get("name", ""))),
        ("policy_sha256", str(result.policy.get("sha256", ""))),
        ("fail_on", result.fail_on),
        *(("model_version", version) for version in run.model_versions),
    ):
        _sub(properties, "property", name=key, value=value)
    classname = (
        f"mlflow-audit.{experiment.replace('.', '_')}.{name.replace('.', '_')} ({run.run_id})"
    )
    counts = {"tests": 0, "failures": 0, "skipped": 0}
    for outcome in result.outcomes(run):
        counts["tests"] += 1
        case = _sub(
            suite,
            "testcase",
            name=f"{outcome.rule_id}: {outcome.title}",
            classname=classname,
            time="0",
        )
        kind = _fill_case(case, outcome, result)
        if kind is not None:
            counts[kind] += 1
    _set(
        suite,
        name=f"{experiment} / {name} ({run.run_id})",
        tests=counts["tests"],
        failures=counts["failures"],
        errors=0,
        skipped=counts["skipped"],
        time="0",
        timestamp=result.generated_at,
    )
    return suite


def _fill_case(case: ET.Element, outcome: RuleOutcome, result: AuditResult) -> str | None:
    """Mark the test case failed, skipped or passed; returns which count it adds to."""
    status = outcome.status
    if status in ("not_applicable", "unknown"):
        label = "not applicable" if status == "not_applicable" else "unknown"
        element = _sub(case, "skipped", message=f"{label}: {outcome.reason or ''}")
        element.text = visible(_undecided_details(outcome, label))
        return "skipped"
    failing = outcome.gate_findings(result.fail_on)
    below = tuple(f for f in outcome.open_findings if f not in failing)
    waived = outcome.waived_findings
    kind = None
    evidence = outcome.evidence
    if evidence is not None:
        _sub(case, "system-out").text = visible(f"evidence: {evidence.text}")
    if failing:
        messages = "; ".join(f.message for f in failing)
        element = _sub(
            case,
            "failure",
            message=shorten(messages, _MESSAGE_LIMIT),
            type=max((f.severity for f in failing), key=SEVERITY_RANK.__getitem__),
        )
        element.text = visible(_details(outcome, failing))
        kind = "failures"
    elif waived and not below:
        reasons = sorted({waiver_text(f.waiver) for f in waived if f.waiver is not None})
        element = _sub(case, "skipped", message="waived: " + "; ".join(reasons))
        element.text = visible(_details(outcome, waived))
        kind = "skipped"
    notes = []
    if below:
        notes.append(
            f"below the gate (--fail-on {result.fail_on}), not failing:\n"
            + _details(outcome, below)
        )
    if waived and kind != "skipped":
        notes.append(_details(outcome, waived))
    if notes:
        _sub(case, "system-out").text = visible("\n\n".join(notes))
    return kind


def _details(outcome: RuleOutcome, findings: tuple[Finding, ...]) -> str:
    lines = [
        f"{outcome.severity} {outcome.rule_id}: {outcome.title}",
        f"run {one_line(run_label(outcome.run))} ({outcome.run.run_id}) · experiment "
        f"{one_line(experiment_label(outcome.run))}",
    ]
    for finding in findings:
        lines.append(f"found: {located(finding)}")
        if finding.waiver is not None:
            lines.append(f"  waived: {waiver_text(finding.waiver)} [{finding.waiver.origin}]")
    citations = outcome.citations
    if citations:
        lines.append("relevant to: " + ", ".join(citations))
    lines.append("fix: " + outcome.remediation)
    return "\n".join(lines)


def _undecided_details(outcome: RuleOutcome, label: str) -> str:
    return "\n".join(
        [
            f"{label} {outcome.rule_id}: {outcome.title}",
            f"run {one_line(run_label(outcome.run))} ({outcome.run.run_id}) · experiment "
            f"{one_line(experiment_label(outcome.run))}",
            f"why: {outcome.reason or ''}",
        ]
    )


def _gate_suite(result: AuditResult) -> ET.Element | None:
    warnings = [use for use in result.waivers if use.state != "applied"]
    if result.min_score is None and not warnings:
        return None
    suite = ET.Element("testsuite")
    tests = failures = 0
    if result.min_score is not None:
        tests = 1
        case = _sub(suite, "testcase", name="min-score", classname="mlflow-audit.gate", time="0")
        score, least = f"{result.score:g}%", f"{result.min_score:g}%"
        if result.score_too_low:
            failures = 1
            failure = _sub(
                case, "failure", message=f"score {score} is below --min-score {least}", type="score"
            )
            failure.text = (
                f"{score} of the rule evaluations pass; the gate asks for at least {least} "
                "(--min-score)"
            )
        else:
            _sub(case, "system-out").text = f"score {score} reaches --min-score {least}"
    if warnings:
        _sub(suite, "system-out").text = visible(
            f"{plural(len(warnings), 'waiver')} to look at:\n"
            + "\n".join(f"{use.state}: {use.message}" for use in warnings)
        )
    _set(
        suite,
        name="mlflow-audit gate",
        tests=tests,
        failures=failures,
        errors=0,
        skipped=0,
        time="0",
        timestamp=result.generated_at,
    )
    return suite


def _sub(parent: ET.Element, tag: str, **attributes: str) -> ET.Element:
    element = ET.SubElement(parent, tag)
    _set(element, **attributes)
    return element


def _set(element: ET.Element, **attributes: str | int) -> None:
    for name, value in attributes.items():
        element.set(name, visible(str(value)))
