"""`export --format oscal`: one OSCAL 1.1.3 assessment-results document for the audit, valid
under NIST's JSON Schema (tests/reference/oscal-1.1.3) for every run and model version of the
test stores, and saying what the audit found: each failed rule a not-satisfied finding for each
provision it is relevant to, every other outcome an observation only."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import jsonschema
import orjson
import pytest
import regex
from jsonschema import Draft7Validator, FormatChecker, validators

import audit
from audit.evaluation import version_rules_not_applicable
from audit.exports import ExportSettings, Subject, evidence_places, settings_of, subjects_of
from audit.exports.oscal import NS, OSCAL_VERSION, control_id, markup, render
from audit.formats.text import one_line
from audit.policy import Policy, load_policy
from audit.result import SCOPE_NOTE, AuditResult
from tests.conftest import EXPORT_DATE, REPO, ExportCase, Store

REFERENCE = REPO / "tests" / "reference" / "oscal-1.1.3"
SCHEMA_FILE = REFERENCE / "oscal_assessment-results_schema.json"
#: NIST's release asset oscal_assessment-results_schema.json of OSCAL v1.1.3.
SCHEMA_SHA256 = "d9e34757f0c12aff61f52b821f0b8f83ba0ba75b3a149a202b08ba82f82bc4c3"
FUTURE = (dt.date.today() + dt.timedelta(days=90)).isoformat()


# --------------------------------------------------------------------------- validators


def _pattern(
    validator: Any, pattern: str, instance: Any, schema: Mapping[str, Any]
) -> Iterator[jsonschema.ValidationError]:
    # python-jsonschema's `pattern` calls `re.search`, which cannot compile the \p{L} and \p{N}
    # of OSCAL's TokenDatatype; the `regex` module reads them as Unicode's classes.
    if validator.is_type(instance, "string") and not regex.search(pattern, instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return json.loads(SCHEMA_FILE.read_bytes())


@pytest.fixture(scope="module")
def validator(schema: dict[str, Any]) -> Any:
    """NIST's schema as python-jsonschema reads Draft 7, with formats checked and `pattern`
    evaluated by `regex`."""
    formats = FormatChecker()
    # Without rfc3339-validator and rfc3986-validator these formats pass silently.
    assert {"date-time", "uri", "uri-reference"} <= set(formats.checkers)
    regexes = FormatChecker()
    regexes.checks("regex", raises=regex.error)(lambda text: bool(regex.compile(text)))
    Draft7Validator.check_schema(schema, format_checker=regexes)
    return validators.extend(Draft7Validator, {"pattern": _pattern})(schema, format_checker=formats)


@pytest.fixture(scope="module")
def rust_validator(schema: dict[str, Any]) -> Any:
    """The same schema read by jsonschema-rs: another implementation, whose regular expressions
    follow ECMA-262 (`$` is the end of the string, not also before a final newline)."""
    import jsonschema_rs

    return jsonschema_rs.Draft7Validator(schema, validate_formats=True)


def _errors(validator: Any, document: Any) -> list[str]:
    return [
        f"/{'/'.join(map(str, error.absolute_path))}: {error.message[:300]}"
        for error in validator.iter_errors(document)
    ]


# --------------------------------------------------------------------------- documents


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(None)


def _settings(
    policy: Policy, date: str = EXPORT_DATE, store: str = "test stores"
) -> ExportSettings:
    return ExportSettings(
        generated_at=date, tool_version="0.0.test", policy=policy.to_dict(), store=store
    )


def _result_of(subjects: Sequence[Subject], policy: Policy) -> AuditResult:
    """The result an audit of these subjects gives: its runs, and the policy's rules for them
    (with the rules about model versions not applicable to runs when both are there)."""
    versions = any(subject.is_version for subject in subjects)
    runs = [subject.run for subject in subjects]
    return AuditResult(
        tool_version="0.0.test",
        generated_at=EXPORT_DATE,
        store="test stores",
        source="sql",
        selection={},
        policy=policy.to_dict(),
        rules=policy.rules_for(versions),
        runs=version_rules_not_applicable(runs, policy) if versions else runs,
    )


def _document(
    subjects: Sequence[Subject], policy: Policy, date: str = EXPORT_DATE
) -> tuple[bytes, dict[str, Any]]:
    data = render(_result_of(subjects, policy), subjects, _settings(policy, date))
    return data, orjson.loads(data)


@pytest.fixture(scope="module")
def everything(export_cases: list[ExportCase], policy: Policy) -> tuple[bytes, dict[str, Any]]:
    """One document for every case of the test stores."""
    return _document([case.subject for case in export_cases], policy)


class Index:
    """A document's parts by UUID, and the subject each observation is about."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self.root = document["assessment-results"]
        (self.result,) = self.root["results"]
        self.items = {i["uuid"]: i for i in self.result["local-definitions"]["inventory-items"]}
        self.observations = {o["uuid"]: o for o in self.result.get("observations", [])}
        self.findings = self.result.get("findings", [])
        self.resources = {r["uuid"]: r for r in self.root["back-matter"]["resources"]}

    def item_of(self, subject: Subject, cases: int = 1) -> dict[str, Any]:
        matches = [
            item
            for item in self.items.values()
            if prop(item, "run-id") == subject.run.run_id
            and prop(item, "evidence-sha256") == subject.run.evidence_sha256
            and prop(item, "model-version") == subject.version
        ]
        assert len(matches) == cases, subject.label
        return matches[0]

    def observations_of(self, item: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """The item's observations by rule id."""
        found: dict[str, dict[str, Any]] = {}
        for observation in self.observations.values():
            if observation["subjects"][0]["subject-uuid"] == item["uuid"]:
                rule_id = prop(observation, "rule-id")
                assert rule_id is not None and rule_id not in found
                found[rule_id] = observation
        return found


def prop(part: Mapping[str, Any], name: str) -> str | None:
    values = props(part, name)
    assert len(values) <= 1, (name, values)
    return values[0] if values else None


def props(part: Mapping[str, Any], name: str) -> list[str]:
    return [p["value"] for p in part.get("props", []) if p["name"] == name and p["ns"] == NS]


def _text_of(markdown: str) -> str:
    """What a CommonMark reader shows of OSCAL markup that must hold only text (and code)."""
    from markdown_it import MarkdownIt

    shown = []
    for block in MarkdownIt("commonmark").parse(markdown):
        assert block.type in ("paragraph_open", "inline", "paragraph_close"), block.type
        for token in block.children or ():
            assert token.type in ("text", "code_inline", "softbreak"), token.type
            shown.append(token.content or "\n")
    return "".join(shown)


def _label_of(index: Index, case_ids: Mapping[str, str], path: Sequence[Any]) -> str:
    """The case an error at `path` of the document is about, where the path says."""
    parts = list(path)
    if parts[:3] == ["assessment-results", "results", 0] and len(parts) > 4:
        section, position = parts[3], parts[4]
        if section == "observations" and isinstance(position, int):
            observation = list(index.observations.values())[position]
            return case_ids.get(observation["subjects"][0]["subject-uuid"], "?")
        if section == "local-definitions" and len(parts) > 6:
            return case_ids.get(list(index.items)[parts[6]], "?")
    return "the document"


# --------------------------------------------------------------------------- the schema


def test_the_vendored_schema_is_nists_oscal_1_1_3_release(schema: dict[str, Any]) -> None:
    assert hashlib.sha256(SCHEMA_FILE.read_bytes()).hexdigest() == SCHEMA_SHA256
    assert SCHEMA_SHA256 in (REFERENCE / "README.md").read_text()
    assert schema["$id"] == "http://csrc.nist.gov/ns/oscal/1.1.3/oscal-ar-schema.json"
    token = schema["definitions"]["TokenDatatype"]["pattern"]
    assert token == r"^(\p{L}|_)(\p{L}|\p{N}|[.\-_])*$"  # as NIST wrote it, evaluated by regex


def test_the_validators_reject_what_the_schema_forbids(
    export_cases: list[ExportCase], policy: Policy, validator: Any, rust_validator: Any
) -> None:
    _, document = _document([export_cases[0].subject], policy)
    assert _errors(validator, document) == []
    assert rust_validator.is_valid(document)
    result = ["assessment-results", "results", 0]
    broken = [
        ([*result, "props", 0, "name"], "store/name"),  # a token holds no '/'
        ([*result, "props", 0, "name"], "9store"),  # nor starts with a digit
        ([*result, "start"], "2026-13-01T00:00:00Z"),  # date-time
        ([*result, "props", 0, "ns"], "not a uri"),  # uri
        ([*result, "props", 0, "value"], " padded"),  # a string's ends are not blank
        (["assessment-results", "uuid"], "6f1c2a8e-3b7d-1e4f-9a10-2c3d4e5f6a7b"),  # v4/v5 only
        ([*result, "observations", 0, "methods"], []),  # at least one
        ([*result, "observations", 0, "collected"], None),  # required
    ]
    for path, value in broken:
        changed = orjson.loads(orjson.dumps(document))
        node = changed
        for part in path[:-1]:
            node = node[part]
        if value is None:
            del node[path[-1]]
        else:
            node[path[-1]] = value
        assert _errors(validator, changed), (path, value)
        assert not rust_validator.is_valid(changed), (path, value)
    # Python's `$` also matches before a final newline; jsonschema-rs reads it as ECMA-262 does.
    changed = orjson.loads(orjson.dumps(document))
    changed["assessment-results"]["results"][0]["props"][0]["value"] += "\n"
    assert not rust_validator.is_valid(changed)


def test_every_case_of_the_test_stores_validates(
    export_cases: list[ExportCase],
    policy: Policy,
    everything: tuple[bytes, dict[str, Any]],
    validator: Any,
    rust_validator: Any,
) -> None:
    """The document of all 45 subjects against NIST's schema with python-jsonschema, then a
    document per store and per subject with jsonschema-rs; each failure names its case."""
    _, document = everything
    index = Index(document)
    case_ids = {index.item_of(case.subject)["uuid"]: case.id for case in export_cases}
    failures = [
        f"{_label_of(index, case_ids, error.absolute_path)}: {error.message[:300]}"
        for error in validator.iter_errors(document)
    ]
    assert failures == []
    assert rust_validator.is_valid(document)
    groups: dict[tuple[str, bool], list[Subject]] = {}
    for case in export_cases:
        groups.setdefault((case.store, case.subject.is_version), []).append(case.subject)
        _, alone = _document([case.subject], policy)
        if not rust_validator.is_valid(alone):
            errors = [error.message[:300] for error in rust_validator.iter_errors(alone)]
            failures.append(f"{case.id}: {errors[:3]}")
    for (store, versions), subjects in groups.items():
        _, together = _document(subjects, policy)
        if not rust_validator.is_valid(together):
            failures.append(f"{store} {'versions' if versions else 'runs'}: invalid")
    assert failures == []
    assert len(export_cases) == 45 and len(index.items) == 45


# --------------------------------------------------------------------------- the facts


def test_each_outcome_is_an_observation_and_each_gap_a_finding_per_provision(
    export_cases: list[ExportCase], everything: tuple[bytes, dict[str, Any]]
) -> None:
    _, document = everything
    index = Index(document)
    findings_of: dict[str, list[dict[str, Any]]] = {}
    for finding in index.findings:
        (related,) = finding["related-observations"]
        findings_of.setdefault(related["observation-uuid"], []).append(finding)
    expected_findings = 0
    for case in export_cases:
        subject = case.subject
        item = index.item_of(subject)
        assert prop(item, "evidence-sha256") == subject.run.evidence_sha256
        (link,) = item["links"]
        evidence = index.resources[link["href"].removeprefix("#")]
        (hashed,) = evidence["rlinks"][0]["hashes"]
        assert hashed == {"algorithm": "SHA-256", "value": subject.run.evidence_sha256}
        observations = index.observations_of(item)
        outcomes = subject.outcomes()
        assert list(observations) == [outcome.rule_id for outcome in outcomes], case.id
        for outcome in outcomes:
            observation = observations[outcome.rule_id]
            status = outcome.status
            where = f"{case.id} {outcome.rule_id}"
            assert prop(observation, "outcome") == status, where
            assert props(observation, "provision") == list(outcome.provisions), where
            assert observation["methods"] == ["EXAMINE"]
            pointers = [
                unquote((prop(evidence, "json-pointer") or "").removeprefix("#"))
                for evidence in observation.get("relevant-evidence", [])
            ]
            for evidence in observation.get("relevant-evidence", []):
                assert evidence["href"] == link["href"]
            related = findings_of.get(observation["uuid"], [])
            if status == "pass":
                places = evidence_places(subject.record, outcome.rule)
                assert places, where  # every pass of these stores rests on a place
                assert pointers == list(places), where
                assert related == [], where
                continue
            if status in ("not_applicable", "unknown"):
                assert pointers == [] and related == [], where
                assert outcome.reason and markup(outcome.reason) in observation["description"]
                continue
            assert status == "fail", where  # no waiver in these audits
            assert pointers == [f.pointer for f in outcome.findings], where
            targets = [finding["target"]["target-id"] for finding in related]
            assert targets == [control_id(p) for p in outcome.provisions], where
            for finding in related:
                target = finding["target"]
                assert target["type"] == "objective-id"
                assert target["status"] == {"state": "not-satisfied", "reason": "fail"}
                assert prop(finding, "rule-id") == outcome.rule_id
                assert prop(finding, "provision") in outcome.provisions
                assert target["target-id"] == control_id(prop(finding, "provision") or "")
                assert prop(finding, "waived") is None
            expected_findings += len(related)
    assert len(index.findings) == expected_findings
    # Nothing is ever said to be satisfied: passes are observations, not findings.
    assert b'"satisfied"' not in orjson.dumps(document)


def test_the_reviewed_controls_are_the_provisions_of_the_rules_asked(
    export_cases: list[ExportCase], everything: tuple[bytes, dict[str, Any]]
) -> None:
    _, document = everything
    index = Index(document)
    asked = {p for case in export_cases for o in case.subject.outcomes() for p in o.provisions}
    controls = index.result["reviewed-controls"]
    (selection,) = controls["control-selections"]
    listed = [control["control-id"] for control in selection["include-controls"]]
    assert sorted(listed) == sorted(control_id(p) for p in asked)
    # The tokens map back to the provision ids.
    assert {token.replace("_", "/") for token in listed} == asked
    (objectives,) = controls["control-objective-selections"]
    declared = {objective["objective-id"] for objective in objectives["include-objectives"]}
    assert {finding["target"]["target-id"] for finding in index.findings} <= declared
    frameworks = {p.split("/")[0] for p in asked}
    linked = [index.resources[link["href"][1:]] for link in controls["links"]]
    assert sorted(prop(r, "framework") or "" for r in linked) == sorted(frameworks)


def test_every_reference_resolves_and_every_uuid_is_unique(
    everything: tuple[bytes, dict[str, Any]],
) -> None:
    _, document = everything
    root = document["assessment-results"]
    declared: list[str] = []
    referenced: list[str] = []

    def walk(node: Any, key: str = "") -> None:
        if isinstance(node, dict):
            for name, value in node.items():
                walk(value, name)
        elif isinstance(node, list):
            for value in node:
                walk(value, key)
        elif key == "uuid":
            declared.append(node)
        elif key.endswith("-uuid"):
            referenced.append(node)
        elif key == "href" and node.startswith("#"):
            referenced.append(node[1:])

    walk(root)
    assert len(declared) == len(set(declared))
    assert set(referenced) <= set(declared)
    assert root["import-ap"]["href"][1:] in {r["uuid"] for r in root["back-matter"]["resources"]}


def test_the_document_says_what_it_is(
    everything: tuple[bytes, dict[str, Any]], policy: Policy
) -> None:
    _, document = everything
    root = document["assessment-results"]
    metadata = root["metadata"]
    assert metadata["oscal-version"] == OSCAL_VERSION == "1.1.3"
    assert metadata["last-modified"] == EXPORT_DATE
    assert metadata["remarks"] == SCOPE_NOTE
    assert prop(metadata, "tool") == "mlflow-audit"
    (plan,) = [
        r for r in root["back-matter"]["resources"] if r["uuid"] == root["import-ap"]["href"][1:]
    ]
    assert prop(plan, "policy-name") == policy.name
    assert prop(plan, "policy-version") == policy.version
    (rlink,) = plan["rlinks"]
    assert rlink["href"] == f"urn:mlflow-audit:policy:{policy.name}"
    assert rlink["hashes"] == [{"algorithm": "SHA-256", "value": policy.sha256}]
    (tool,) = root["results"][0]["local-definitions"]["assessment-assets"]["components"]
    actors = {
        actor["actor-uuid"]
        for part in (*root["results"][0]["observations"], *root["results"][0]["findings"])
        for origin in part["origins"]
        for actor in origin["actors"]
    }
    assert actors == {tool["uuid"]}


# --------------------------------------------------------------------------- real audits


def _waivers(tmp_path: Path) -> Path:
    path = tmp_path / "waivers.yaml"
    path.write_text(
        "waivers:\n"
        "  - rule: environment.platform\n    scope: all\n"
        "    reason: 'accepted <script>alert(1)</script> [x](javascript:y) for the pilot'\n"
        f"    approved_by: Jane Doe\n    expires: {FUTURE}\n"
    )
    return path


@pytest.mark.parametrize("kind", ["runs with waivers", "runs and a model version"])
def test_a_real_audit_exports_its_summary(
    kind: str,
    sqlite_store: Store,
    demo_store: Store,
    export_cases: list[ExportCase],
    policy: Policy,
    validator: Any,
    rust_validator: Any,
    tmp_path: Path,
) -> None:
    if kind == "runs with waivers":
        result = audit.check(
            tracking_uri=sqlite_store.uri, waivers=_waivers(tmp_path), keep_records=True
        )
    else:
        (complete,) = [
            c
            for c in export_cases
            if c.store == "demo" and c.subject.label.startswith("run complete ")
        ]
        result = audit.check(
            tracking_uri=demo_store.uri,
            run_id=complete.subject.run.run_id,
            model="churn-classifier/3",
            keep_records=True,
        )
    subjects = list(subjects_of(result, policy))
    settings = settings_of(result, EXPORT_DATE)
    document = orjson.loads(render(result, subjects, settings))
    assert _errors(validator, document) == []
    assert rust_validator.is_valid(document)

    index = Index(document)
    summary = result.summary()
    observed = Counter(prop(o, "outcome") for o in index.observations.values())
    versions = sum(subject.is_version for subject in subjects)
    # A run is not asked the rules about model versions: the summary counts them not applicable.
    skipped = (len(subjects) - versions) * len(policy.version_rule_ids) if versions else 0
    expected = dict(summary["outcomes"])
    expected["not_applicable"] -= skipped
    assert {outcome: observed.get(outcome, 0) for outcome in expected} == expected
    counted = {p["name"]: p["value"] for p in index.result["props"]}
    assert counted["open-findings"] == str(summary["findings"])
    assert counted["waived-findings"] == str(summary["waived"])
    assert counted["score"] == str(summary["score"])
    assert counted["rule-evaluations"] == str(summary["rule_evaluations"])
    assert counted["store"] == one_line(result.store)
    failed = Counter(
        (f["related-observations"][0]["observation-uuid"], prop(f, "rule-id"))
        for f in index.findings
        if prop(f, "waived") is None
    )
    assert len(failed) == sum(summary["runs_failing_rule"].values())
    waived = [f for f in index.findings if prop(f, "waived") == "true"]
    if kind == "runs with waivers":
        assert summary["waived"] and waived
        assert len({f["related-observations"][0]["observation-uuid"] for f in waived}) == sum(
            run.outcome_of("environment.platform") == "waived" for run in result.runs
        )
        for finding in waived:
            assert finding["target"]["status"]["state"] == "not-satisfied"
            assert "Waived" in finding["remarks"] and "Jane Doe" in finding["remarks"]
            # The reason reads as written: no HTML, no link.
            assert "accepted <script>alert(1)</script> [x](javascript:y) for the pilot" in (
                _text_of(finding["remarks"])
            )
            related = index.observations[finding["related-observations"][0]["observation-uuid"]]
            assert prop(related, "outcome") == "waived"
    else:
        assert versions == 1 and len(subjects) == 2
        assert waived == []


def test_a_policy_of_constraints_without_provisions(
    sqlite_store: Store, validator: Any, rust_validator: Any, tmp_path: Path
) -> None:
    """A user's policy whose constraint has no x-audit: each gap is still a finding, its target
    the rule, declared as an objective; no provision, so no control is said to be reviewed."""
    path = tmp_path / "bare policy.yaml"
    path.write_text(
        "$schema: https://json-schema.org/draft/2020-12/schema\n"
        "title: 'Bare <b>policy</b> *of* [ours](javascript:x)'\n"
        "x-audit-policy: {name: bare, version: '1'}\n"
        "properties: {run: {required: [owner]}}\n"
    )
    result = audit.check(tracking_uri=sqlite_store.uri, policy=str(path), keep_records=True)
    loaded = load_policy(str(path))
    subjects = list(subjects_of(result, loaded))
    document = orjson.loads(render(result, subjects, settings_of(result, EXPORT_DATE)))
    assert _errors(validator, document) == []
    assert rust_validator.is_valid(document)
    index = Index(document)
    assert len(index.findings) == len(subjects) == len(index.observations)
    (rule_id,) = {prop(finding, "rule-id") for finding in index.findings}
    assert rule_id is not None and rule_id.startswith("schema:")
    (target,) = {finding["target"]["target-id"] for finding in index.findings}
    controls = index.result["reviewed-controls"]
    assert "include-controls" not in controls["control-selections"][0]
    (objectives,) = controls["control-objective-selections"]
    assert objectives["include-objectives"] == [{"objective-id": target}]
    plan = index.resources[index.root["import-ap"]["href"][1:]]
    assert plan["rlinks"][0]["href"] == path.as_uri()
    assert _text_of(plan["title"]) == "Policy bare 1"
    assert _text_of(index.root["metadata"]["title"]).endswith(
        "Bare <b>policy</b> *of* [ours](javascript:x)"
    )


# --------------------------------------------------------------------------- rendering


def test_the_same_facts_give_the_same_bytes_and_a_new_date_changes_only_the_dates(
    export_cases: list[ExportCase], policy: Policy, everything: tuple[bytes, dict[str, Any]]
) -> None:
    data, _ = everything
    subjects = [case.subject for case in export_cases]
    assert _document(subjects, policy)[0] == data
    later = "2027-03-04T05:06:07Z"
    redated, _ = _document(subjects, policy, later)
    assert redated != data
    assert redated == data.replace(EXPORT_DATE.encode(), later.encode())


def test_hostile_text_stays_text(
    export_cases: list[ExportCase], everything: tuple[bytes, dict[str, Any]]
) -> None:
    (case,) = [c for c in export_cases if "<b>bold</b>" in (c.subject.run.run_name or "")]
    run = case.subject.run
    assert run.run_name is not None and "\x1b" in run.run_name
    data, document = everything
    assert b"\x1b" not in data and b"\\u001b" not in data  # no escape character, raw or JSON
    item = Index(document).item_of(case.subject)
    # Plain strings: the name as it is, control characters spelt out.
    assert prop(item, "run-name") == one_line(run.run_name)
    # Markup: the name reads as text, its markup shown, not applied.
    assert _text_of(item["description"]) == (
        f"The MLflow run {one_line(run.run_name)} ({run.run_id}) of the experiment "
        f"{run.experiment_name}."
    )
    for text in re.findall(rb'"(?:title|description|remarks)":"((?:[^"\\\\]|\\\\.)*)"', data):
        assert b"<b>" not in text and b"<script>" not in text and b"<i>" not in text


def test_every_markup_field_holds_only_text_code_and_our_lists(
    everything: tuple[bytes, dict[str, Any]],
) -> None:
    """No HTML, link, image, emphasis, heading or quote comes out of MLflow's text in any
    markup field (title, description, remarks, text): only paragraphs, code spans, and the
    bullet lists of what was found that the export writes itself."""
    from markdown_it import MarkdownIt

    reader = MarkdownIt("commonmark")
    allowed = {
        "paragraph_open", "paragraph_close", "inline", "text", "code_inline", "softbreak",
        "bullet_list_open", "bullet_list_close", "list_item_open", "list_item_close",
    }  # fmt: skip
    seen: Counter[str] = Counter()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("title", "description", "remarks", "text") and isinstance(value, str):
                    for token in reader.parse(value):
                        seen.update(t.type for t in (token, *(token.children or ())))
                else:
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(everything[1])
    assert set(seen) <= allowed, set(seen) - allowed
    assert seen["bullet_list_open"] and seen["code_inline"]


@pytest.mark.parametrize(
    "text",
    [
        "<b>x</b> &amp; [a](javascript:alert(1)) *e* _u_ `c` ![i](x) a | b <http://x>",
        "1. list",
        "12) list",
        "# heading",
        "> quote",
        "- item",
        "+ item",
        "---",
        "x^2^ ~sub~ {{ insert: param, p-1 }}",
        "a\\*b\\",
        "line\nbreak \x1b[31mred\u202e",
        "    indented",
    ],
)
def test_markup_reads_as_the_text_itself(text: str) -> None:
    """CommonMark (markdown-it) reads the escaped text as one paragraph of that text; the
    characters OSCAL's Markdown adds (^ ~ { }) are escaped too."""
    escaped = markup(text)
    assert _text_of(escaped) == one_line(text).strip()
    assert not re.search(r"(?<!\\)[\^~{}]", escaped.replace("\\\\", ""))


def test_rendering_a_large_audit_is_fast(export_cases: list[ExportCase], policy: Policy) -> None:
    subjects = [case.subject for case in export_cases] * 10  # 450 subjects, 11,820 observations
    result = _result_of(subjects, policy)
    settings = _settings(policy)
    started = time.perf_counter()
    data = render(result, subjects, settings)
    elapsed = time.perf_counter() - started
    document = Index(orjson.loads(data))
    assert len(document.items) == 450
    assert len({o["uuid"] for o in document.observations.values()}) == len(document.observations)
    assert elapsed < 10, f"{elapsed:.1f} s"  # about 2 s on this machine's kind
