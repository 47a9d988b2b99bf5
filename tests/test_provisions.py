"""The provisions catalog: valid data, and EU citations that exist in the Regulation's text."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema_rs
import pytest

from audit.policy import builtin_policy_names, load_policy
from audit.provisions import load_catalog
from audit.resources import schema_path

REQUIRED = [
    "Art. 10(2)(b)", "Art. 10(2)(c)", "Art. 10(2)(e)", "Art. 10(3)", "Art. 11(1)", "Art. 12(1)",
    "Art. 12(2)", "Art. 13(3)(b)(ii)", "Art. 13(3)(b)(vi)", "Art. 13(3)(e)", "Art. 15(1)",
    "Art. 15(3)", "Art. 17(1)(d)", "Art. 17(1)(f)", "Art. 17(1)(k)", "Art. 18(1)", "Art. 19(1)",
    "Annex IV 1(a)", "Annex IV 1(c)", "Annex IV 2(a)", "Annex IV 2(b)", "Annex IV 2(c)",
    "Annex IV 2(d)", "Annex IV 2(g)", "Annex IV 3", "Annex IV 4", "Annex IV 6",
    "ISO/IEC 42001 A.6.2.3", "ISO/IEC 42001 A.6.2.7", "ISO/IEC 42001 A.6.2.8",
    "ISO/IEC 42001 A.7.4", "ISO/IEC 42001 A.7.5", "ISO/IEC 42001 A.7.6",
    "NIST AI RMF GOVERN 1.1", "NIST AI RMF MAP 2.3", "NIST AI RMF MEASURE 2.1",
    "NIST AI RMF MEASURE 2.3",
]  # fmt: skip
REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "eu-ai-act-2024-1689.md"


def test_catalog_files_validate_and_cover_the_required_provisions() -> None:
    validator = jsonschema_rs.validator_for(
        json.loads(schema_path("provisions.schema.json").read_text())
    )
    for path in schema_path("provisions").glob("*.json"):
        validator.validate(json.loads(path.read_text()))
    citations = [p.citation for p in load_catalog().provisions.values()]
    assert sorted(set(REQUIRED) - set(citations)) == []
    assert len(citations) == len(set(citations))
    assert "2024/1689" in load_catalog().frameworks["eu-ai-act"].text_version


def test_every_builtin_rule_cites_catalog_provisions() -> None:
    catalog = load_catalog()
    for name in builtin_policy_names():
        for rule in load_policy(name).rules:
            assert rule.provisions, rule.id
            assert all(p in catalog for p in rule.provisions)


@pytest.mark.skipif(not REFERENCE.exists(), reason="the Regulation's text is not beside the repo")
def test_eu_citations_exist_in_the_regulation_text() -> None:
    text = REFERENCE.read_text()
    annex_iv = text[text.index("\nANNEX IV\n") : text.index("## ANNEX V:")]
    for provision in load_catalog().provisions.values():
        if provision.framework != "eu-ai-act":
            continue
        parts = provision.id.split("/")[1:]
        if parts[0] == "annex-iv":
            body, number, points = annex_iv, parts[1], parts[2:]
        else:
            heading = f"## Article {parts[0].removeprefix('art-')}:"
            start = text.index(heading)
            if len(parts) == 1:  # a whole article: its title is the article's own heading
                line = text[start : text.index("\n", start)]
                assert line.removeprefix(heading).strip() == provision.title, provision.citation
                continue
            body, number, points = (
                text[start : text.index("## Article", start + 10)],
                parts[1],
                parts[2:],
            )
        assert f"**{number}.**" in body, provision.citation
        paragraph = body.split(f"**{number}.**", 1)[1].split(f"**{int(number) + 1}.**")[0]
        for point in points:
            assert f"({point})" in paragraph, provision.citation


@pytest.mark.skipif(not REFERENCE.exists(), reason="the Regulation's text is not beside the repo")
def test_eu_group_headings_follow_the_regulation_text() -> None:
    text = " ".join(REFERENCE.read_text().split())
    catalog = load_catalog()
    eu_groups = [g for g in catalog.groups.values() if g.id.startswith("eu-ai-act/")]
    assert eu_groups
    for group in eu_groups:
        if group.id.startswith("eu-ai-act/annex-iv/"):
            point, _, wording = group.heading.removeprefix("Annex IV ").partition(": ")
            assert f"**{point}.** {wording}" in text, group.heading
        else:
            assert f"## {group.heading}" in text, group.heading
    for provision in catalog.provisions.values():
        # Every provision sits under a heading of its own text, not just its framework's.
        assert catalog.group_of(provision.id).id != provision.framework, provision.id
    assert catalog.group_of("iso-iec-42001/a.7.5").id == "iso-iec-42001/a.7"
    assert catalog.group_of("eu-ai-act/art-10/2/b").id == "eu-ai-act/art-10"
    assert catalog.group_of("eu-ai-act/art-1").id == "eu-ai-act"  # art-10 is no prefix of it


def test_provisions_command(cli) -> None:
    listing = cli("provisions")
    assert "Art. 10(2)(b)" in listing.out and "NIST AI RMF MEASURE 2.1" in listing.out
    assert "2024/1689" in listing.out
    data = json.loads(cli("provisions", "--framework", "iso-iec-42001", "-f", "json").out)
    assert [f["framework"] for f in data] == ["iso-iec-42001"]
    assert cli("provisions", "--framework", "nope").code == 2
