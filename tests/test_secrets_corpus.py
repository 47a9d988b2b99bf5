"""Recall and false positives of redaction, measured on a corpus of credentials in the spellings
teams log them and of look-alikes that must stay (tests/fixtures/secrets_corpus.py).

`pytest -s tests/test_secrets_corpus.py` prints the figures; the assertions carry them too."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from audit.evidence import canonical_json
from audit.redaction import REDACTED, _clean, _hinted_strings, redact, redact_text
from tests.fixtures import secrets_corpus as corpus
from tests.records import complete_record

# A credential counts as redacted when no 8 characters of it survive (all of it, if shorter):
# a value cut short by a stray delimiter is a leak.
_WINDOW = 8


def _leaks(secret: str, text: str) -> bool:
    width = min(_WINDOW, len(secret))
    return any(secret[i : i + width] in text for i in range(len(secret) - width + 1))


def _in_a_record(**params: str) -> tuple[dict[str, Any], list[str]]:
    """A complete evidence record holding `params`, redacted as `record_and_digest` does."""
    record = complete_record()
    record["hyperparameters"] = {"alpha": "0.1", **params}
    return record, redact(record, screen=canonical_json(record).decode())


def _rate(failures: list[Any], total: int) -> str:
    return f"{len(failures)}/{total} ({100 * len(failures) / total:.1f}%)"


def test_the_corpus_is_large_enough() -> None:
    credentials = len(corpus.SECRETS) + len(corpus.NAMED) + len(corpus.SECRET_NAMES)
    lookalikes = len(corpus.LOOKALIKES) + len(corpus.NAMED_LOOKALIKES)
    assert credentials >= 200 and lookalikes >= 200, (credentials, lookalikes)
    # fake but shaped: each credential sample differs from every look-alike
    assert not set(corpus.LOOKALIKES) & {text for text, _ in corpus.SECRETS}


def test_recall_is_complete() -> None:
    """Every credential sample is redacted: in a string, under its name, and as a name."""
    missed: list[Any] = []
    for text, secret in corpus.SECRETS:
        redacted = redact_text(text)
        if _leaks(secret, redacted) or REDACTED not in redacted:
            missed.append(("text", text, redacted))
        # the same in a record, where the record's JSON text is screened for hints first
        record, _ = _in_a_record(note=text)
        if _leaks(secret, canonical_json(record).decode()):
            missed.append(("record", text, record["hyperparameters"]["note"]))
    for name, value in corpus.NAMED:
        record, pointers = _in_a_record(**{name: value})
        if _leaks(value, canonical_json(record).decode()):
            missed.append(("named", name, record["hyperparameters"][name]))
        elif pointers != [f"/hyperparameters/{name.replace('/', '~1')}"]:
            missed.append(("named pointer", name, pointers))
    for name, secret in corpus.SECRET_NAMES:
        record, pointers = _in_a_record(**{name: "1"})
        text = canonical_json(record).decode()
        if _leaks(secret, text) or _leaks(secret, "".join(pointers)) or not pointers:
            missed.append(("name", name, sorted(record["hyperparameters"])))
    total = len(corpus.SECRETS) * 2 + len(corpus.NAMED) + len(corpus.SECRET_NAMES)
    recall = f"recall {100 * (total - len(missed)) / total:.1f}%, missed {_rate(missed, total)}"
    print(f"\ncredentials: {recall}")
    assert missed == [], recall


def test_no_false_positives() -> None:
    """Every look-alike stays as it is: in a string, in a record, and under its name."""
    changed: list[Any] = []
    for text in corpus.LOOKALIKES:
        if redact_text(text) != text:
            changed.append(("text", text, redact_text(text)))
        record, pointers = _in_a_record(note=text)
        if pointers or record["hyperparameters"]["note"] != text:
            changed.append(("record", text, pointers))
        # as a name, with an empty value: no pointer unless the name was renamed
        record, pointers = _in_a_record(**{text[:250]: ""})
        if pointers:
            changed.append(("name", text, pointers))
    for name, value in corpus.NAMED_LOOKALIKES:
        record, pointers = _in_a_record(**{name: value})
        if pointers or record["hyperparameters"][name] != value:
            changed.append(("named", name, value))
    total = len(corpus.LOOKALIKES) * 3 + len(corpus.NAMED_LOOKALIKES)
    rate = f"false positives {_rate(changed, total)}"
    print(f"\nlook-alikes: {rate}")
    assert changed == [], rate


def test_the_hints_select_every_string_a_pattern_changes() -> None:
    """A record is looked at closely only where its JSON text holds a hint (one RE2 search):
    whatever the patterns would replace in a string, that string holds a hint found in the
    record's text, whatever else the record holds."""
    texts = [text for text, _ in corpus.SECRETS] + [name for name, _ in corpus.SECRET_NAMES]
    for text in texts + list(corpus.LOOKALIKES):
        for neighbour in ("", "max_tokens: 512", "s3://bucket/a@b"):
            record = complete_record()
            record["hyperparameters"] = {"note": text, "other": neighbour}
            hinted = _hinted_strings(canonical_json(record).decode())
            if _clean(text) != text:
                assert hinted is not None and text in hinted, text


def test_redaction_of_the_corpus_is_idempotent() -> None:
    for text, _ in corpus.SECRETS:
        once = redact_text(text)
        assert redact_text(once) == once, text
    record, _ = _in_a_record(**{name: "1" for name, _ in corpus.SECRET_NAMES}, **dict(corpus.NAMED))
    again = copy.deepcopy(record)
    assert redact(again) == [] and again == record


@pytest.mark.parametrize("text", [text for text, _ in corpus.ISSUE_17])
def test_the_examples_of_issue_17_are_redacted(text: str) -> None:
    record, pointers = _in_a_record(note=text)
    assert pointers == ["/hyperparameters/note"]
    assert REDACTED in record["hyperparameters"]["note"]
