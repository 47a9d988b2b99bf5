"""`export --format oscal`: the whole audit as one OSCAL 1.1.3 assessment-results document
(JSON), for GRC tools to import.

How the audit maps onto OSCAL's model:

- the plan: mlflow-audit writes no OSCAL assessment plan; `import-ap` points at a back-matter
  resource that describes the policy the subjects were checked against (name, version, origin,
  and the SHA-256 of its RFC 8785 canonical JSON);
- the controls: each provision the rules asked are relevant to (``eu-ai-act/annex-iv/2/d``) is
  a reviewed control and its own objective, its id written as an OSCAL token
  (``eu-ai-act_annex-iv_2_d``: ``/``, which tokens cannot hold, as ``_``, which provision ids
  never hold, so the token maps back). No OSCAL catalog of these texts exists: each finding's
  target links to the text, and the frameworks are back-matter resources;
- the subjects: each run or model version is an inventory item of the result, with its MLflow
  ids and the SHA-256 of its evidence record, which is a back-matter resource too;
- observations: one per rule asked of each subject, method EXAMINE (the audit examines
  recorded evidence, it exercises nothing). A pass points at the places in the evidence record
  it rests on, a gap at the place that lacks evidence and what was found there; not applicable
  and unknown say so, and are neither findings nor satisfied;
- findings: one per failed or waived rule on a subject for each provision the rule is relevant
  to (a finding has one target), ``not-satisfied``, related to the rule's observation, with the
  rule's fix in the description. A waived gap is still not satisfied; it says so in a prop and
  in its remarks. No finding is ever ``satisfied``: the audit maps evidence to provisions, it
  does not assess conformity (`SCOPE_NOTE`, in the remarks).

The tool is an assessment asset (a software component) that every observation and finding
names as its origin. The result's props carry the audit's summary (`AuditResult.summary`).
Text from MLflow, policies and waivers is escaped for OSCAL's Markdown (`markup`) in markup
fields, and written visibly on one line (`audit.formats.text.one_line`) in plain strings.
UUIDs are derived from the facts (`ExportSettings.uuid`), never from the date: the same
subject keeps its identifiers from one export to the next, as OSCAL asks.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import orjson

from audit.exports import ExportSettings, Subject, evidence_places
from audit.formats.markdown import code
from audit.formats.rows import located, waiver_text
from audit.formats.text import one_line, plural
from audit.policy import BUILTIN_PREFIX, Rule
from audit.provisions import load_catalog
from audit.result import SCOPE_NOTE, AuditResult, RuleOutcome

OSCAL_VERSION = "1.1.3"
SUFFIX = ".oscal.json"
#: The namespace of every prop written here: names in OSCAL's own namespace are NIST's.
NS = "urn:mlflow-audit:oscal"
TOOL = "mlflow-audit"

# Characters OSCAL's Markdown gives a meaning within a line: CommonMark's, with `^` and `~`
# (superscript, subscript) and `{` `}` (`{{ insert: ... }}`). `&` and `<` as well: CommonMark
# reads entities and HTML there, and a backslash keeps them literal for every reader.
_INLINE = str.maketrans({char: "\\" + char for char in "\\`*_{}[]<>&|~^"})
# What opens a block at the start of a line: a heading, a quote, a list item.
_BLOCK_START = re.compile(r"[#>+-]|\d+[.)]")
#: `code` of the places in records, which recur run after run.
_code = functools.lru_cache(maxsize=4096)(code)
_NOT_SATISFIED = {"state": "not-satisfied", "reason": "fail"}
_STATUS_WORDS = {
    "pass": "holds",
    "fail": "not met",
    "waived": "not met, waived",
    "not_applicable": "not applicable",
    "unknown": "unknown",
}


def render(result: AuditResult, subjects: Sequence[Subject], settings: ExportSettings) -> bytes:
    """The document as compact JSON: one audit's is large (an observation per rule and subject,
    some 120 KB a subject indented, 55 % of it without), and its readers are programs."""
    document = {"assessment-results": assessment_results(result, subjects, settings)}
    return orjson.dumps(document) + b"\n"


def assessment_results(
    result: AuditResult, subjects: Sequence[Subject], settings: ExportSettings
) -> dict[str, Any]:
    policy = settings.policy
    summary = result.summary()
    selection = orjson.dumps(dict(result.selection), option=orjson.OPT_SORT_KEYS, default=str)
    scope = (settings.store, selection.decode())
    writer = _Writer(settings)
    for subject in subjects:
        writer.add(subject)
    policy_uuid = settings.uuid("oscal", "policy")
    policy_title = markup(str(policy.get("title") or policy.get("name") or "the policy"))
    local: dict[str, Any] = {}
    if writer.items:
        local["inventory-items"] = writer.items
    local["assessment-assets"] = writer.assets()
    outcome: dict[str, Any] = {
        "uuid": settings.uuid("oscal", "result", *scope),
        "title": f"Evidence in MLflow mapped to provisions: {policy_title}",
        "description": _result_description(summary, subjects, settings),
        "start": settings.generated_at,
        "end": settings.generated_at,
        "props": _summary_props(summary, len(subjects), settings),
        "local-definitions": local,
        "reviewed-controls": writer.reviewed_controls(),
    }
    if writer.observations:
        outcome["observations"] = writer.observations
    if writer.findings:
        outcome["findings"] = writer.findings
    outcome["remarks"] = SCOPE_NOTE
    return {
        "uuid": settings.uuid("oscal", "assessment-results", *scope),
        "metadata": {
            "title": f"{TOOL} assessment results: {policy_title}",
            "last-modified": settings.generated_at,
            "version": settings.generated_at,
            "oscal-version": OSCAL_VERSION,
            "props": _props(("tool", TOOL), ("tool-version", settings.tool_version)),
            "remarks": SCOPE_NOTE,
        },
        "import-ap": {
            "href": f"#{policy_uuid}",
            "remarks": f"{TOOL} writes no OSCAL assessment plan: the plan is the policy the "
            "subjects were checked against, described in the back matter.",
        },
        "results": [outcome],
        "back-matter": {
            "resources": [
                _policy_resource(policy_uuid, policy),
                *writer.framework_resources(),
                *writer.evidence_resources,
            ]
        },
    }


# --------------------------------------------------------------------------- ids and text


@functools.lru_cache(maxsize=4096)  # messages, reasons and fixes recur run after run
def markup(text: str) -> str:
    """Text as OSCAL markup (markup-line and markup-multiline are Markdown) that reads as the
    text itself, on one line: control characters and line breaks written out (`one_line`),
    each character with a meaning within a line backslash-escaped, and the start escaped where
    it could open a block. Not `audit.formats.markdown.md`, which is GitHub's: OSCAL's Markdown
    has ``^`` and ``{{ }}`` of its own, and writes ``&`` and ``<`` as themselves (entities
    would show as entities in its own converter), while ``( ) . : - @`` mean nothing in it
    and stay readable."""
    escaped = one_line(text).strip().translate(_INLINE)
    opening = _BLOCK_START.match(escaped)
    if opening is not None:
        at = opening.end() - 1
        escaped = f"{escaped[:at]}\\{escaped[at:]}"
    return escaped


def control_id(provision_id: str) -> str:
    """A provision id as an OSCAL token: ``eu-ai-act/annex-iv/2/d`` is
    ``eu-ai-act_annex-iv_2_d``. Tokens cannot hold ``/``; provision ids never hold ``_``
    (provisions.schema.json), so the token maps back to the id."""
    token = provision_id.replace("/", "_")
    return token if token[:1].isalpha() else f"_{token}"


def _rule_token(rule_id: str) -> str:
    """The target of a rule relevant to no provision (an unannotated policy constraint): its id
    as a token, any character a token cannot hold as ``_``."""
    token = "".join(c if c.isalnum() or c in "._-" else "_" for c in rule_id)
    return token if token[:1].isalpha() else f"_{token}"


def _props(*pairs: tuple[str, object]) -> list[dict[str, str]]:
    """Props in this tool's namespace; a value is plain text on one line, control characters
    written out, and a pair without a value is left out (OSCAL strings are never empty)."""
    props = []
    for name, value in pairs:
        text = "" if value is None else one_line(str(value)).strip()
        if text:
            props.append({"name": name, "ns": NS, "value": text})
    return props


def _fragment(pointer: str) -> str:
    """A JSON Pointer as a URI fragment (RFC 6901, section 6): never empty, no spaces."""
    return "#" + quote(pointer, safe="/!$&'()*+,;=:@")


# --------------------------------------------------------------------------- the subjects


@dataclass
class _Rule:
    """What every observation and finding of one rule shares, worked out once per rule."""

    title: str
    gap: str
    #: rule-id, severity, category: on its observations (with its provisions) and findings.
    props: list[dict[str, str]]
    provision_props: list[dict[str, str]]
    #: (target-id, target) for each provision; one target for a rule with none.
    targets: list[tuple[str, dict[str, Any]]]
    provisions: tuple[str, ...]


@dataclass
class _Writer:
    settings: ExportSettings
    items: list[dict[str, Any]] = field(default_factory=list)
    evidence_resources: list[dict[str, Any]] = field(default_factory=list)
    observations: list[dict[str, Any]] = field(default_factory=list)
    findings: list[dict[str, Any]] = field(default_factory=list)
    provisions: set[str] = field(default_factory=set)
    #: Finding targets that are no provision (rules relevant to none), in order.
    rule_targets: dict[str, None] = field(default_factory=dict)
    _rules: dict[Rule, _Rule] = field(default_factory=dict)
    _seen: dict[tuple[str, str], int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.tool_uuid = self.settings.uuid("oscal", "tool", self.settings.tool_version)
        self.origins = [{"actors": [{"type": "tool", "actor-uuid": self.tool_uuid}]}]

    def add(self, subject: Subject) -> None:
        identity = (subject.key, subject.run.evidence_sha256)
        seen = self._seen[identity] = self._seen.get(identity, 0) + 1
        # The same subject twice in one audit (two selections of one version) stays two items.
        ids = (*identity, str(seen)) if seen > 1 else identity
        item_uuid = self.settings.uuid("oscal", "subject", *ids)
        evidence_uuid = self.settings.uuid("oscal", "evidence", *ids)
        label = markup(subject.label)
        self.items.append(_inventory_item(subject, item_uuid, evidence_uuid))
        self.evidence_resources.append(_evidence_resource(subject, evidence_uuid, label))
        reference = [{"subject-uuid": item_uuid, "type": "inventory-item"}]
        for outcome in subject.outcomes():
            rule = self._rule(outcome.rule)
            self.provisions.update(rule.provisions)
            status = outcome.status
            # What was found at each place of a gap, escaped once for every part that shows it.
            gaps = [markup(located(finding)) for finding in outcome.findings]
            observation_uuid = self.settings.uuid("oscal", "observation", *ids, outcome.rule_id)
            observation: dict[str, Any] = {
                "uuid": observation_uuid,
                "title": f"{rule.title}: {_STATUS_WORDS[status]} ({label})",
                "description": _observation_text(outcome, status, label, gaps),
                "props": [*rule.props, *rule.provision_props, *_props(("outcome", status))],
                "methods": ["EXAMINE"],
                "types": ["finding" if status in ("fail", "waived") else "control-objective"],
                "origins": self.origins,
                "subjects": reference,
            }
            evidence = _relevant_evidence(subject, outcome, status, evidence_uuid, gaps)
            if evidence:
                observation["relevant-evidence"] = evidence
            observation["collected"] = self.settings.generated_at
            self.observations.append(observation)
            if status in ("fail", "waived"):
                self._add_findings(outcome, status, rule, ids, observation_uuid, label, gaps)

    def _add_findings(
        self,
        outcome: RuleOutcome,
        status: str,
        rule: _Rule,
        ids: tuple[str, ...],
        observation_uuid: str,
        label: str,
        gaps: list[str],
    ) -> None:
        found = "\n".join(f"- {gap}" for gap in gaps)
        fix = markup(outcome.remediation)
        waivers = dict.fromkeys(f.waiver for f in outcome.findings if f.waiver is not None)
        waived = _props(("waived", "true" if status == "waived" else None))
        for provision_id, (target_id, target) in zip(
            rule.provisions or (None,), rule.targets, strict=True
        ):
            if not rule.provisions:
                self.rule_targets[target_id] = None
            relevant = target.get("title") or markup(provision_id or outcome.rule_id)
            finding: dict[str, Any] = {
                "uuid": self.settings.uuid("oscal", "finding", *ids, outcome.rule_id, target_id),
                "title": f"{rule.gap} ({label})",
                "description": (
                    f"{rule.gap} on {label} ({outcome.severity}"
                    f"{', waived' if status == 'waived' else ''}), relevant to {relevant}. "
                    f"What the evidence record shows:\n\n{found}\n\nFix: {fix}"
                ),
                "props": [*rule.props, *_props(("provision", provision_id)), *waived],
                "origins": self.origins,
                "target": target,
                "related-observations": [{"observation-uuid": observation_uuid}],
            }
            if waivers:
                finding["remarks"] = "\n\n".join(
                    f"Waived: {markup(waiver_text(waiver))}; {markup(waiver.scope_text)}, "
                    f"written in {markup(waiver.origin)}. The gap stays not satisfied."
                    for waiver in waivers
                )
            self.findings.append(finding)

    def _rule(self, rule: Rule) -> _Rule:
        known = self._rules.get(rule)
        if known is not None:
            return known
        catalog = load_catalog()
        targets = []
        for provision_id in rule.provisions:
            token = control_id(provision_id)
            target: dict[str, Any] = {"type": "objective-id", "target-id": token}
            if provision_id in catalog:
                provision = catalog[provision_id]
                target["title"] = markup(f"{provision.citation}: {provision.title}")
                target["links"] = [
                    {"href": provision.link, "rel": "reference", "text": markup(provision.citation)}
                ]
            target["status"] = _NOT_SATISFIED
            targets.append((token, target))
        if not targets:
            token = _rule_token(rule.id)
            targets.append(
                (
                    token,
                    {
                        "type": "objective-id",
                        "target-id": token,
                        "title": markup(f"Policy rule {rule.id}, relevant to no provision"),
                        "status": _NOT_SATISFIED,
                    },
                )
            )
        made = self._rules[rule] = _Rule(
            title=markup(rule.title),
            gap=markup(rule.gap_text),
            props=_props(
                ("rule-id", rule.id), ("severity", rule.severity), ("category", rule.category)
            ),
            provision_props=_props(*(("provision", p) for p in rule.provisions)),
            targets=targets,
            provisions=rule.provisions,
        )
        return made

    def assets(self) -> dict[str, Any]:
        version = self.settings.tool_version
        return {
            "components": [
                {
                    "uuid": self.tool_uuid,
                    "type": "software",
                    "title": TOOL,
                    "description": f"{TOOL} {markup(version)}: collected the evidence records "
                    "from MLflow and checked them against the policy.",
                    "props": _props(("version", version)),
                    "status": {"state": "operational"},
                }
            ],
            "assessment-platforms": [
                {
                    "uuid": self.settings.uuid("oscal", "platform", version),
                    "title": f"{TOOL} {markup(version)}",
                    "uses-components": [{"component-uuid": self.tool_uuid}],
                }
            ],
        }

    def reviewed_controls(self) -> dict[str, Any]:
        catalog = load_catalog()
        known = [control_id(p) for p in catalog.sort(self.provisions)]
        controls: dict[str, Any] = {
            "control-selections": [{"include-controls": [{"control-id": c} for c in known]}]
            if known
            else [{"remarks": "The rules asked name no provision."}]
        }
        objectives = [*known, *self.rule_targets]
        if objectives:
            controls["control-objective-selections"] = [
                {"include-objectives": [{"objective-id": o} for o in objectives]}
            ]
        frameworks = self._frameworks()
        if frameworks:
            controls["links"] = [
                {"href": f"#{uuid}", "rel": "reference", "text": markup(framework.title)}
                for uuid, framework in frameworks
            ]
        controls["remarks"] = (
            "Each control is a provision the rules asked are relevant to, and its own "
            "objective: its id is the provision id of mlflow-audit's catalog with `/` written as "
            "`_` (`eu-ai-act_annex-iv_2_d` is `eu-ai-act/annex-iv/2/d`). No OSCAL catalog of "
            "these texts exists; each finding's target links to the text, and the back matter "
            "names the version of each text followed."
        )
        return controls

    def _frameworks(self) -> list[tuple[str, Any]]:
        catalog = load_catalog()
        return [
            (self.settings.uuid("oscal", "framework", framework.id), framework)
            for framework in catalog.frameworks_of(self.provisions)
        ]

    def framework_resources(self) -> list[dict[str, Any]]:
        return [
            {
                "uuid": uuid,
                "title": markup(framework.title),
                "props": _props(("framework", framework.id)),
                "citation": {"text": markup(framework.text_version)},
                "rlinks": [{"href": framework.link}],
                **({"remarks": markup(framework.note)} if framework.note else {}),
            }
            for uuid, framework in self._frameworks()
        ]


def _inventory_item(subject: Subject, item_uuid: str, evidence_uuid: str) -> dict[str, Any]:
    run = subject.run
    lineage = subject.lineage
    if lineage is not None:
        description = (
            f"Version {markup(subject.version or '')} of the registered model "
            f"{markup(subject.name)} in MLflow, audited with the runs of its lineage; its source "
            f"run is {code(run.run_id)}."
        )
        aliases = lineage["version"].get("aliases") or ()
    else:
        named = f"{markup(run.run_name)} ({code(run.run_id)})" if run.run_name else code(run.run_id)
        experiment = markup(run.experiment_name or run.experiment_id)
        description = f"The MLflow run {named} of the experiment {experiment}."
        aliases = ()
    return {
        "uuid": item_uuid,
        "description": description,
        "props": _props(
            ("subject-type", "model-version" if lineage is not None else "run"),
            ("registered-model", subject.name if lineage is not None else None),
            ("model-version", subject.version),
            ("aliases", ", ".join(str(alias) for alias in aliases) or None),
            ("run-id", run.run_id),
            ("run-name", run.run_name),
            ("experiment-id", run.experiment_id),
            ("experiment-name", run.experiment_name),
            ("evidence-sha256", run.evidence_sha256),
            ("status", run.status),
        ),
        "links": [{"href": f"#{evidence_uuid}", "rel": "reference", "text": "Evidence record"}],
    }


def _evidence_resource(subject: Subject, evidence_uuid: str, label: str) -> dict[str, Any]:
    return {
        "uuid": evidence_uuid,
        "title": f"Evidence record of {label}",
        "props": _props(("subject", subject.key)),
        "rlinks": [
            {
                "href": f"urn:mlflow-audit:evidence:{quote(subject.key, safe='')}",
                "media-type": "application/json",
                "hashes": [{"algorithm": "SHA-256", "value": subject.run.evidence_sha256}],
            }
        ],
        "remarks": "The evidence record mlflow-audit collected from MLflow "
        "(schemas/evidence-record.schema.json), redacted; a report folder's evidence.json holds "
        "it. The hash is the SHA-256 of its RFC 8785 canonical JSON.",
    }


def _policy_resource(policy_uuid: str, policy: Mapping[str, Any]) -> dict[str, Any]:
    name = str(policy.get("name") or "policy")
    origin = str(policy.get("origin") or "")
    if origin.startswith("builtin:"):
        href = BUILTIN_PREFIX + quote(origin.removeprefix("builtin:"), safe="")
    elif origin.startswith("/"):
        href = "file://" + quote(origin)
    else:
        href = quote(origin) or quote(name)
    rlink: dict[str, Any] = {"href": href, "media-type": "application/schema+json"}
    if policy.get("sha256"):
        rlink["hashes"] = [{"algorithm": "SHA-256", "value": str(policy["sha256"])}]
    return {
        "uuid": policy_uuid,
        "title": markup(
            f"Policy {name}" + (f" {policy['version']}" if policy.get("version") else "")
        ),
        "props": _props(
            ("policy-name", name),
            ("policy-version", policy.get("version")),
            ("policy-title", policy.get("title")),
            ("policy-origin", origin),
            ("policy-engine", policy.get("engine")),
        ),
        "rlinks": [rlink],
        "remarks": "The assessment plan: a JSON Schema over the evidence record whose rules "
        "(x-audit annotations) name the provisions each is relevant to. The hash is the "
        "SHA-256 of the policy document as RFC 8785 canonical JSON, not of the file's bytes.",
    }


# --------------------------------------------------------------------------- observations


def _observation_text(outcome: RuleOutcome, status: str, label: str, gaps: list[str]) -> str:
    rule = outcome.rule
    if status == "pass":
        text = f"{markup(rule.title)}: holds on {label}."
        evidence = outcome.evidence
        if evidence is not None:
            text += f" The evidence record shows {markup(evidence.text)}."
        return text
    if status in ("fail", "waived"):
        found = "\n".join(f"- {gap}" for gap in gaps)
        waived = " All its gaps are waived; they stay on the record." if status == "waived" else ""
        return (
            f"{markup(rule.gap_text)} on {label} ({outcome.severity}).{waived} "
            f"What the evidence record shows:\n\n{found}"
        )
    reason = markup(outcome.reason or "")
    if reason and not reason.endswith((".", "!", "?")):
        reason += "."
    if status == "not_applicable":
        return (
            f"{markup(rule.title)}: not applicable to {label}. {reason} Neither satisfied nor "
            "a gap."
        )
    return (
        f"{markup(rule.title)}: unknown on {label}; MLflow's record cannot show it either way. "
        f"{reason} Not satisfied, and counted as not passed."
    )


def _relevant_evidence(
    subject: Subject, outcome: RuleOutcome, status: str, evidence_uuid: str, gaps: list[str]
) -> list[dict[str, Any]]:
    """The places in the evidence record an outcome rests on: for a pass, where its evidence
    sits; for a gap, where evidence is missing or falls short, with what was found."""
    href = f"#{evidence_uuid}"
    if status == "pass":
        return [
            {
                "href": href,
                "description": f"The evidence record holds evidence at {_code(place)}.",
                "props": _props(("json-pointer", _fragment(place))),
            }
            for place in evidence_places(subject.record, outcome.rule)
        ]
    if status in ("fail", "waived"):
        return [
            {
                "href": href,
                "description": gap,
                "props": _props(("json-pointer", _fragment(finding.pointer))),
            }
            for finding, gap in zip(outcome.findings, gaps, strict=True)
        ]
    return []


# --------------------------------------------------------------------------- the summary


def _result_description(
    summary: Mapping[str, Any], subjects: Sequence[Subject], settings: ExportSettings
) -> str:
    versions = sum(1 for subject in subjects if subject.is_version)
    policy = settings.policy
    return (
        f"{TOOL} examined the evidence MLflow holds for "
        f"{plural(len(subjects) - versions, 'run')} and {plural(versions, 'model version')} "
        f"of {code(settings.store)} against the policy "
        f"{markup(str(policy.get('name') or ''))} {markup(str(policy.get('version') or ''))}: "
        f"{plural(summary['findings'], 'open finding')}, {summary['waived']} waived; "
        f"{summary['rule_passes']} of {summary['rule_evaluations']} applicable rule "
        f"evaluations pass (score {summary['score']}%).\n\n"
        "Each observation is one rule on one subject. Each finding is one failed or waived rule "
        "on one subject, for one provision the rule is relevant to; passes, rules that do not "
        "apply and rules MLflow's record cannot decide are observations only."
    )


def _summary_props(
    summary: Mapping[str, Any], subjects: int, settings: ExportSettings
) -> list[dict[str, str]]:
    gate = summary["gate"]
    policy = settings.policy
    return _props(
        ("store", settings.store),
        ("policy", policy.get("name")),
        ("policy-version", policy.get("version")),
        ("policy-sha256", policy.get("sha256")),
        ("subjects", subjects),
        ("open-findings", summary["findings"]),
        ("waived-findings", summary["waived"]),
        *((f"outcomes-{name}", count) for name, count in summary["outcomes"].items()),
        ("rule-evaluations", summary["rule_evaluations"]),
        ("rule-passes", summary["rule_passes"]),
        ("score", summary["score"]),
        ("fail-on", gate["fail_on"]),
        ("min-score", gate["min_score"]),
        ("gate-failed", "true" if gate["failed"] else "false"),
        ("truncated", "true" if summary["truncated"] else None),
    )
