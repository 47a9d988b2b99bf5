"""The system card: its template, its placeholders, what the registry fills in, the `declared`
rules on a real record with a card's section added, the stricter policy made by severities,
and hostile card files, each refused with one line and exit 2."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from audit import check, collect, load_policy
from audit.errors import PolicyError
from audit.evaluation import judge_record
from audit.policy import Policy
from audit.sources import CollectionNeeds, Selection
from audit.systemcard import (
    FIELDS,
    TEMPLATE,
    SystemCardError,
    declared_section,
    field_states,
    is_placeholder,
    load_system_card,
)
from tests import stores
from tests.conftest import Store
from tests.test_hostile_files import BOMB

ALL_FIELDS = [field.pointer for field in FIELDS]
DECLARED_RULES = {
    "declared.provider": ["/declared/provider"],
    "declared.system-version": ["/declared/system"],
    "declared.intended-purpose": ["/declared/intended_purpose", "/declared/intended_users"],
    "declared.persons-affected": ["/declared/persons_affected"],
    "declared.interactions": ["/declared/interactions"],
    "declared.deployment": ["/declared/deployment"],
    "declared.instructions-for-use": [
        "/declared/instructions_for_use",
        "/declared/user_interface",
    ],
    "declared.human-oversight": ["/declared/human_oversight"],
    "declared.limitations": ["/declared/limitations"],
    "declared.metrics-rationale": ["/declared/metrics_rationale"],
    "declared.cybersecurity": ["/declared/cybersecurity"],
    "declared.risk-management": ["/declared/risk_management"],
    "declared.standards": ["/declared/standards"],
    "declared.declaration-of-conformity": ["/declared/declaration_of_conformity"],
    "declared.lifetime": ["/declared/lifetime"],
    "declared.post-market-monitoring": ["/declared/post_market_monitoring"],
    "declared.responsible-persons": ["/declared/responsible_persons"],
}

COMPLETE = """\
provider: {name: Acme Credit Ltd, contact: "1 Main St, Dublin; compliance@acme.example"}
system: {name: Acme Scoring, version: "2.10"}
intended_purpose: Scores consumer credit applications for loan officers to review.
intended_users: Loan officers of Acme's retail branches.
persons_affected: Adult applicants for consumer credit in the EU.
interactions: N/A
deployment:
  forms: REST API
  hardware: x86-64 servers, 4 cores, 8 GB
user_interface: A web form showing the score and its main factors.
instructions_for_use: https://docs.acme.example/scoring/ifu
human_oversight: |
  A loan officer reviews every score and may override it.
limitations: Less accurate for applicants with under a year of credit history.
metrics_rationale: ROC AUC ranks applicants as loan officers do; F1 weighs missed defaults.
predetermined_changes: none
risk_management: RMS-2026-04 (risk register, reviewed quarterly)
cybersecurity: Signed model artefacts, network isolation, input validation.
standards: [ISO/IEC 42001:2023, ISO/IEC 23894:2023]
declaration_of_conformity: DoC-2026-17
lifetime: 2030-12-31, retrained every quarter
post_market_monitoring: PMM plan v3 (drift and complaints, monthly)
responsible_persons:
  - {name: Jane Doe, role: Head of model risk, email: jane@acme.example}
  - {name: John Roe, role: ML lead}
"""


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def record(sqlite_store: Store) -> dict[str, Any]:
    """A real record from a real store (a run with a registered model): the declared section
    is added to copies of it."""
    needs = CollectionNeeds(artifacts=True, registry=True)
    records = [item.record for item in collect(sqlite_store.uri, needs=needs)]
    return (
        next(r for r in records if r["models"]) if any(r["models"] for r in records) else records[0]
    )


@pytest.fixture(scope="module")
def policies() -> tuple[Policy, Policy]:
    """The default policy with both engines: they must decide the declared rules alike."""
    return load_policy(), load_policy(engine="jsonschema")


def _declared(record: dict[str, Any], section: dict[str, Any]) -> dict[str, Any]:
    with_card = copy.deepcopy(record)
    with_card["declared"] = section
    return with_card


def _declared_findings(
    record: dict[str, Any], policies: tuple[Policy, Policy]
) -> dict[str, list[str]]:
    """The declared rules' findings (rule id -> pointers), the same with both engines."""
    fast, reference = policies
    verdict = judge_record(record, fast)
    assert judge_record(record, reference) == verdict
    assert not [r for r in verdict.not_applicable if r.startswith("declared.")]
    found: dict[str, list[str]] = {}
    for finding in verdict.findings:
        if finding.rule_id.startswith("declared."):
            found.setdefault(finding.rule_id, []).append(finding.pointer)
    return {rule: sorted(pointers) for rule, pointers in found.items()}


# --------------------------------------------------------------------------- template


def test_the_template_init_writes_counts_every_field_as_a_placeholder(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    written = cli("system-card", "init")
    assert written.code == 0 and (tmp_path / "system-card.yaml").read_text() == TEMPLATE
    card = load_system_card(tmp_path / "system-card.yaml")
    section = declared_section(card)
    assert section["placeholders"] == ALL_FIELDS
    assert set(section) == {"card", "placeholders", "origins", "redacted"}
    assert set(field_states(section).values()) == {"placeholder"}
    # Every field says which provision it serves (cited as the catalog prints it).
    for field in FIELDS:
        assert field.help == "" or any(c in field.help for c in ("Annex IV", "Art. ")), field
    validated = cli("system-card", "validate", "system-card.yaml")
    assert validated.code == 1
    count = len(FIELDS)
    assert validated.out.splitlines()[-1] == (
        f"0 of {count} fields declared, {count} placeholders, 0 missing"
    )


def test_init_never_replaces_a_file_without_force(cli, tmp_path: Path) -> None:
    target = _write(tmp_path, "card.yaml", "provider: {name: Mine}\n")
    refused = cli("system-card", "init", str(target))
    assert refused.code == 2 and len(refused.err.splitlines()) == 1
    assert "exists; give --force" in refused.err
    assert target.read_text() == "provider: {name: Mine}\n"
    assert cli("system-card", "init", str(target), "--force").code == 0
    assert target.read_text() == TEMPLATE
    assert [p.name for p in tmp_path.iterdir()] == ["card.yaml"]  # no partial file left


@pytest.mark.parametrize(
    ("text", "placeholder"),
    [
        ("", True), ("   ", True), ("TODO", True), ("todo: write it", True), ("TBD", True),
        ("Scores loans. TODO: add context", True), ("FIXME", True), ("xxx", True),
        ("Lorem ipsum dolor sit amet", True), ("...", True), ("<name of the provider>", True),
        ("<legal name of the provider>", True), ("N/A", False), ("none", False),
        ("Jane <jane@acme.example>", False), ("<b>bold</b> claims", False),
        ("A todo-list app for loan officers", False), ("Tbdx Ltd", False),
    ],
)  # fmt: skip
def test_placeholders(text: str, placeholder: bool) -> None:
    assert is_placeholder(text) is placeholder


# --------------------------------------------------------------------------- the rules


def test_a_complete_card_passes_every_declared_rule(
    tmp_path: Path, record: dict[str, Any], policies: tuple[Policy, Policy]
) -> None:
    card = load_system_card(_write(tmp_path, "card.yaml", COMPLETE))
    section = declared_section(card)
    assert section["placeholders"] == [] and section["redacted"] == []
    assert set(field_states(section).values()) == {"declared"}
    assert section["deployment"]["forms"] == ["REST API"]  # one form, as a list
    assert section["system"]["version"] == "2.10"
    assert section["lifetime"] == "2030-12-31, retrained every quarter"
    assert section["human_oversight"] == "A loan officer reviews every score and may override it."
    assert section["card"] == {"file": "card.yaml", "sha256": card.sha256}
    assert set(section["origins"].values()) == {"system card"}
    assert _declared_findings(_declared(record, section), policies) == {}
    assert json.loads(json.dumps(section)) == section  # JSON data only


def test_placeholders_give_the_findings_of_exactly_those_fields(
    tmp_path: Path, record: dict[str, Any], policies: tuple[Policy, Policy]
) -> None:
    text = (
        COMPLETE.replace("compliance@acme.example", "TODO")  # still a real contact: kept
        .replace("Adult applicants for consumer credit in the EU.", "TBD")
        .replace("A web form showing the score and its main factors.", "lorem ipsum dolor")
        .replace("RMS-2026-04 (risk register, reviewed quarterly)", '""')
        .replace("DoC-2026-17", '"<the EU declaration of conformity, or a reference to it>"')
        .replace("{name: John Roe, role: ML lead}", "{name: John Roe, role: <role>}")
    )
    section = declared_section(load_system_card(_write(tmp_path, "card.yaml", text)))
    assert section["placeholders"] == [
        "/provider/contact",
        "/persons_affected",
        "/user_interface",
        "/risk_management",
        "/declaration_of_conformity",
        "/responsible_persons/1/role",
    ]
    assert _declared_findings(_declared(record, section), policies) == {
        "declared.provider": ["/declared/provider/contact"],
        "declared.persons-affected": ["/declared/persons_affected"],
        "declared.instructions-for-use": ["/declared/user_interface"],
        "declared.risk-management": ["/declared/risk_management"],
        "declared.declaration-of-conformity": ["/declared/declaration_of_conformity"],
        "declared.responsible-persons": ["/declared/responsible_persons/1/role"],
    }


def test_no_card_gives_every_declared_finding(
    record: dict[str, Any], policies: tuple[Policy, Policy]
) -> None:
    section = declared_section(None)
    assert section == {"card": None, "placeholders": [], "origins": {}, "redacted": []}
    assert set(field_states(section).values()) == {"missing"}
    assert _declared_findings(_declared(record, section), policies) == DECLARED_RULES


def test_run_records_are_decided_as_before(
    tmp_path: Path, sqlite_store: Store, policies: tuple[Policy, Policy]
) -> None:
    """A run is not a model version: the declared rules are not asked of it (neither failed
    nor listed as not applicable), and every other rule is decided exactly as by the policy
    without them."""
    document = json.loads(json.dumps(load_policy().document))
    del document["properties"]["declared"]
    document["$id"] = "urn:test:without-declared"
    before = load_policy(_write(tmp_path, "before.json", json.dumps(document)))
    records = [item.record for item in collect(sqlite_store.uri, selection=Selection())]
    assert records
    for run in records:
        old = judge_record(run, before)
        for policy in policies:
            assert policy.version_rule_ids == set(DECLARED_RULES)
            new = judge_record(run, policy)
            assert new == old
    result = check(sqlite_store.uri)
    assert not [rule for rule in result.rules if rule.category == "declared"]


def test_the_registry_fills_what_the_card_lacks_and_the_card_wins(tmp_path: Path) -> None:
    card = load_system_card(
        _write(tmp_path, "card.md", "---\nprovider: {name: Acme Credit Ltd, contact: TODO}\n"
               "intended_purpose: TBD\n---\n# Notes\n\nScored by **hand** before 2026.\n")
    )  # fmt: skip
    section = declared_section(
        card,
        model_description="Scores consumer credit applications.",
        model_tags={
            "system_card.provider.name": "Registry Name Ltd",  # the card wins
            "system_card.provider.contact": "compliance@acme.example",
            "system_card.standards": "ISO/IEC 42001:2023\n\nISO/IEC 23894:2023\n",
            "system_card.lifetime": "TODO",
            "system_card.unknown_field": "ignored",
            "team": "risk",
        },
    )
    assert section["provider"] == {
        "name": "Acme Credit Ltd",
        "contact": "compliance@acme.example",
    }
    assert section["intended_purpose"] == "Scores consumer credit applications."
    assert section["standards"] == ["ISO/IEC 42001:2023", "ISO/IEC 23894:2023"]
    assert section["notes"] == "# Notes\n\nScored by **hand** before 2026."
    assert section["origins"] == {
        "/provider/name": "system card",
        "/provider/contact": "registered model tag system_card.provider.contact",
        "/intended_purpose": "registered model description",
        "/standards": "registered model tag system_card.standards",
        "/notes": "system card",
    }
    assert "/lifetime" in section["placeholders"] and "lifetime" not in section
    assert "/intended_purpose" not in section["placeholders"]  # filled by the description


def test_secrets_in_a_card_are_redacted_like_records(tmp_path: Path) -> None:
    token = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
    card = load_system_card(
        _write(tmp_path, "card.yaml", f"instructions_for_use: https://x.example/?token={token}\n")
    )
    section = declared_section(card)
    assert token not in json.dumps(section)
    assert section["redacted"] == ["/instructions_for_use"]


def test_a_card_with_markup_and_control_characters_loads_and_prints_escaped(
    cli, tmp_path: Path
) -> None:
    hostile = "<script>alert(1)</script>\x1b[31m red \u202e evil\n::error::spoofed ##[command]"
    path = _write(
        tmp_path,
        "card.yaml",
        f"intended_purpose: {json.dumps(hostile)}\nprovider: {{name: {json.dumps(hostile)}}}\n",
    )
    section = declared_section(load_system_card(path))
    assert section["intended_purpose"] == hostile.strip()  # kept: escaping is the output's job
    result = cli("system-card", "validate", str(path))
    assert result.code == 1
    lines = result.out.splitlines()
    assert len(lines) == 1 + len(FIELDS) + 1  # the card, one line per field, the counts
    (purpose,) = [line for line in lines if " /intended_purpose" in line]
    assert purpose.startswith("declared    /intended_purpose  <script>alert(1)</script>")
    assert "\\x1b[31m" in purpose and "\\u202e" in purpose and "\\n::error::" in purpose
    assert "\\x23#[command]" in purpose
    for line in lines:
        assert "\x1b" not in line and "\u202e" not in line and not line.startswith("::")


# --------------------------------------------------------------------------- hostile files


def _nested(depth: int) -> str:
    return "provider: " + "[" * depth + "]" * depth + "\n"


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        ("big.yaml", "intended_purpose: " + "x" * (10 << 20) + "\n", "is too large"),
        ("bomb.yaml", BOMB, "more than 200,000 nodes"),
        ("deep.yaml", _nested(200), "deeper than 64 levels"),
        ("unknown.yaml", "intended_purpos: x\n",
         "'intended_purpos' (did you mean intended_purpose?)"),
        ("nested.yaml", "provider: {name: A, contcat: B}\n",
         "/provider: unknown field(s) 'contcat' (did you mean contact?)"),
        ("types.yaml", "standards: ISO 9001\n", "/standards:"),
        ("version.yaml", "system: {version: 2.10}\n", "/system/version:"),
        ("persons.yaml", "responsible_persons: [{name: [A]}]\n", "/responsible_persons/0/name:"),
        ("list.yaml", "- a\n- b\n", "is a mapping of fields, not a list"),
        ("keys.yaml", "provider: {1: x}\n", "field name 1 is not text"),
        ("broken.yaml", "provider: {name: A\n", "invalid YAML at line"),
        ("binary.yaml", "\udcff", "not UTF-8"),
        ("no-front.md", "# Just Markdown\n", "starts with YAML front matter"),
        ("open.md", "---\nprovider: {name: A}\n", "no closing --- line"),
        ("front.md", "---\nprovider: {name: A\n---\ntext\n", "invalid YAML at line 3"),
    ],
)  # fmt: skip
def test_a_hostile_or_broken_card_is_one_line_and_exit_2(
    cli, tmp_path: Path, name: str, content: str, says: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8", "surrogateescape"))
    before = path.read_bytes()
    result = cli("system-card", "validate", str(path))
    assert result.code == 2 and result.out == ""
    (line,) = result.err.splitlines()
    assert line.startswith(f"mlflow-audit: error: system card {path}: ")
    assert says in line
    assert path.read_bytes() == before
    with pytest.raises(SystemCardError):
        load_system_card(path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_named_pipe_is_refused_without_blocking(tmp_path: Path, sqlite_store: Store) -> None:
    """A pipe with no writer would block the open, and the read: a card, and a waivers file
    (read the same way), are refused at once."""
    pipe = tmp_path / "card.yaml"
    os.mkfifo(pipe)
    for args in (
        ("system-card", "validate", str(pipe)),
        ("check", "--tracking-uri", sqlite_store.uri, "--waivers", str(pipe)),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "audit", *args],
            capture_output=True, text=True, env=stores.environment(), timeout=60,
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        (line,) = done.stderr.splitlines()
        assert line.endswith(f"{pipe}: not a regular file")


# --------------------------------------------------------------------------- severities


def test_the_annex_iv_policy_makes_the_declared_rules_errors_without_copying_them(
    record: dict[str, Any],
) -> None:
    strict, default = load_policy("eu-ai-act-annex-iv"), load_policy()
    assert sorted(r.id for r in strict.rules) == sorted(r.id for r in default.rules)
    for rule in strict.rules:
        base = default.rules_by_id[rule.id]
        if rule.category == "declared":
            assert base.severity == "warning" and rule.severity == "error"
        else:  # the same rule (its places found in another order, through the $ref)
            assert replace(rule, locations=()) == replace(base, locations=())
            assert set(rule.locations) == set(base.locations)
    findings = judge_record(_declared(record, declared_section(None)), strict).findings
    assert {f.severity for f in findings if f.rule_id.startswith("declared.")} == {"error"}
    assert "urn:mlflow-audit:policy:eu-ai-act-high-risk" in json.dumps(strict.document)
    assert "declared" not in strict.document.get("properties", {})


def _overriding(tmp_path: Path, severities: Any) -> Path:
    return _write(
        tmp_path,
        "strict.yaml",
        json.dumps({
            "x-audit-policy": {"name": "strict", "severities": severities},
            "allOf": [{"$ref": "urn:mlflow-audit:policy:eu-ai-act-high-risk"}],
        }),
    )  # fmt: skip


def test_a_rule_id_wins_over_its_category(tmp_path: Path) -> None:
    policy = load_policy(
        _overriding(tmp_path, {"declared": "error", "declared.lifetime": "info", "source": "info"})
    )
    severities = {rule.id: rule.severity for rule in policy.rules}
    assert severities["declared.lifetime"] == "info"
    assert severities["declared.provider"] == "error"
    assert severities["source.git-commit"] == "info"
    assert severities["data.training-dataset"] == "error"  # untouched


@pytest.mark.parametrize(
    ("severities", "says"),
    [
        ({"declard": "error"}, "'declard' is neither a category nor a rule id of the policy "
         "(did you mean declared?)"),
        ({"declared.lifetme": "error"}, "(did you mean declared.lifetime?)"),
        ({"declared": "fatal"}, "severity 'fatal' is not one of error, warning, info"),
        (["declared"], "a mapping of category or rule id to severity"),
    ],
)  # fmt: skip
def test_an_unknown_severity_key_or_value_is_a_policy_error(
    tmp_path: Path, severities: Any, says: str
) -> None:
    with pytest.raises(PolicyError, match=r"x-audit-policy\.severities") as raised:
        load_policy(_overriding(tmp_path, severities))
    assert says in str(raised.value)
