"""The Hugging Face model card export: every run and version of the test stores, read back by
huggingface_hub (offline: parsing only, nothing that reaches the Hub), its facts checked
against the evidence record, its Markdown rendered by a GitHub-flavoured renderer to show that
MLflow's text stays text."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import copy
import dataclasses
import re
from collections import Counter
from collections.abc import Mapping
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import yaml
from huggingface_hub import ModelCard, RepoCard
from huggingface_hub.repocard import REGEX_YAML_BLOCK, metadata_load
from markdown_it import MarkdownIt

import audit
from audit.exports import ExportSettings, Subject, model_card
from audit.formats.text import one_line
from audit.policy import load_policy
from audit.provisions import load_catalog
from audit.result import SCOPE_NOTE
from tests.conftest import EXPORT_DATE, ExportCase

HOSTILE_RUN = "run <b>bold</b> \x1b[31mred\x1b[0m ünïcödé 😀 مرحبا"
#: What the body may hold once rendered: the template's structure, never MLflow's markup.
ALLOWED_TAGS = frozenset(
    {"h1", "h2", "h3", "h4", "p", "ul", "li", "strong", "code", "a"}
    | {"table", "thead", "tbody", "tr", "th", "td"}
)


@pytest.fixture(scope="module")
def settings() -> ExportSettings:
    return ExportSettings(
        generated_at=EXPORT_DATE,
        tool_version=audit.__version__,
        policy=load_policy(None).to_dict(),
        store="sqlite:///mlflow.db",
    )


@pytest.fixture(scope="module")
def cards(export_cases: list[ExportCase], settings: ExportSettings) -> dict[str, bytes]:
    return {case.id: model_card.render(case.subject, settings) for case in export_cases}


def case(export_cases: list[ExportCase], case_id: str) -> ExportCase:
    return next(c for c in export_cases if c.id == case_id)


# --------------------------------------------------------------------------- every case


def test_every_card_is_read_back_by_huggingface_hub(
    export_cases: list[ExportCase], cards: dict[str, bytes], tmp_path: Path
) -> None:
    assert len(export_cases) == 45
    failures = []
    for export_case in export_cases:
        try:
            check_card(export_case.subject, cards[export_case.id], tmp_path / "README.md")
        except Exception as problem:  # every failing case is reported at once
            failures.append(f"{export_case.id}: {type(problem).__name__}: {problem}")
    assert not failures, "\n".join(failures)


def check_card(subject: Subject, data: bytes, path: Path) -> None:
    """The card as huggingface_hub reads it, and the facts it must carry."""
    text = data.decode("utf-8")
    path.write_bytes(data)
    match = REGEX_YAML_BLOCK.search(text)
    assert match is not None and match.start() == 0, "no metadata block at the start"
    block = match.group(2)
    metadata = yaml.safe_load(block)
    assert metadata_load(path) == metadata
    assert_plain_yaml(block)

    card = ModelCard(text)  # raises on metadata, model-index included, it cannot read
    assert card.data.to_dict() == metadata
    again = RepoCard(str(card))
    assert again.data.to_dict() == metadata and again.text == card.text

    record = subject.record
    assert metadata["tags"] == ["mlflow", "mlflow-audit"]
    flavors = {flavor for model in record["models"] for flavor in model["flavors"] or ()}
    assert metadata.get("library_name") == ("sklearn" if "sklearn" in flavors else None)
    names = [
        d["name"]
        for role in ("training", "evaluation", "other")
        for d in record["data"][role]
        if d["name"]
    ]
    assert metadata.get("datasets", []) == list(dict.fromkeys(names))
    assert metadata.get("metrics", []) == list(dict.fromkeys(m["key"] for m in record["metrics"]))

    # Every metric computed on evaluation data comes back with its dataset's name and digest.
    expected = Counter(
        (m["key"], m["value"], m["dataset"]["name"], m["dataset"]["digest"])
        for m in record["metrics"]
        if m["context"] == "evaluation" and m["dataset"] is not None
    )
    results = card.data.eval_results or []
    assert (
        Counter(
            (r.metric_type, r.metric_value, r.dataset_name, r.dataset_revision) for r in results
        )
        == expected
    )
    assert all(r.task_type == "other" and r.dataset_type == r.dataset_name for r in results)
    if results:
        assert card.data.model_name == subject.name
    else:
        assert "model-index" not in metadata

    assert_body_is_structure_only(card.text)


def assert_plain_yaml(block: str) -> None:
    """safe_dump of plain data: no anchor, alias or explicit tag for a reader to resolve."""
    for event in yaml.parse(block):
        assert not isinstance(event, yaml.AliasEvent), "an alias"
        assert getattr(event, "anchor", None) is None, "an anchor"
        if isinstance(event, yaml.NodeEvent) and not isinstance(event, yaml.AliasEvent):
            assert getattr(event, "tag", None) is None, f"a tag {event.tag}"


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def rendered(body: str) -> _Tags:
    html = MarkdownIt("gfm-like").render(body)  # raw HTML allowed, links recognised
    parser = _Tags()
    parser.feed(html)
    return parser


def assert_body_is_structure_only(body: str) -> None:
    """Rendered, the body holds only the card's own elements; links only to the provisions'
    texts; and no table row has more or fewer cells than its header."""
    parsed = rendered(body)
    assert {tag for tag, _ in parsed.tags} <= ALLOWED_TAGS
    links = {provision.link for provision in load_catalog().provisions.values()}
    for tag, attrs in parsed.tags:
        if tag == "a":
            assert attrs.get("href") in links, attrs
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]", body)
    cells = None
    for line in body.splitlines():
        if line.startswith("|"):
            count = len(re.split(r"(?<!\\)\|", line))
            cells = count if cells is None else cells
            assert count == cells, f"a table row of {count - 2} cells: {line[:80]}"
        else:
            cells = None


# --------------------------------------------------------------------------- facts


def test_champion_card_carries_datasets_metrics_card_and_gaps(
    export_cases: list[ExportCase], cards: dict[str, bytes]
) -> None:
    card = ModelCard(cards["demo:churn-classifier v3"].decode())
    metadata = card.data.to_dict()
    assert metadata["library_name"] == "sklearn"
    assert metadata["datasets"] == ["breast-cancer-train", "breast-cancer-test"]
    (entry,) = metadata["model-index"]
    assert entry["name"] == "churn-classifier"
    (result,) = entry["results"]
    assert result["task"] == {"type": "other", "name": "Task not recorded in MLflow"}
    assert result["dataset"] == {
        "type": "breast-cancer-test",
        "name": "breast-cancer-test",
        "revision": "c04ccdaa",
    }
    by_key = {metric["type"]: metric["value"] for metric in result["metrics"]}
    assert by_key["roc_auc"] == pytest.approx(0.9966, abs=1e-4)
    assert by_key["true_positives"] == 98
    assert "train_accuracy" not in by_key  # training data is not an evaluation result

    body = card.text
    sections = [
        "## Model Details", "## Uses", "## Bias, Risks, and Limitations", "## Training Details",
        "## Evaluation", "## Technical Specifications", "## More Information", "## Audit",
    ]  # fmt: skip
    assert [body.index(s) for s in sections] == sorted(body.index(s) for s in sections)
    assert "| breast\\-cancer\\-train | `9e0490cb` | training |" in body
    (evaluation,) = case(export_cases, "demo:churn-classifier v3").subject.lineage["evaluations"]
    assert (
        "| `roc_auc` | 0\\.9966 | breast\\-cancer\\-test (`c04ccdaa`) | MLflow linked it to the "
        f"dataset | `{evaluation['id']}` |"
    ) in body
    assert "| `train_accuracy` | 0\\.9883 | dataset not recorded in MLflow |" in body
    # Declared facts fill Uses and limitations, each saying where it came from.
    assert (
        "- **Intended purpose:** Flags retail customers likely to cancel their contract within "
        "90 days"
    ) in body
    assert "(declared in the system card `system-card.yaml`)" in body
    assert (
        "- **EU declaration of conformity:** not declared: the system card holds a placeholder"
        in body
    )
    # The audit: the failing rule with its fix and provisions, and the scope.
    assert (
        "| `declared.declaration-of-conformity` | **fail** | warning | Art\\. 47, Annex IV 8 |"
    ) in body
    gaps = body[body.index("### Gaps and their fixes") : body.index("### Provisions cited")]
    assert "`declared.declaration-of-conformity` (warning, fail)" in gaps
    assert "  - fix: Fill \\`declaration\\_of\\_conformity\\` in the system card" in gaps
    assert "  - relevant to: Art\\. 47, Annex IV 8" in gaps
    assert gaps.count("\n- ") == 1
    assert (
        "(<https://eur-lex.europa.eu/legal-content/EN/TXT/HTML/?uri=OJ:L_202401689#art_47>)" in body
    )
    scope = "".join(rendered(body[body.index("### Scope") :]).text)
    assert SCOPE_NOTE in scope and "not a conformity assessment" in scope


def test_cards_without_a_system_card_say_so(cards: dict[str, bytes]) -> None:
    version = ModelCard(cards["lineage:churn-classifier v2"].decode()).text
    assert (
        "- **Intended purpose:** Predicts which customers will cancel within 90 days\\. (from "
        "the registered model description)"
    ) in version
    assert "- **Limitations:** not declared (no system card given)" in version
    run = next(text for key, text in cards.items() if key.startswith("logging:run lightgbm"))
    body = ModelCard(run.decode()).text
    assert "- **Limitations:** not recorded: a run has no system card" in body
    assert "- **Task:** not recorded in MLflow" in body and "- **License:** not recorded" in body
    # LightGBM has no library on the Hub: none is named.
    assert "library_name" not in ModelCard(run.decode()).data.to_dict()


def test_hostile_run_name_stays_text(
    export_cases: list[ExportCase], cards: dict[str, bytes]
) -> None:
    (key,) = [key for key in cards if key.startswith("sqlite:run run <b>")]
    data = cards[key]
    assert b"\x1b" not in data and b"<b>" not in data and b"<script" not in data
    body = ModelCard(data.decode()).text
    parsed = rendered(body)
    assert "b" not in {tag for tag, _ in parsed.tags}
    assert "script" not in {tag for tag, _ in parsed.tags}
    text = "".join(parsed.text)
    shown = "run <b>bold</b> \\x1b[31mred\\x1b[0m ünïcödé 😀 مرحبا"
    assert f"Model Card for run {shown} (" in text
    assert "experiment hostile <i>experiment</i>" in text
    assert "<script>alert('x')</script><img src=x onerror=alert(1)>" in text
    # Its gaps, with their fixes.
    assert (
        "`data.training-dataset` (error, fail): No training dataset logged as a run input" in body
    )


def test_hostile_metadata_stays_one_plain_line(
    export_cases: list[ExportCase], settings: ExportSettings, tmp_path: Path
) -> None:
    """A real record with its dataset names and metric keys and values replaced by hostile
    ones: the metadata still parses to one line each, and NaN, infinity and integers too large
    for a double keep their values."""
    original = case(export_cases, "demo:churn-classifier v3").subject
    record: dict[str, Any] = copy.deepcopy(dict(original.record))
    evil = "x\n---\nlibrary_name: evil\n\x1b[31m\u202e|`[a](javascript:1)<img src=x>"
    for entry in record["data"]["evaluation"]:
        entry["name"] = evil
    values = ["NaN", "Infinity", "-Infinity", "123456789012345678901234567890"]
    linked = [m for m in record["metrics"] if m["context"] == "evaluation"]
    for metric, value in zip(linked, values, strict=False):
        metric["value"] = value
    for metric in linked:
        metric["dataset"]["name"] = evil
    linked[0]["key"] = evil
    subject = dataclasses.replace(original, record=record)

    data = model_card.render(subject, settings)
    check_card(subject_with_escaped_names(subject), data, tmp_path / "README.md")
    metadata = metadata_load(tmp_path / "README.md")
    assert metadata is not None and "evil" not in str(metadata.get("library_name"))
    assert one_line(evil) in metadata["datasets"]
    assert (
        one_line(evil) == "x --- library_name: evil \\x1b[31m\\u202e|`[a](javascript:1)<img src=x>"
    )
    values_back = [m["value"] for m in metadata["model-index"][0]["results"][0]["metrics"]]
    assert values_back[:4] == ["NaN", "Infinity", "-Infinity", 123456789012345678901234567890]
    assert b"\x1b" not in data and b"\xe2\x80\xae" not in data


def subject_with_escaped_names(subject: Subject) -> Subject:
    """The subject as the card must show it: names and keys on one line, control characters
    escaped; integer text as the integer it is."""
    record: dict[str, Any] = copy.deepcopy(dict(subject.record))
    for role in ("training", "evaluation", "other"):
        for entry in record["data"][role]:
            entry["name"] = one_line(entry["name"])
    for metric in record["metrics"]:
        metric["key"] = one_line(metric["key"])
        if isinstance(metric["dataset"], Mapping):
            metric["dataset"]["name"] = one_line(metric["dataset"]["name"])
        if isinstance(metric["value"], str) and metric["value"].lstrip("-").isdigit():
            metric["value"] = int(metric["value"])
    return dataclasses.replace(subject, record=record)


# --------------------------------------------------------------------------- determinism


def test_same_input_same_bytes_and_the_date_changes_only_the_date(
    export_cases: list[ExportCase], settings: ExportSettings, cards: dict[str, bytes]
) -> None:
    later = dataclasses.replace(settings, generated_at="2027-03-04T05:06:07Z")
    for export_case in export_cases:
        first = cards[export_case.id]
        assert model_card.render(export_case.subject, settings) == first, export_case.id
        changed = [
            (old, new)
            for old, new in zip(
                first.decode().splitlines(),
                model_card.render(export_case.subject, later).decode().splitlines(),
                strict=True,
            )
            if old != new
        ]
        assert len(changed) == 1, export_case.id
        old, new = changed[0]
        assert old.replace("2026\\-12\\-01T00\\:00\\:00Z", "2027\\-03\\-04T05\\:06\\:07Z") == new
