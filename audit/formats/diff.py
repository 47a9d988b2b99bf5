"""A diff of two evidence records (`audit.diff.RecordDiff`) for people and for machines.

- ``render_diff_text``: a terminal or a CI log, grouped by section, 100 columns: one line per
  change (``+`` added, ``-`` removed, ``~`` changed, ``!`` not comparable), wrapped with a hang;
- ``render_diff_json``: the diff as published in ``schemas/diff.schema.json``;
- ``render_diff_markdown``: a pull-request comment, a GitHub-flavoured table per section.

Every value comes from MLflow and is untrusted: the text escapes it with `safe_line` (nothing in
it can act on a terminal or start a workflow command), the Markdown with `md` (nothing in it
becomes a link, a mention or a table cell of its own). Each section says "no changes" plainly
when it has none.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from audit.diff import (
    SECTIONS,
    Change,
    DatasetChange,
    DatasetSide,
    MetricChange,
    MetricSide,
    PolicyDiff,
    RecordDiff,
    RuleChange,
    Subject,
    VersionRef,
)
from audit.formats.markdown import GITHUB_COMMENT_LIMIT, Page, Section, md
from audit.formats.table import Painter
from audit.formats.text import plural, safe_wrapped, shorten

TEXT_WIDTH = 100
_TITLES = {
    "params": "hyperparameters",
    "datasets": "datasets",
    "metrics": "metrics",
    "environment": "environment",
    "code": "code",
    "model": "model",
    "policy": "policy outcomes",
}
_MARKS = {"added": "+", "removed": "-", "changed": "~", "not_comparable": "!"}
_KIND_WORDS = {
    "added": "added",
    "removed": "removed",
    "changed": "changed",
    "not_comparable": "not comparable",
}
_NAME_COLUMN = 30  # the width names are padded to in the text, so that values line up
_SHOWN_NAME = 80  # characters of a name shown in the text
_SHOWN_VALUE = 240  # characters of a value shown in the text and in a Markdown cell
_NONE = "(none)"


# --------------------------------------------------------------------------- text


def render_diff_text(diff: RecordDiff, color: bool = False, width: int = TEXT_WIDTH) -> str:
    paint = Painter(color)
    lines = [paint("mlflow-audit diff", "bold")]
    lines += _wrapped(_subject_text("old", diff.old), 5, width)
    lines += _wrapped(_subject_text("new", diff.new), 5, width)
    for name in SECTIONS:
        lines.append("")
        changes = diff.section(name)
        if name == "policy":
            lines += _policy_text(diff.policy, paint, width)
            continue
        lines.append(paint(f"{_TITLES[name]}: {_counts(changes) or 'no changes'}", "bold"))
        for change in changes:
            lines += _change_line(change.kind, _name_of(change), _detail(change), paint, width)
    return "\n".join(lines) + "\n"


def _wrapped(text: str, hang: int, width: int) -> list[str]:
    return safe_wrapped(text, width=width, hang=hang)


def _subject_text(label: str, subject: Subject) -> str:
    parts = [f"{label}  run {subject.run_id}"]
    if subject.run_name:
        parts[0] += f" {_shown(subject.run_name)}"
    parts.append(f"experiment {_shown(subject.experiment_name or subject.experiment_id or '')}")
    version = subject.model_version
    parts += [f"model {_version(v)}" for v in (version,) if v is not None]
    if version is None:
        parts += [f"model {_version(v)}" for v in subject.registered_versions]
    if subject.sweep:
        parts.append(f"sweep {_run(subject.sweep.id, subject.sweep.name)}")
    if subject.evaluations:
        parts.append(
            "evaluated in " + ", ".join(_run(run.id, run.name) for run in subject.evaluations)
        )
    return " · ".join(parts)


def _change_line(kind: str, name: str, detail: str, paint: Painter, width: int) -> list[str]:
    name = shorten(name, _SHOWN_NAME)
    lines = _wrapped(f"  {_MARKS[kind]} {name:<{_NAME_COLUMN}} {detail}", 6, width)
    # The mark is painted after wrapping: colour codes would count as width.
    lines[0] = "  " + paint(_MARKS[kind], kind) + lines[0][3:]
    return lines


def _policy_text(policy: PolicyDiff | None, paint: Painter, width: int) -> list[str]:
    title = _TITLES["policy"]
    if policy is None:
        return [paint(f"{title}: not compared (no audit results)", "bold")]
    lines = [paint(f"{title}: {_counts(policy.rules) or 'no changes'}", "bold")]
    lines += _wrapped(f"  {_verdict_text(policy)}", 4, width)
    for rule in policy.rules:
        lines += _change_line("changed", rule.rule_id, f"{rule.old} -> {rule.new}", paint, width)
    return lines


def _verdict_text(policy: PolicyDiff) -> str:
    status = (
        f"status {policy.old_status} -> {policy.new_status}"
        if policy.old_status != policy.new_status
        else f"status {policy.new_status} (unchanged)"
    )
    if policy.old_score is None or policy.new_score is None:
        return status
    if policy.old_score == policy.new_score:
        return f"{status} · score {policy.new_score:g}% (unchanged)"
    return f"{status} · score {policy.old_score:g}% -> {policy.new_score:g}%"


def _counts(changes: tuple[Any, ...]) -> str:
    kinds = [getattr(change, "kind", "changed") for change in changes]
    return ", ".join(
        f"{kinds.count(kind)} {word}" for kind, word in _KIND_WORDS.items() if kind in kinds
    )


# --------------------------------------------------------------------------- for documents


@dataclass(frozen=True)
class DiffSection:
    """One section of a diff as a document shows it (the HTML escapes it)."""

    title: str
    #: "1 added, 2 changed", or "no changes"; for the policy, with the status and score.
    summary: str
    #: (kind: added, removed, changed, not comparable; name; what changed) per change.
    rows: tuple[tuple[str, str, str], ...]


def diff_sections(diff: RecordDiff) -> tuple[DiffSection, ...]:
    """The diff's sections in words, as the text rendering words them."""
    sections = []
    for name in SECTIONS:
        if name == "policy":
            policy = diff.policy
            if policy is None:
                sections.append(DiffSection(_TITLES[name], "not compared", ()))
                continue
            counts = _counts(policy.rules) or "no changes"
            sections.append(
                DiffSection(
                    _TITLES[name],
                    f"{counts}; {_verdict_text(policy)}",
                    tuple(
                        ("changed", rule.rule_id, f"{rule.old} -> {rule.new}")
                        for rule in policy.rules
                    ),
                )
            )
            continue
        changes = diff.section(name)
        sections.append(
            DiffSection(
                _TITLES[name],
                _counts(changes) or "no changes",
                tuple(
                    (_KIND_WORDS[change.kind], _name_of(change), _detail(change))
                    for change in changes
                ),
            )
        )
    return tuple(sections)


# --------------------------------------------------------------------------- shared wording


def _name_of(change: Any) -> str:
    if isinstance(change, DatasetChange):
        return f"{change.role} {change.name if change.name is not None else '(unnamed)'}"
    if isinstance(change, MetricChange):
        return change.key
    if isinstance(change, RuleChange):
        return change.rule_id
    return str(change.name)


def _detail(change: Any) -> str:
    """What changed, on one line: "old -> new", or the one side there is."""
    if isinstance(change, DatasetChange):
        return _sides(change.kind, _dataset(change.old), _dataset(change.new))
    if isinstance(change, MetricChange):
        note = _metric_note(change)
        return f"{_metric_sides(change)} · {note}" if note else _metric_sides(change)
    assert isinstance(change, Change)
    return _sides(change.kind, _shown(change.old), _shown(change.new))


def _sides(kind: str, old: str, new: str) -> str:
    if kind == "added":
        return new
    if kind == "removed":
        return old
    return f"{old} -> {new}"


def _dataset(side: DatasetSide | None) -> str:
    if side is None:
        return _NONE
    text = f"digest {_shown(side.digest)} · source {_shown(side.source)}"
    return text + (f" · run {side.run_id}" if side.run_id else "")


def _metric(side: MetricSide | None, with_basis: bool = True) -> str:
    if side is None:
        return _NONE
    value = side.value if isinstance(side.value, str) else json.dumps(side.value)
    return f"{_shown(value)} ({_basis(side)})" if with_basis else _shown(value)


def _basis(side: MetricSide) -> str:
    """What the metric was computed on, as far as the record says, and the run that logged it."""
    if side.dataset is not None:
        on = f"on {_shown(side.dataset.name)} ({_shown(side.dataset.digest)})"
    else:
        on = f"{side.context} data, no dataset link" if side.context else "no dataset link"
    return on + (f", run {side.run_id}" if side.run_id else "")


def _metric_sides(change: MetricChange) -> str:
    """Both values; what they were computed on once when the record says the same of both."""
    old, new = change.old, change.new
    if old is not None and new is not None and _basis(old) == _basis(new):
        return f"{_metric(old, False)} -> {_metric(new, False)} ({_basis(new)})"
    return _sides(change.kind, _metric(old), _metric(new))


def _metric_note(change: MetricChange) -> str:
    if change.kind == "changed":
        return _delta(change)
    return f"not comparable: {change.reason}" if change.kind == "not_comparable" else ""


def _delta(change: MetricChange) -> str:
    if change.delta is None:
        return "no delta (not finite numbers)"
    relative = f" ({change.relative:+.3g}%)" if change.relative is not None else ""
    return f"delta {change.delta:+.6g}{relative}"


def _version(version: VersionRef) -> str:
    aliases = f" ({', '.join(_shown(a) for a in version.aliases)})" if version.aliases else ""
    return f"{_shown(version.name)}/{_shown(version.version)}{aliases}"


def _run(run_id: str, name: str | None) -> str:
    return f"{run_id} {_shown(name)}" if name else run_id


def _shown(value: str | None) -> str:
    if value is None:
        return _NONE
    return shorten(value, _SHOWN_VALUE) if value else '""'


# --------------------------------------------------------------------------- JSON


def render_diff_json(diff: RecordDiff) -> str:
    # allow_nan=False: a NaN in the output would be invalid JSON; the diff holds none.
    return json.dumps(diff.to_dict(), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


# --------------------------------------------------------------------------- Markdown

_MARKDOWN_NOTE_RESERVE = 600  # room kept for the note saying what was left out


def render_diff_markdown(diff: RecordDiff, *, max_length: int = GITHUB_COMMENT_LIMIT) -> str:
    page = Page(max_length - _MARKDOWN_NOTE_RESERVE)
    changes = sum(len(diff.section(name)) for name in SECTIONS)
    headline = plural(changes, "change") if diff.changed else "no changes"
    page.add(Section([f"### mlflow-audit diff: {headline}", ""]))
    page.add(Section(["| | old | new |", "|---|---|---|"], _subject_rows(diff), [""]))
    for name in SECTIONS:
        if not page.add(_markdown_section(diff, name)):
            page.left_out.append(f"the section {_TITLES[name]}")
    text = "\n".join(page.lines).rstrip("\n") + "\n"
    if page.left_out:
        text += (
            f"\n_Not shown, to stay within {max_length:,} characters: "
            f"{'; '.join(page.left_out)}. The whole diff: `mlflow-audit diff --format json`._\n"
        )
    return text


def _subject_rows(diff: RecordDiff) -> list[str]:
    old, new = diff.old, diff.new
    rows = [
        ("run", _run(old.run_id, old.run_name), _run(new.run_id, new.run_name)),
        (
            "experiment",
            old.experiment_name or old.experiment_id or "",
            new.experiment_name or new.experiment_id or "",
        ),
        (
            "registered version",
            ", ".join(map(_version, old.registered_versions)),
            ", ".join(map(_version, new.registered_versions)),
        ),
    ]
    if old.model_version or new.model_version:
        rows.append(("model version", _optional_version(old), _optional_version(new)))
    if old.sweep or new.sweep:
        rows.append(("sweep", _optional_run(old), _optional_run(new)))
    if old.evaluations or new.evaluations:
        rows.append(
            (
                "evaluated in",
                ", ".join(_run(r.id, r.name) for r in old.evaluations),
                ", ".join(_run(r.id, r.name) for r in new.evaluations),
            )
        )
    return [_row(label, before, after) for label, before, after in rows]


def _optional_version(subject: Subject) -> str:
    return _version(subject.model_version) if subject.model_version else ""


def _optional_run(subject: Subject) -> str:
    return _run(subject.sweep.id, subject.sweep.name) if subject.sweep else ""


def _markdown_section(diff: RecordDiff, name: str) -> Section:
    title = _TITLES[name].capitalize()
    if name == "policy":
        return _markdown_policy(diff.policy)
    changes = diff.section(name)
    if not changes:
        return Section([f"#### {title}: no changes", ""])
    opening = [f"#### {title}: {_counts(changes)}", ""]
    if name == "metrics":
        opening += ["| | metric | old | new | delta |", "|---|---|---|---|---|"]
        rows = [
            _row(
                _KIND_WORDS[c.kind],
                c.key,
                _metric(c.old),
                _metric(c.new),
                _metric_note(c),
            )
            for c in changes
        ]
    elif name == "datasets":
        opening += ["| | role | dataset | old | new |", "|---|---|---|---|---|"]
        rows = [
            _row(
                _KIND_WORDS[c.kind],
                c.role,
                c.name if c.name is not None else "(unnamed)",
                _dataset(c.old) if c.old else "",
                _dataset(c.new) if c.new else "",
            )
            for c in changes
        ]
    else:
        opening += ["| | item | old | new |", "|---|---|---|---|"]
        rows = [
            _row(_KIND_WORDS[c.kind], c.name, _optional(c.old), _optional(c.new)) for c in changes
        ]
    return Section(opening, rows, [""], what=f"the section {_TITLES[name]}")


def _markdown_policy(policy: PolicyDiff | None) -> Section:
    title = _TITLES["policy"].capitalize()
    if policy is None:
        return Section([f"#### {title}: not compared (no audit results)", ""])
    if not policy.rules:
        return Section([f"#### {title}: no changes", "", md(_verdict_text(policy)), ""])
    return Section(
        [
            f"#### {title}: {_counts(policy.rules)}",
            "",
            md(_verdict_text(policy)),
            "",
            "| rule | old | new |",
            "|---|---|---|",
        ],
        [_row(rule.rule_id, rule.old, rule.new) for rule in policy.rules],
        [""],
        what=f"the section {title}",
    )


def _optional(value: str | None) -> str:
    return "" if value is None else _shown(value)


def _row(*cells: str) -> str:
    return "| " + " | ".join(md(cell) for cell in cells) + " |"
