"""Redact credentials from an evidence record before anything else sees it.

Teams log secrets into MLflow by mistake: an `api_key` param, an `HF_TOKEN` tag, a git remote
with a token in it, a presigned dataset URL. `redact` replaces such values in a record with
`[redacted]` and returns the JSON Pointers of what it replaced, so that every output (JSON,
table, HTML/PDF reports, the evidence digest) is built from the redacted record only.

Two checks, each one precompiled regular expression:

- by key: a param or tag (run tags, registered version tags, keys inside a dataset's parsed
  `source`) whose key names a credential has its whole value replaced;
- by value: every string in the record is searched for well-known credential formats, and only
  the match is replaced, so a requirement line or a URL stays readable.

Keys are never changed: they name the param or tag a finding points at.

Cost measured on a 2-core machine, per record: 0.15 ms for a typical run (6 KB of JSON: 14
params, 8 tags, 40 requirements), 0.2 ms when a param name such as `max_new_tokens` makes every
string worth a look, 0.9 ms for 1,000 params and an 8,000-character tag; a third to two thirds of
what the record's sha256 costs, about 15 s per 100,000 runs.
Most of it is one look at the record's JSON text for literal hints; the patterns themselves run
only on strings that hold a hint, and key decisions are cached because param names recur across
the runs of a store. Since then one search for all the hints at once (`_ANY_HINT`) rules out the
records that hold none: redact takes about 50 us for the benchmark store's records (2.5 KB),
70 before. With RE2 doing that search, measured again side by side: 14 us where Python's `re`
took 28, and 74 us where it took 408 for runs with 210 params (24 KB of JSON).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import re2

REDACTED = "[redacted]"

# Key segments are matched between "_" after splitting a key on snake, kebab, dots, spaces and
# camelCase, so `max_tokens`, `tokenizer` or `passwordless` never match `token` or `password`.
_KEY_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
_CREDENTIAL_KEY = re.compile(
    r"""_(?:
        password|passwd|pwd|passphrase|passcode|secret|secrets|credential|credentials|creds
        |token|bearer|authorization|apikey|privatekey|accesskey|secretkey
        |(?:api|private|access|account|signing|client|session|master)_key
        |connection_string
    )_""",
    re.VERBOSE,
)
# Decided exceptions, each a common ML or configuration name:
# - a tokenizer's special tokens (`pad_token`, `eos_token`, ...) and token ids/types;
# - keys that name where a secret lives or describe it, not the secret itself
#   (`token_url`, `secret_name`, `credentials_path`, `api_key_env`, `password_min_length`,
#   `token_limit`, `secret_sauce_enabled`).
_NOT_CREDENTIAL_KEY = re.compile(
    r"""
    _(?:pad|eos|bos|unk|sep|cls|mask|sos|eot|eod|eom|start|end|stop|begin|special|image|audio
       |video|placeholder|sentinel|fim|think|decoder|vocab|oov|blank|newline|prefix|suffix
       |middle)_tokens?_
    |_tokens?_(?:id|ids|type|types|embedding|embeddings|classification|level|dropout)_
    |_(?:path|paths|file|files|filename|dir|directory|location|name|env|var|ref|uri|url
       |endpoint|arn|length|len|min|max|count|size|limit|ttl|expiry|expires|expiration
       |enabled|required|policy|type|scope|scopes|provider|header|version|mode|format|kind
       |field|column|source)_$
    """,
    re.VERBOSE,
)

# Values that are never the secret, even under a credential key: empty and null-like values,
# booleans and numbers (`token_limit=512`), references to environment variables, masks, and
# file-system paths (`PWD=/home/me`, `private_key=~/.ssh/id_ed25519`).
_NOT_A_SECRET = re.compile(
    r"""\s*(?:
        none|null|nil|n/?a|true|false|yes|no|nan|[-+]?inf(?:inity)?
        |[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:e[-+]?[0-9]+)?
        |\$\{?[A-Za-z_][A-Za-z0-9_]*\}?|%[A-Za-z_][A-Za-z0-9_]*%
        |\*+|x{3,}|\[redacted\]|<redacted>|redacted
        |(?:~|\.{1,2})?/[\w.@+-]*(?:/[\w.@+-]*)*|[A-Za-z]:\\[\w .\\-]*
    )?\s*""",
    re.VERBOSE | re.IGNORECASE,
)

# Names of secrets in `key=value` text (URL query strings such as presigned S3/GCS URLs and
# Azure SAS, connection strings, command lines) and in `"key": "value"` text (embedded JSON).
_ASSIGNED = (
    r"password|passwd|pwd|secret|client_secret|api[_-]?key|x-api-key|access_token|auth_token"
    r"|refresh_token|id_token|hf_token|token|accountkey|sharedaccesskey|aws_secret_access_key"
    r"|aws_session_token"
)
_URL_SIGNATURES = r"sig|x-amz-signature|x-amz-security-token|x-goog-signature"
_BEFORE = r"(?<![A-Za-z0-9])"
_AFTER = r"(?![A-Za-z0-9])"
# Kept linear on hostile input: no nested quantifiers; loose `sk-` and user-name matches are
# checked in Python (`_replace`).
_SECRET_IN_TEXT = re.compile(
    rf"""
    (?P<pem>-----BEGIN[ A-Z0-9]*PRIVATE\ KEY-----(?s:.*?)(?:-----END[ A-Z0-9]*PRIVATE\ KEY-----|\Z))
    |(?<=://)(?P<userinfo>[^\s/?#\[\]:@]*:[^\s/?#\[\]]+)(?=@)
    |(?:(?<=https://)|(?<=http://))(?P<user_token>[A-Za-z0-9_-]{{32,}})(?=@)
    |(?P<token>{_BEFORE}(?:
        (?:AKIA|ASIA)[A-Z0-9]{{16}}{_AFTER}
        |eyJ[A-Za-z0-9_-]{{10,}}\.eyJ[A-Za-z0-9_-]{{10,}}\.[A-Za-z0-9_-]*
        |gh[pousr]_[A-Za-z0-9]{{30,}}|github_pat_[A-Za-z0-9_]{{40,}}
        |xox[abprs]-[A-Za-z0-9-]{{10,}}
        |hf_[A-Za-z0-9]{{30,}}
        |glpat-[A-Za-z0-9_-]{{20,}}
        |AIza[A-Za-z0-9_-]{{35}}
        |[rs]k_live_[A-Za-z0-9]{{20,}}
    ))
    |(?P<sk>{_BEFORE}sk-[A-Za-z0-9_-]{{20,}})
    |(?P<bearer>{_BEFORE}(?i:bearer)\s+)(?P<bearer_token>[A-Za-z0-9._~+/-]{{16,}}=*)
    |(?P<assign>(?<![A-Za-z0-9_.])(?i:{_ASSIGNED}|{_URL_SIGNATURES})=
        |["'](?i:{_ASSIGNED})["']\s*:\s*["'])
     (?P<assigned>[^\s&;"',<>]+)
    """,
    # ASCII: case folding and \s as `str.lower()` and the hints below see them.
    re.VERBOSE | re.ASCII,
)
_SK_RANDOM_PART = re.compile(r"[A-Za-z0-9]{16,}")

# The patterns above cost about 150 ns a character; looking for these hints about 15. Every match
# of a pattern contains one of them, in a string and in the record's JSON text (which escapes
# only `"`, `\` and control characters), and nearly every run's record contains none.
_HINTS = (
    "PRIVATE KEY", "AKIA", "ASIA", "eyJ", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_",
    "xox", "hf_", "glpat-", "AIza", "k_live_", "sk-",
)  # fmt: skip
_LOWERCASE_HINTS = (
    "bearer", "passw", "pwd", "secret", "api_key", "api-key", "apikey", "token", "accountkey",
    "accesskey", "sig=", "signature=",
)  # fmt: skip
# The user info of a URL; white space spelled out (ASCII's), which `re` and RE2 read alike.
_USERINFO = r"://[^ \t\n\r\f\v/?#@]*@"
_USERINFO_HINT = re.compile(_USERINFO)
# Every hint above, lower-cased, and the user info of a URL, in one RE2 pattern: one search of a
# record's lower-cased text rules out all of them (a DFA: 5 us for the benchmark's 2.4 KB records
# and 45 us for 24 KB of 210 params, where Python's `re` took 20 and 476 and 28 `in` tests 35 and
# 328). `str.lower()` maps each ASCII letter on its own, so a text holding a hint holds its lower
# case; the text is searched as UTF-8, lone surrogates (`redact` without `screen` encodes the
# record as it is) passed through.
_ANY_HINT = re2.compile(
    "|".join(
        [re.escape(hint) for hint in sorted({h.lower() for h in _HINTS} | set(_LOWERCASE_HINTS))]
        + [_USERINFO]
    ).encode()
)


def _may_hold_a_secret(text: str) -> bool:
    return _ANY_HINT.search(text.lower().encode("utf-8", "surrogatepass")) is not None


@dataclass(frozen=True)
class _Hints:
    """The hints a text contains: a string whose hints are not among them holds no secret."""

    exact: tuple[str, ...]
    lowercase: tuple[str, ...]
    userinfo: bool

    @classmethod
    def of(cls, text: str) -> _Hints:
        lowercase = text.lower()
        return cls(
            exact=tuple(hint for hint in _HINTS if hint in text),
            lowercase=tuple(hint for hint in _LOWERCASE_HINTS if hint in lowercase),
            userinfo="@" in text and _USERINFO_HINT.search(text) is not None,
        )

    def __bool__(self) -> bool:
        return bool(self.exact or self.lowercase or self.userinfo)

    def in_(self, text: str) -> bool:
        # Plain loops: this runs for every string of a record that has a hint somewhere.
        for hint in self.exact:
            if hint in text:
                return True
        if self.userinfo and "@" in text and _USERINFO_HINT.search(text):
            return True
        if self.lowercase:
            lowercase = text.lower()
            for hint in self.lowercase:
                if hint in lowercase:
                    return True
        return False


_NO_HINTS = _Hints(exact=(), lowercase=(), userinfo=False)
#: `json.dumps(record, ensure_ascii=False, default=str)`, made once rather than per record.
_TEXT_ENCODER = json.JSONEncoder(ensure_ascii=False, default=str)


def _replace(match: re.Match[str]) -> str:
    kind = match.lastgroup
    if kind == "user_token":
        # A token used as the user name of a git remote (`https://<token>@github.com/...`);
        # user names that long without a digit are names, such as Azure container names.
        if not any(c.isdigit() for c in match.group()):
            return match.group()
    elif kind == "sk" and not _looks_random(match.group()):
        # `sk-` starts kebab-case names too (`sk-learn-random-forest-v2`).
        return match.group()
    elif kind == "bearer_token":
        return match.group("bearer") + REDACTED
    elif kind == "assigned":
        if _NOT_A_SECRET.fullmatch(match.group("assigned")):
            return match.group()
        return match.group("assign") + REDACTED
    return REDACTED


def _looks_random(key: str) -> bool:
    """A long run of letters and digits (OpenAI, DeepSeek keys), or a long mix of upper case,
    lower case and digits broken up by `-` and `_` (Anthropic, OpenAI project keys)."""
    if any(any(c.isdigit() for c in run) for run in _SK_RANDOM_PART.findall(key)):
        return True
    return (
        len(key) >= 40
        and any(c.isupper() for c in key)
        and any(c.islower() for c in key)
        and any(c.isdigit() for c in key)
    )


def redact_text(text: str) -> str:
    """`text` with every credential-looking substring replaced by `[redacted]`."""
    return _SECRET_IN_TEXT.sub(_replace, text) if _Hints.of(text) else text


@lru_cache(maxsize=8192)
def is_credential_key(key: str) -> bool:
    """Whether a param or tag key names a credential (`api_key`, `HF_TOKEN`, `clientSecret`)."""
    words = "_" + "_".join(_KEY_WORDS.findall(key)).lower() + "_"
    return bool(_CREDENTIAL_KEY.search(words)) and not _NOT_CREDENTIAL_KEY.search(words)


def _escape(part: str) -> str:
    return part.replace("~", "~0").replace("/", "~1")


def _keyed_maps(record: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """The mappings whose keys name their values, with their pointers: params, run tags,
    registered version tags, and a dataset's parsed `source` (free-form JSON from user code)."""
    for section in ("hyperparameters", "tags"):
        if isinstance(record.get(section), dict):
            yield f"/{section}", record[section]
    for m, model in _entries(record.get("models")):
        for v, version in _entries(model.get("registered_versions")):
            if isinstance(version.get("tags"), dict):
                yield f"/models/{m}/registered_versions/{v}/tags", version["tags"]
    data = record.get("data")
    for group, datasets in data.items() if isinstance(data, dict) else ():
        for d, dataset in _entries(datasets):
            yield from _nested_maps(dataset.get("source"), f"/data/{_escape(group)}/{d}/source")


def _entries(items: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    if isinstance(items, list):
        for index, item in enumerate(items):
            if isinstance(item, dict):
                yield index, item


def _nested_maps(node: Any, pointer: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        yield pointer, node
        for key, value in node.items():
            yield from _nested_maps(value, f"{pointer}/{_escape(str(key))}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _nested_maps(value, f"{pointer}/{index}")


def _redact_values(node: Any, pointer: str, hints: _Hints, found: list[str]) -> None:
    """Replace secrets inside the strings of a container, in place."""
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, value in items:
        if isinstance(value, str):
            if hints.in_(value):
                cleaned = _SECRET_IN_TEXT.sub(_replace, value)
                if cleaned != value:
                    node[key] = cleaned
                    found.append(f"{pointer}/{_escape(str(key))}")
        elif isinstance(value, dict | list):
            _redact_values(value, f"{pointer}/{_escape(str(key))}", hints, found)


def redact(record: dict[str, Any], screen: str | None = None) -> list[str]:
    """Replace credential-looking values in an evidence record, in place, with `[redacted]`.

    Returns the sorted JSON Pointers (RFC 6901) of the replaced values. Running it again on its
    own output changes nothing and returns an empty list. `screen`, when given, is a JSON
    encoding of the record (its canonical JSON, say) to look for hints of secrets in, instead of
    encoding it here: every string of the record is in it, escaped the same way.
    """
    found: list[str] = []
    for pointer, mapping in _keyed_maps(record):
        for key, value in mapping.items():
            if (
                isinstance(value, str)
                and is_credential_key(str(key))
                and not _NOT_A_SECRET.fullmatch(value)
            ):
                mapping[key] = REDACTED
                found.append(f"{pointer}/{_escape(str(key))}")
    text = _TEXT_ENCODER.encode(record) if screen is None else screen
    hints = _Hints.of(text) if _may_hold_a_secret(text) else _NO_HINTS
    if hints:
        # `collection.redacted` holds pointers, which name keys only.
        collection = record.get("collection")
        if isinstance(collection, dict) and "notes" in collection:
            notes = {"notes": collection["notes"]}
            _redact_values(notes, "/collection", hints, found)
            collection["notes"] = notes["notes"]
        sections = {k: v for k, v in record.items() if k != "collection"}
        _redact_values(sections, "", hints, found)
        record.update(sections)
    return sorted(found)
