"""Evaluate evidence records against a policy: the stage between collect and render."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, NamedTuple

from audit import __version__
from audit.describe import (
    NEARBY,
    brief,
    entry_names,
    evidence_text,
    item_label,
    nearby,
    node_at,
)
from audit.evidence import sha256_hex
from audit.policy import Policy, Rule, Violation
from audit.result import (
    AuditResult,
    Evidence,
    FailOn,
    Finding,
    RunResult,
    sort_findings,
    worst_first,
)
from audit.sources import CollectedRun
from audit.waivers import RunScope, WaiverSet


class Verdict(NamedTuple):
    """What the policy decided on one record: the findings of the rules that apply and can be
    decided, and the rules that do not apply or cannot be decided from MLflow's record."""

    findings: tuple[Finding, ...]
    not_applicable: tuple[str, ...]
    unknown: tuple[str, ...]


def judge_record(record: Mapping[str, Any], policy: Policy) -> Verdict:
    """Every rule of the policy decided on one record. A rule whose `applies_if` the record
    does not meet is not applicable, one whose `known_if` it does not meet is unknown; their
    failing constraints are no findings. The rest fail with a finding per place, or pass."""
    not_applicable, unknown = policy.undecided(record)
    if policy.version_rule_ids and "lineage" not in record:
        # A run is not a model version: rules about the system it belongs to are not asked.
        not_applicable = _without(not_applicable, policy.version_rule_ids)
        unknown = _without(unknown, policy.version_rule_ids)
    undecided = {*not_applicable, *unknown}
    findings: dict[tuple[str, str], Finding] = {}
    fixes = policy.remediations
    for violation in policy.violations(record):
        rule = violation.rule
        if rule.id in undecided:
            continue
        key = (rule.id, violation.pointer)
        if key in findings:
            continue
        findings[key] = _finding(
            rule,
            violation.pointer,
            _observation(violation, record),
            policy.remediation(rule, record) if rule.id in fixes else rule.remediation,
        )
    for finding in (*_secret_findings(record), *_unreadable_findings(record)):
        findings[(finding.rule_id, finding.pointer)] = finding
    return Verdict(
        sort_findings(findings.values(), policy.rule_order),
        _shared(not_applicable),
        _shared(unknown),
    )


def evaluate_record(record: Mapping[str, Any], policy: Policy) -> tuple[Finding, ...]:
    """The findings for one evidence record, most severe first; one per rule and place."""
    return judge_record(record, policy).findings


#: The lists of undecided rules without the rules about model versions, by the list.
_WITHOUT: dict[tuple[str, ...], tuple[str, ...]] = {}


def _without(ids: tuple[str, ...], left_out: frozenset[str]) -> tuple[str, ...]:
    kept = _WITHOUT.get(ids)
    if kept is None:
        if len(_WITHOUT) >= 4096:
            _WITHOUT.clear()
        kept = _WITHOUT[ids] = tuple(rule_id for rule_id in ids if rule_id not in left_out)
    return kept


#: Most runs share their lists of undecided rules: one tuple for all of them.
_SHARED_IDS: dict[tuple[str, ...], tuple[str, ...]] = {}


def _shared(ids: tuple[str, ...]) -> tuple[str, ...]:
    if not ids:
        return ()
    if len(_SHARED_IDS) >= 4096:
        _SHARED_IDS.clear()
    return _SHARED_IDS.setdefault(ids, ids)


#: Findings already made, by rule, place, message and fix: most runs of a store share their
#: gaps ("/data/version: missing"), and a finding is immutable, so runs share one object
#: instead of each holding its own (about 1 KB per run of an audit that keeps 100,000 results;
#: a batch of results from a worker process pickles each shared finding once). Bounded:
#: cleared when full.
_FINDINGS: dict[tuple[int, str, str, str], tuple[Rule, Finding]] = {}
_FINDINGS_HELD = 50_000


def _finding(rule: Rule, pointer: str, message: str, remediation: str) -> Finding:
    key = (id(rule), pointer, message, remediation)
    held = _FINDINGS.get(key)
    if held is not None and held[0] is rule:  # the rule held with it keeps its id unique
        return held[1]
    finding = Finding(
        rule_id=rule.id,
        title=rule.title,
        category=rule.category,
        severity=rule.severity,
        pointer=pointer,
        message=message,
        provisions=rule.provisions,
        remediation=remediation,
        gap=rule.gap_text,
    )
    if len(_FINDINGS) >= _FINDINGS_HELD:
        _FINDINGS.clear()
    _FINDINGS[key] = (rule, finding)
    return finding


class EvaluatedRun(NamedTuple):
    """One run's result, with the collected run itself when the caller keeps records. (A named
    tuple: worker processes send back one per run, and tuples pickle fastest.)"""

    result: RunResult
    collected: CollectedRun | None = None
    #: The waivers that matched its findings (`WaiverSet.lookup`), for the gathering process to
    #: count.
    waiver_matches: tuple[int, ...] = ()


@dataclass(frozen=True)
class RunEvaluator:
    """What `evaluate` does to each run: its findings, waivers applied. A source may call it
    where it builds the record (`Source.collect_each`: in the worker processes of a large SQL
    audit), so that only the result, not the record, crosses to the auditing process."""

    policy: Policy
    waivers: WaiverSet | None = None
    #: Also return the collected run (its record and metric histories), for reports.
    keep: bool = False
    #: Called with each record and its result where they are made: an export writes the
    #: subject's document there (`audit.exports.writer.SubjectWriter`).
    export: Callable[[Mapping[str, Any], RunResult], None] | None = None

    def __call__(self, item: CollectedRun) -> EvaluatedRun:
        record = item.record
        run = record["run"]
        verdict = judge_record(record, self.policy)
        findings, matches = _waive(verdict.findings, record, self.waivers)
        result = RunResult(
            run_id=run["id"],
            run_name=run["name"],
            experiment_id=run["experiment_id"],
            experiment_name=run["experiment_name"],
            evidence_sha256=item.evidence_sha256 or sha256_hex(record),
            findings=findings,
            selected_by=item.selected_by,
            model_versions=tuple(str(v) for v in item.model_versions),
            not_applicable=verdict.not_applicable,
            unknown=verdict.unknown,
            evidence=pass_evidence(record, self.policy, verdict) if self.keep else None,
        )
        if self.export is not None:
            self.export(record, result)
        return EvaluatedRun(result, item if self.keep else None, matches)


def pass_evidence(
    record: Mapping[str, Any], policy: Policy, verdict: Verdict
) -> dict[str, Evidence]:
    """What satisfied each rule that passes on the record: the places, and them in words."""
    failed = {finding.rule_id for finding in verdict.findings}
    undecided = {*verdict.not_applicable, *verdict.unknown}
    evidence = {}
    for rule_id, pointers in policy.satisfied_by(record).items():
        if rule_id not in failed and rule_id not in undecided:
            evidence[rule_id] = Evidence(evidence_text(record, pointers), pointers)
    return evidence


def evaluate(
    collected: Iterable[CollectedRun | EvaluatedRun | Mapping[str, Any]],
    policy: Policy,
    *,
    store: str = "",
    source: str = "",
    selection: Mapping[str, Any] | None = None,
    fail_on: FailOn = "error",
    min_score: float | None = None,
    waivers: WaiverSet | None = None,
    keep_records: bool = False,
    truncated_at: int | None = None,
    on_run: Callable[[int], None] | None = None,
) -> AuditResult:
    """Evaluate collected runs (or plain evidence records, or runs a source evaluated already
    with a `RunEvaluator` of this policy and these waivers). Records are streamed: only findings
    are kept, unless `keep_records` asks for the records too. Findings a waiver matches are
    kept, marked with it."""
    evaluator = RunEvaluator(policy, waivers, keep=keep_records)
    runs: list[RunResult] = []
    records: dict[str, Mapping[str, Any]] | None = {} if keep_records else None
    for each in collected:
        if isinstance(each, EvaluatedRun):
            item = each
        else:
            item = evaluator(each if isinstance(each, CollectedRun) else CollectedRun(record=each))
        runs.append(item.result)
        if waivers is not None:
            waivers.count(item.waiver_matches)
        if records is not None and item.collected is not None:
            records[item.result.run_id] = item.collected.record
        if on_run is not None:
            on_run(len(runs))
    versions = any(run.model_versions for run in runs)
    if versions and policy.version_rule_ids:
        runs = version_rules_not_applicable(runs, policy)
    return AuditResult(
        tool_version=__version__,
        generated_at=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        store=store,
        source=source,
        selection=dict(selection or {}),
        policy=policy.to_dict(),
        rules=policy.rules_for(versions),
        runs=worst_first(runs),
        fail_on=fail_on,
        min_score=min_score,
        truncated=truncated_at is not None and len(runs) >= truncated_at,
        records=records,
        waivers=waivers.uses() if waivers is not None else (),
    )


def version_rules_not_applicable(runs: list[RunResult], policy: Policy) -> list[RunResult]:
    """In an audit of model versions and runs, the runs with the rules about model versions
    listed as not applicable to them (a run audit alone leaves those rules out)."""
    added = tuple(rule.id for rule in policy.rules if rule.id in policy.version_rule_ids)
    return [
        run
        if run.model_versions
        else replace(run, not_applicable=_shared((*run.not_applicable, *added)))
        for run in runs
    ]


def _waive(
    findings: tuple[Finding, ...], record: Mapping[str, Any], waivers: WaiverSet | None
) -> tuple[tuple[Finding, ...], tuple[int, ...]]:
    """The findings with the waivers that accept them, and every waiver match to count."""
    if waivers is None or not findings:
        return findings, ()
    scope = RunScope.of(record)
    waived = []
    matches: list[int] = []
    for finding in findings:
        waiver, matched = waivers.lookup(finding.rule_id, scope)
        waived.append(replace(finding, waiver=waiver))
        matches.extend(matched)
    return tuple(waived), tuple(matches)


# --------------------------------------------------------------------------- messages


def _observation(violation: Violation, record: Mapping[str, Any]) -> str:
    """What the evidence shows at the failing place, in a few words, with what is nearby."""
    instance = violation.instance
    keyword = violation.keyword
    pointer = violation.pointer
    if keyword == "required":
        detail = "missing"
    elif instance is None or instance == "":
        detail = "not recorded"
    elif keyword in ("minItems", "minProperties") or (
        keyword == "contains" and isinstance(instance, list) and not instance
    ):
        detail = "none recorded"
    elif keyword == "contains":
        # By name, without values: runs with the same gap share one finding.
        found = entry_names(pointer.split("/")[1] if pointer else "", instance)
        detail = f"{len(instance)} recorded, none meets the rule: {found}"
    elif keyword in ("const", "enum", "not"):
        detail = f"is {brief(instance)}"
    elif keyword == "pattern":
        detail = f"{brief(instance)} is not in the expected form"
    elif keyword in ("anyOf", "oneOf"):
        detail = "no accepted form of evidence found"
    elif keyword == "type":
        detail = f"{brief(instance)} has the wrong type"
    else:
        detail = " ".join(violation.message.split())[:200]
    found_nearby = nearby(record, pointer) if pointer in NEARBY else None
    if found_nearby:
        detail = f"{detail}; found {found_nearby}"
    label = item_label(record, pointer)
    template = violation.rule.message
    if template:
        return _fill(template, where=pointer or "/", label=label or "", found=detail)
    where = f"{pointer} ({label})" if label else pointer or "/"
    return f"{where}: {detail}"


_PLACEHOLDER = re.compile(r"\{(where|label|found)\}")


def _fill(template: str, **values: str) -> str:
    """The policy's message with its placeholders replaced. Not `str.format`: the template
    comes from a policy file and must not reach attributes of the values."""
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], template)


# --------------------------------------------------------------------------- logged secrets

SECRETS_RULE_ID = "secrets.logged"
_SECRETS_TITLE = "No credentials are logged to MLflow"
_SECRETS_GAP = "A credential is logged to MLflow"
# Art. 15(5) asks for resilience against unauthorised third parties, naming attacks on the
# training data (data poisoning) and on pre-trained components (model poisoning); a credential to
# the data store, model hub or registry in readable run data opens exactly those paths. (For a
# credential to an unrelated service it is a security problem the text does not name.)
_SECRETS_PROVISIONS = ("eu-ai-act/art-15/5",)
# One text for every place a secret can sit: outputs show a rule's remediation once for all its
# findings in a run, and the message names the place.
_SECRETS_REMEDIATION = (
    "Rotate the credential now: anyone who can read this tracking store can use it. Then "
    "remove it: a tag with MlflowClient().delete_tag(run_id, key), a registered version's tag "
    "with delete_model_version_tag(name, version, key), a git remote URL by fixing the remote "
    "and set_tag(run_id, 'mlflow.source.git.repoURL', clean_url). A param, a logged file or a "
    "dataset input cannot be deleted or changed in MLflow: delete the run "
    "(MlflowClient().delete_run(run_id), then `mlflow gc --backend-store-uri URI --run-ids "
    "RUN_ID` purges it). Pass secrets to jobs through environment variables or a secret "
    "manager, never as params, tags or logged files."
)


def _secret_findings(record: Mapping[str, Any]) -> list[Finding]:
    """One warning per value that redaction replaced (collection.redacted), whatever the policy: a
    leaked credential is a problem of its own, not a gap in the evidence."""
    collection = record.get("collection")
    pointers = collection.get("redacted") if isinstance(collection, Mapping) else None
    return [
        Finding(
            rule_id=SECRETS_RULE_ID,
            title=_SECRETS_TITLE,
            category="run",
            severity="warning",
            pointer=pointer,
            message=f"{pointer} ({_secret_place(record, pointer)}): looks like a credential; "
            "shown as [redacted]",
            provisions=_SECRETS_PROVISIONS,
            remediation=_SECRETS_REMEDIATION,
            gap=_SECRETS_GAP,
        )
        for pointer in (pointers if isinstance(pointers, list) else ())
        if isinstance(pointer, str)
    ]


def _secret_place(record: Mapping[str, Any], pointer: str) -> str:
    """Where the secret was logged: the param or tag by name, never the value."""
    parts = [part.replace("~1", "/").replace("~0", "~") for part in pointer.split("/")[1:]]
    if len(parts) == 2 and parts[0] == "hyperparameters":
        return f"param {json.dumps(parts[1], ensure_ascii=False)}"
    if len(parts) == 2 and parts[0] == "tags":
        return f"tag {json.dumps(parts[1], ensure_ascii=False)}"
    if len(parts) >= 5 and parts[0] == "models" and parts[2] == "registered_versions":
        version = node_at(record, "/" + "/".join(pointer.split("/")[1:5]))
        if isinstance(version, Mapping):
            where = (
                f"registered model {brief(version.get('name'))} version {version.get('version')}"
            )
            if parts[4] == "tags" and len(parts) == 6:
                return f"tag {json.dumps(parts[5], ensure_ascii=False)} of {where}"
            if parts[4:] == ["description"]:
                return f"description of {where}"
    if parts == ["source", "git_repo_url"]:
        return "git remote URL, tag mlflow.source.git.repoURL"
    if parts == ["run", "name"]:
        return "run name, tag mlflow.runName"
    label = item_label(record, pointer)
    return f"in {label}" if label else "in the run's data"


# --------------------------------------------------------------------------- unreadable artifacts

UNREADABLE_RULE_ID = "artifacts.unreadable"
_UNREADABLE_TITLE = "The run's artifacts could be read"
_UNREADABLE_GAP = "Artifacts could not be read"
# The environment and model files the unread artifacts may hold are documentation evidence.
_UNREADABLE_PROVISIONS = ("eu-ai-act/art-11/1", "eu-ai-act/annex-iv/1/c")
_UNREADABLE_REMEDIATION = (
    "Make the artifacts readable where the store says they are, then audit again: restore a "
    "moved or deleted artifact folder (or audit the store on the machine that has it), give "
    "the auditing user read access, or keep the file within the audit's bounds (1 MiB; YAML "
    "without alias bombs). A remote artifact location other than the tracking server is read "
    "only when you allow it with --allow-artifact-location PREFIX, which lets MLflow send it "
    "the credentials it has for that location: allow only locations you trust."
)


def _unreadable_findings(record: Mapping[str, Any]) -> list[Finding]:
    """One error per artifact left unread (collection.notes), whatever the policy: the evidence
    it may hold is unknown, not absent, and an audit that could not see it must not pass."""
    collection = record.get("collection")
    notes = collection.get("notes") if isinstance(collection, Mapping) else None
    if not notes or not isinstance(notes, list):
        return []
    return [
        Finding(
            rule_id=UNREADABLE_RULE_ID,
            title=_UNREADABLE_TITLE,
            category="environment",
            severity="error",
            pointer=f"/collection/notes/{index}",
            message=note,
            provisions=_UNREADABLE_PROVISIONS,
            remediation=_UNREADABLE_REMEDIATION,
            gap=_UNREADABLE_GAP,
        )
        for index, note in enumerate(notes)
        if isinstance(note, str)
    ]
