# ruff: noqa: S105 - the words that name credentials, no credential
"""Redact credentials from an evidence record before anything else sees it.

Teams log secrets into MLflow by mistake: an `api_key` param, an `HF_TOKEN` tag, a git remote
with a token in it, a presigned dataset URL, a `.env` file or a command line pasted into a
param, a token pasted as the *name* of a param. `redact` replaces them in a record with
`[redacted]` and returns the JSON Pointers of what it replaced, so that every output (JSON,
table, HTML/PDF reports, the evidence digest) is built from the redacted record only.

What is found (the catalogue, informed by the public rule sets of gitleaks, detect-secrets and
trufflehog; the patterns are written here):

- by name: a param or tag (run tags, registered version tags, keys inside a dataset's parsed
  `source`) whose name says it holds a credential (`api_key`, `HF_TOKEN`, `PGPASSWORD`,
  `clientSecret`; not `max_tokens`, `pad_token`, `password_min_length`) has its whole value
  replaced;
- by shape, inside every string of the record, dict keys (param and tag names) included:
  `NAME=value`, `NAME: value`, `NAME = value`, `"NAME": "value"`, `NAME := value`,
  `<NAME>value</NAME>`, `--NAME value` and `$env:NAME = value` where NAME names a credential as
  above (environment variables, .env, INI, TOML, YAML, JSON, HTTP headers, command lines, query
  strings); `Authorization`/`Proxy-Authorization` headers (the scheme kept: `Basic [redacted]`),
  `Bearer` and `Basic` credentials; the user info of a URL in any scheme (`scheme://user:pw@`,
  and a long token as the user name); private keys in every armour (PEM and OpenSSH, encrypted
  or not, PGP, SSH2, PuTTY); and the token formats of well-known services (AWS, GitHub, GitLab,
  Slack, Stripe, Google, OpenAI, Anthropic, Hugging Face, Databricks, JWTs, npm, PyPI,
  SendGrid, ...: `_SHAPES`). Only the secret is replaced, so a URL or a command stays readable;
  a dict key holding one is renamed to its redacted text (`[redacted]`, then `[redacted] (2)`
  for a second one in the same mapping), so the record stays deterministic.

What cannot be found: a secret with no recognisable shape under a name that does not say what
it is (`pw2 = hunter2`, `auth: hunter2`, a bare password in prose).

Cost: every record's JSON text (the canonical JSON its digest is taken of) is searched once, by
RE2, for hints (`_HINT`): what every match of a pattern contains (`ghp_`, `passw`, `private
key`, `dapi` and 32 hex digits, ...). Most records hold none and cost that one search (a few
microseconds); in the others, only the strings holding a hint (a set, read from the JSON text
around each hint) are matched against the patterns, with Python's `re`. Figures in
benchmarks/bench_redaction.py and docs/performance.md.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import re2

REDACTED = "[redacted]"

# --------------------------------------------------------------------------- names

# Key segments are matched between "_" after splitting a key on snake, kebab, dots, spaces and
# camelCase, so `max_tokens`, `tokenizer` or `passwordless` never match `token` or `password`.
_KEY_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
_PASSWORD_WORDS = r"[a-z0-9]*(?:password|passwd|passphrase|passcode|pwd)"
# `db_pass`, `SMTP_PASS`, `keypass`: "pass" alone is too common a word (`forward_pass`).
_PASS_OWNERS = (
    r"db|database|smtp|mail|email|ftp|sftp|user|admin|root|redis|mysql|pg|postgres|ldap|proxy"
    r"|login|sql|mongo|rabbitmq|amqp|sasl|ssh|key|store"
)
_PASSWORD_KEY = re.compile(rf"_{_PASSWORD_WORDS}_|_(?:{_PASS_OWNERS})_?pass_")
# The owners of a `_key`, a `token` or an `auth`, spelled apart or glued (`apiKey`, `APIKEY`).
_KEY_OWNERS = (
    r"api|app|auth|access|account|private|priv|secret|signing|master|client|session|service|db"
    r"|database|encryption|storage|subscription|license|consumer|webhook|ssh|functions"
    r"|shared_?access|sas|kaggle"
)
_TOKEN_OWNERS = (
    r"api|auth|access|refresh|bot|id|session|oauth|bearer|secret|private|personal|deploy"
    r"|service|app|user|admin|gh|hf|npm|pypi|slack|github|gitlab|vault|sas|registry|ci|job"
    r"|runner|jwt|csrf|xsrf"
)
_TOKEN_QUALIFIERS = r"[0-9]+|v[0-9]+|prod|dev|test|staging|write|read|ro|rw|admin|new|old"
_CREDENTIAL_KEY = re.compile(
    rf"""
    {_PASSWORD_KEY.pattern}
    |_(?:
        secret|secrets|[a-z0-9]*secret|credential|credentials|creds|bearer|authorization
        |privkey|keypass|cookie|cookies|connection_string|sharedaccesssignature
        |(?:{_KEY_OWNERS})_?key
        |(?:basic|http|https|proxy|rediscli|redis|smtp|x)_?auth
    )_
    # A token is the last word (`HF_TOKEN`, `use_auth_token`), or before a qualifier
    # (`GITHUB_TOKEN_PROD`): `token_budget` and `token_pooling` are about tokenisation.
    |_(?:{_TOKEN_OWNERS})?token_(?:(?:{_TOKEN_QUALIFIERS})_)?$
    """,
    re.VERBOSE,
)
# Decided exceptions, each a common ML or configuration name:
# - a tokenizer's special tokens (`pad_token`, `eos_token`, ...) and token ids/types;
# - keys that name where a secret lives or describe it, not the secret itself
#   (`token_url`, `secret_name`, `credentials_path`, `api_key_env`, `password_min_length`,
#   `token_limit`, `secret_sauce_enabled`, `auth_token_header`, `db_password_host`).
_NOT_CREDENTIAL_KEY = re.compile(
    r"""
    _(?:pad|eos|bos|unk|sep|cls|mask|sos|eot|eod|eom|start|end|stop|begin|special|image|audio
       |video|placeholder|sentinel|fim|think|decoder|vocab|oov|blank|newline|prefix|suffix
       |middle)_tokens?_
    |_tokens?_(?:id|ids|type|types|embedding|embeddings|classification|level|dropout)_
    |_(?:path|paths|file|files|filename|dir|directory|location|name|env|var|ref|uri|url
       |endpoint|arn|length|len|min|max|count|size|limit|ttl|expiry|expires|expiration
       |enabled|required|policy|type|scope|scopes|provider|header|version|mode|format|kind
       |field|column|source|host|hostname|server|port|realm|domain|method|scheme|algorithm
       |user|username|login|prompt|hint|stdin|cmd|command|helper|store)_$
    """,
    re.VERBOSE,
)
# Query-string names of URL signatures (presigned S3/GCS URLs, Azure SAS): secrets after `=`
# only, since "signature" is also a model's input and output schema.
_URL_SIGNATURES = frozenset(
    {"sig", "signature", "x-amz-signature", "x-goog-signature", "x-amz-credential",
     "x-goog-credential", "x-amz-security-token"}
)  # fmt: skip
_AUTHORIZATION_HEADERS = frozenset({"authorization", "proxy-authorization"})


@lru_cache(maxsize=8192)
def _credential_kind(key: str) -> int:
    """Whether a param or tag key (or a name in text) names a credential (`api_key`, `HF_TOKEN`,
    `clientSecret`): 0 if not, 1 if so, 2 if it names a password, which may be all digits."""
    words = "_" + "_".join(_KEY_WORDS.findall(key)).lower() + "_"
    if not _CREDENTIAL_KEY.search(words) or _NOT_CREDENTIAL_KEY.search(words):
        return 0
    return 2 if _PASSWORD_KEY.search(words) else 1


# --------------------------------------------------------------------------- values

# Values that are never the secret, even under a credential name: empty and null-like values,
# booleans, references to environment variables or templates, masks, YAML block indicators,
# file-system paths (`PWD=/home/me`, `private_key=~/.ssh/id_ed25519`), and numbers
# (`token_limit=512`) unless the name says password.
_PLACEHOLDER = r"""
    none|null|nil|n/?a|true|false|yes|no|nan|[-+]?inf(?:inity)?
    |\$\{?[A-Za-z_][A-Za-z0-9_]*\}?|%[A-Za-z_][A-Za-z0-9_]*%|%\([A-Za-z_]\w*\)s
    |\$\{\{[^{}]*\}\}|\{\{[^{}]*\}\}|<[^<>]*>|\$\([^()]*\)
    |(?:os\.environ|os\.getenv|process\.env|getenv)\b\S*
    |\*+|x{3,}|\[redacted\](?:\ \(\d+\))?|redacted
    |[|>][-+]?
    |(?:~|\.{1,2})?/[\w.@+-]*(?:/[\w.@+-]*)*|[A-Za-z]:\\[\w .\\-]*
"""
_NUMBER = r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:e[-+]?[0-9]+)?"
_NOT_A_SECRET = re.compile(
    rf"\s*(?:{_PLACEHOLDER}|{_NUMBER})?\s*", re.VERBOSE | re.IGNORECASE | re.ASCII
)
_NOT_A_PASSWORD = re.compile(rf"\s*(?:{_PLACEHOLDER})?\s*", re.VERBOSE | re.IGNORECASE | re.ASCII)


def _kept(value: str, kind: int) -> bool:
    return (_NOT_A_PASSWORD if kind == 2 else _NOT_A_SECRET).fullmatch(value) is not None


# --------------------------------------------------------------------------- patterns

# Token formats with a fixed prefix, each a hint in `_HINT`.
_SHAPES = r"""
    (?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}(?![A-Za-z0-9])              # AWS key id
    |ABSK[A-Za-z0-9+/]{100,}=*                                                   # AWS Bedrock
    |eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]*                # JWT
    |gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{40,}                     # GitHub
    |gl(?:pat|ptt|dt|rt|soat|cbt|ft|imt|agent|oas|ffct)-[A-Za-z0-9_.-]{20,}       # GitLab
    |GR1348941[A-Za-z0-9_-]{20,}
    |xox[abeoprs]-[A-Za-z0-9.-]{10,}|xoxe\.xox[bp]-[A-Za-z0-9-]{10,}              # Slack
    |xapp-[0-9]-[A-Za-z0-9-]{10,}
    |(?:https?://)?hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9+/_-]{20,}
    |hf_[A-Za-z0-9]{30,}|api_org_[A-Za-z]{30,}                                   # Hugging Face
    |AIza[A-Za-z0-9_-]{35}|ya29\.[A-Za-z0-9_-]{20,}|GOCSPX-[A-Za-z0-9_-]{20,}     # Google
    |[rs]k_(?:live|test|prod)_[A-Za-z0-9]{10,}|whsec_[A-Za-z0-9]{24,}             # Stripe
    |dapi[0-9a-f]{32}(?:-[0-9])?(?![A-Za-z0-9])                                  # Databricks
    |npm_[A-Za-z0-9]{36}(?![A-Za-z0-9])                                          # npm
    |pypi-AgE[A-Za-z0-9_-]{50,}                                                  # PyPI
    |SG\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}                                  # SendGrid
    |shp(?:at|ca|pa|ss)_[0-9a-fA-F]{32}                                          # Shopify
    |do[opr]_v1_[0-9a-f]{64}                                                     # DigitalOcean
    |lin_api_[A-Za-z0-9]{40}                                                     # Linear
    |PMAK-[0-9a-fA-F]{24}-[0-9a-fA-F]{34}                                        # Postman
    |glc_[A-Za-z0-9+/]{32,}=*|glsa_[A-Za-z0-9]{32}_[0-9a-fA-F]{8}                # Grafana
    |hv[sb]\.[A-Za-z0-9_-]{24,}                                                  # Vault
    |[A-Za-z0-9]{14}\.atlasv1\.[A-Za-z0-9_=-]{60,}                               # Terraform
    |AGE-SECRET-KEY-1[0-9A-Z]{58}                                                # age
    |LTAI[A-Za-z0-9]{20}(?![A-Za-z0-9])                                          # Alibaba
    |sntry[us]_[A-Za-z0-9+/=_]{40,}                                              # Sentry
    |pnu_[A-Za-z0-9]{36}|pplx-[A-Za-z0-9]{48}|gsk_[A-Za-z0-9]{48,}                # Prefect, ...
    |r8_[A-Za-z0-9]{37}(?![A-Za-z0-9])|xkeysib-[0-9a-f]{64}-[A-Za-z0-9]{16}
    |rubygems_[0-9a-f]{48}|pscale_(?:tkn|oauth|pw)_[A-Za-z0-9_=.-]{32,}
    |ntn_[0-9]{11}[A-Za-z0-9]{35}|ATATT3[A-Za-z0-9_=-]{100,}
    |AKCp[A-Za-z0-9]{60,}|dp\.pt\.[A-Za-z0-9]{40,}|dt0c01\.[A-Za-z0-9]{24}\.[A-Za-z0-9]{64}
    |[0-9]{8,10}:AA[A-Za-z0-9_-]{33}                                             # Telegram bot
    |[A-Za-z0-9_~.]{3}[0-9]Q~[A-Za-z0-9_~.-]{31,34}                               # Azure AD
    |(?:https?://)?(?:canary\.|ptb\.)?discord(?:app)?\.com/api/webhooks/[0-9]+/[A-Za-z0-9_-]{20,}
"""
# After the first `-` (which `re` then tests before trying the rest):
_BEGIN = r"-{3,4}\ ?BEGIN[\ A-Z0-9_-]{0,40}PRIVATE\ KEY(?:\ BLOCK)?\ ?-{4,5}"
_END = r"-{4,5}\ ?END[\ A-Z0-9_-]{0,40}PRIVATE\ KEY(?:\ BLOCK)?\ ?-{4,5}"
# A name that may be assigned a value starts a word (or follows PowerShell's `$env:`, a `:` of
# .npmrc or a Ruby symbol, or an escaped line break in logged text: `escaped_name`), at most
# 100 characters; it is checked in Python.
_NAME_START = r"(?:(?<![\w.:/$\\-])|(?<=\$env:)|(?<=[/\s{(,]:))"
_NAME = r"-{0,2}[A-Za-z_][\w.-]{0,100}"
# `=`, `:`, `:=`, `=>`, after the quote that closes a quoted name, and the blanks around it
_SEP = r"""\\?["']?[\ \t]*(?::=|=>|=(?!=)|:(?![:/]))[\ \t]*"""
# Kept linear on hostile input: no nested quantifiers, runs bounded (names and passwords made
# atomic by a lookahead and a backreference, as Python 3.10 has no possessive quantifiers), and
# a value's extent is found in Python (`_assigned`) only once its name names a credential.
# Kept fast: every match starts with a character that is no letter or digit (a secret at the
# start of a text too: `_clean` puts a space before it) or the `P` of PuTTY, so `re` skips
# every other position without trying the alternatives.
_SECRET_IN_TEXT = re.compile(
    rf"""
    [^A-OQ-Za-z0-9]
    (?:
        (?<=-){_BEGIN}(?s:.*?)(?:{_END}|\Z)(?P<pem>)
        |(?<=P)uTTY-User-Key-File-[0-9]+:(?s:.*?)(?:Private-MAC:[\ \t]*[0-9A-Fa-f]*|\Z)
            (?P<putty>)
        |(?<=<)(?P<xml>[A-Za-z_][\w.:-]{{0,100}})>(?=[^<\n]+</(?P=xml)>)
        |(?<=:)//(?:
            (?P<userinfo>[^\s/?#\[\]:@]{{0,256}}:
                (?=(?P<password>[^\s\[\]@]{{1,256}}))(?P=password)
                (?:@(?=(?P<more>[^\s\[\]@]{{1,256}}))(?P=more)){{0,3}})(?=@)
            |(?P<user_token>[A-Za-z0-9_-]{{32,}})(?=@)
        )
        |(?<=:)thin:(?P<oracle>[^\s/@:]{{1,100}}/[^\s@]+)(?=@)
        |(?<=\\)[ntr](?=(?=(?P<escaped_name>{_NAME}))(?P=escaped_name)(?P<escaped_sep>{_SEP}))
        |(?<=[^A-Za-z0-9])(?:
            (?P<token>)(?:{_SHAPES})
            |(?P<sk>)sk-[A-Za-z0-9_-]{{20,}}
            |[Bb][Ee][Aa][Rr][Ee][Rr]\s+(?P<bearer_token>[A-Za-z0-9._~+/-]{{16,}}=*)
            |[Bb][Aa][Ss][Ii][Cc][\ \t]+(?P<basic_token>[A-Za-z0-9+/]{{8,}}={{0,2}})
                (?![A-Za-z0-9])
            |[Ss][Ss][Hh][Pp][Aa][Ss][Ss][\ \t]+-p[\ \t]*(?P<sshpass>[^\s-]\S*)
            |(?i:mysql|mysqldump|mysqladmin|mariadb|mariadb-dump)\b[^\n]{{0,200}}?
                [\ \t]-p(?P<mysql>[^\s-]\S*)
            |(?i:redis-cli)\b[^\n]{{0,200}}?[\ \t]-a[\ \t]+(?P<redis>[^\s-]\S*)
            |(?i:login)[\ \t]+\S{{1,100}}[\ \t]+(?i:password)[\ \t]+(?P<netrc>\S+)
            |-(?:u(?:\ +|=)|-user(?:[\ \t]+|=))(?P<user_pass>[^\s:"']{{1,100}}:[^\s"']+)
            |{_NAME_START}(?:
                (?=(?P<option>--?[A-Za-z][\w.-]{{0,100}})[\ \t]+(?![-\s]))
                |(?=(?=(?P<name>{_NAME}))(?P=name)(?P<sep>{_SEP}))
            )
        )
    )
    """,
    # ASCII: case folding and \s as the hints below see them.
    re.VERBOSE | re.ASCII,
)
# Kinds of match whose whole text is the secret (an empty group ends them), and whose text
# from their (empty) group on is.
_WHOLE = frozenset({"pem", "putty"})
_FROM_GROUP = frozenset({"token", "sk"})
_SK_RANDOM_PART = re.compile(r"[A-Za-z0-9]{16,}")
_BLANKS = re.compile(r"[ \t]*")


# --------------------------------------------------------------------------- hints

# What every match of `_SECRET_IN_TEXT` that may be redacted contains, in any case, found in a
# record's JSON text by one RE2 search (a DFA: a few microseconds for a 2.5 KB record, where
# the patterns above would take hundreds). No hint matches an unescaped `"`, so each hint found
# lies in one JSON string of the text: only those strings are matched against the patterns. A
# short prefix is a pattern (`dapi` and 32 hex digits), so that words such as `altair` or
# `asia-east1` are no hint.
_HINT_LITERALS = (
    # private keys, URL user info
    "private key", "putty-user-key-file", ":thin:",
    # token formats (`_SHAPES`)
    "absk", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "glpat-", "glptt-", "gldt-",
    "glrt-", "glsoat-", "glcbt-", "glft-", "glimt-", "glagent-", "gloas-", "glffct-",
    "gr1348941", "xox", "xapp-", "hooks.slack.com", "discord", "api_org_", "ya29.", "gocspx-",
    "k_live_", "k_test_", "k_prod_", "whsec_", "pypi-age", "shpat_", "shpca_", "shppa_",
    "shpss_", "_v1_", "lin_api_", "pmak-", "glc_", "glsa_", "hvs.", "hvb.", "atlasv1",
    "age-secret-key-", "sntryu_", "sntrys_", "pnu_", "pplx-", "gsk_", "xkeysib-", "rubygems_",
    "pscale_", "ntn_", "atatt3", "akcp", "dp.pt.", "dt0c01.",
    # credential schemes and command lines
    "bearer", "basic", "sshpass", "mysql", "mariadb", "redis-cli", "--user",
    # names (`_CREDENTIAL_KEY`, `_URL_SIGNATURES`)
    "passw", "pwd", "passphrase", "passcode", "secret", "credential", "creds", "authoriz",
    "cookie", "privkey", "keypass", "sig=", "signature=",
)  # fmt: skip
_HINT_PATTERNS = (
    r"(?:akia|asia|abia|acca|a3t[a-z0-9])[a-z0-9]{16}",
    r"eyj[a-z0-9_-]{10}",
    r"hf_[a-z0-9]{30}",
    r"aiza[a-z0-9_-]{35}",
    r"dapi[0-9a-f]{32}",
    r"npm_[a-z0-9]{36}",
    r"sg\.[a-z0-9_-]{16}",
    r"ltai[a-z0-9]{20}",
    r"r8_[a-z0-9]{37}",
    r"sk-[a-z0-9_-]{20}",
    r":aa[a-z0-9_-]{33}",
    r"[0-9]q~[a-z0-9_~.-]{31}",
    r"-u[ =]",
    rf"(?:{_KEY_OWNERS.replace('_?', '[-_. ]?')})[-_. ]?key",
    rf"(?:{_PASS_OWNERS})[-_. ]?pass",
    r"(?:basic|http|https|proxy|rediscli|redis|smtp|x)[-_. ]?auth",
    r"connection[-_. ]?string",
    r"shared[-_. ]?access[-_. ]?signature",
    # `token` ending a word: not `tokens`, `tokenizer`
    r"token(?:[^a-z]|$)",
    # the user info of a URL, inside one JSON string (escapes read as such)
    r'://(?:[^ \t\n\r\f\v"\\]|\\[^ \t\n\r\f\v])*@',
)
# Case-insensitive: RE2 folds Unicode case (the Kelvin sign is a `k`), Python's patterns only
# ASCII's, so the hints find at least what the patterns do.
_HINT = re2.compile(
    ("(?i)" + "|".join([*(re.escape(h) for h in _HINT_LITERALS), *_HINT_PATTERNS])).encode()
)


def _may_hold_a_secret(text: str) -> bool:
    return _HINT.search(text.encode("utf-8", "surrogatepass")) is not None


def _hinted_strings(text: str) -> frozenset[str] | None:
    """The strings of a JSON text that hold a hint: every string in which a pattern may find
    a secret (keys and values alike). None if the text is not JSON where a hint was found."""
    data = text.encode("utf-8", "surrogatepass")
    first = _HINT.search(data)  # most records hold no hint: the cheapest way to see it
    if first is None:
        return frozenset()
    spans: list[tuple[int, int]] = []
    for match in _HINT.finditer(data, first.start()):
        position = match.start()
        if spans and position < spans[-1][1]:
            continue  # in the string of the hint before
        start, end = _quote_before(data, position), _quote_after(data, position)
        if start < 0 or end < 0:
            return None
        spans.append((start, end + 1))
    try:
        found = [
            json.loads(data[start:end].decode("utf-8", "surrogatepass")) for start, end in spans
        ]
    except ValueError:
        return None
    return frozenset(found) if all(isinstance(s, str) for s in found) else None


def _quote_before(data: bytes, position: int) -> int:
    """The `"` that opens the JSON string holding `position`: the nearest one before it that
    an even number of backslashes precedes."""
    while (position := data.rfind(b'"', 0, position)) >= 0:
        if _escaped(data, position):
            continue
        return position
    return -1


def _quote_after(data: bytes, position: int) -> int:
    while (position := data.find(b'"', position)) >= 0:
        if not _escaped(data, position):
            return position
        position += 1
    return -1


def _escaped(data: bytes, position: int) -> bool:
    backslashes = 0
    while position > backslashes and data[position - 1 - backslashes] == 0x5C:
        backslashes += 1
    return backslashes % 2 == 1


# --------------------------------------------------------------------------- replacing


def _clean(text: str) -> str:
    """`text` with every credential in it replaced (no hints looked at)."""
    padded = " " + text  # every match starts with the character before the secret
    pieces: list[str] = []
    done = 0  # padded[:done] is in `pieces`
    for match in _SECRET_IN_TEXT.finditer(padded):
        if match.end() <= done:
            continue  # inside a secret already replaced
        span = _secret_span(match, padded)
        if span is None:
            continue
        start, end, replacement = span
        if end <= done:
            continue
        start = max(start, done)
        pieces += (padded[done:start], replacement)
        done = end
    if not pieces:
        return text
    pieces.append(padded[done:])
    return "".join(pieces)[1:]


def _secret_span(match: re.Match[str], text: str) -> tuple[int, int, str] | None:
    """Where the secret of a match is, and what replaces it; None when it is not one."""
    kind = match.lastgroup
    if kind in ("sep", "escaped_sep"):
        name = "escaped_name" if kind == "escaped_sep" else "name"
        return _assigned(text, match.start(name), match.group(name), match.end(kind), match[kind])
    if kind == "option":
        start = _BLANKS.match(text, match.end("option")).end()  # type: ignore[union-attr]
        return _assigned(text, match.start("option"), match.group("option"), start, " ")
    if kind == "xml":
        name = match.group("xml")
        start = match.end()
        kind_ = _credential_kind(name)
        end = text.find("<", start)
        if not kind_ or end < 0 or _kept(text[start:end], kind_):
            return None
        return start, end, REDACTED
    assert kind is not None
    if kind in _WHOLE:
        start, end = match.span()
    elif kind in _FROM_GROUP:
        start, end = match.start(kind), match.end()
    else:
        start, end = match.span(kind)
    secret = text[start:end]
    if kind == "userinfo":
        password = secret.partition(":")[2]
        if "/" in password and password.partition("/")[0].isdigit():
            return None  # `https://host:8080/path/@scope`: a port and a path
    elif kind == "user_token":
        # A token used as the user name of a git remote (`https://<token>@github.com/...`);
        # user names that long without a digit are names, such as Azure container names.
        if not any(c.isdigit() for c in secret):
            return None
    elif kind == "sk" and not _looks_random(secret):
        # `sk-` starts kebab-case names too (`sk-learn-random-forest-v2`).
        return None
    elif kind == "basic_token" and not _is_basic_credential(secret):
        return None
    elif kind == "user_pass" and _kept(secret.partition(":")[2], 1):
        return None  # `-u 1000:1000`, a user and group
    elif kind in ("sshpass", "mysql", "redis", "netrc") and _kept(secret, 2):
        return None
    return start, end, REDACTED


def _assigned(
    text: str, name_start: int, name: str, start: int, sep: str
) -> tuple[int, int, str] | None:
    """The value assigned to `name` (at `name_start`) from `start` on, when `name` names a
    credential."""
    bare_name = name.lstrip("-").lower()
    kind = _credential_kind(name)
    if not kind and not (sep == "=" and bare_name in _URL_SIGNATURES):
        return None
    operator = sep.strip(" \t\"'\\")  # `=`, `:`, `:=`, `=>`, or none after an option
    if _REFERENCE.match(text, start):
        return None  # `${{ secrets.X }}`, `{{ vault_x }}`, `$(cat file)`, `[redacted]`
    if text.startswith(('"', "'", '\\"'), start):
        quote = '\\"' if text[start] == "\\" else text[start]
        start += len(quote)
        end = _QUOTED[quote].match(text, start).end()  # type: ignore[union-attr]
    elif bare_name in _AUTHORIZATION_HEADERS or bare_name.endswith("cookie"):
        end = _LINE.match(text, start).end()  # type: ignore[union-attr]
        scheme = _AUTH_SCHEME.match(text, start, end)
        if scheme and bare_name in _AUTHORIZATION_HEADERS:
            start = scheme.end()  # `Basic [redacted]`: the scheme is not the secret
    elif operator == "" or (operator != ":" and not sep.endswith((" ", "\t"))):
        # `--NAME value`, `NAME=value`: one word of a command line or an .env file, a
        # parameter of a query string (after `?` or `&`) or a connection string (after `;`)
        before = text[name_start - 1 : name_start]
        words = _QUERY_VALUE if before in ("?", "&") else _WORD
        end = words.match(text, start).end()  # type: ignore[union-attr]
    else:
        # `NAME: value` (YAML, a header), `NAME = value` (INI, TOML): the rest of the line, up
        # to a comment, a quote or the end of a flow mapping
        end = _LINE_VALUE.match(text, start).end()  # type: ignore[union-attr]
        comment = text.find(" #", start, end)
        end = end if comment < 0 else comment
    value = text[start:end].rstrip()
    if not value or _kept(value, kind or 1):
        return None
    return start, start + len(value), REDACTED


# Where a value ends, found from where it starts (`.match(text, start).end()`).
_QUOTED = {
    '"': re.compile(r'(?:[^"\\\n\r]|\\.)*'),
    "'": re.compile(r"(?:[^'\\\n\r]|\\.)*"),
    '\\"': re.compile(r'(?:[^"\\\n\r]|\\[^"\n\r])*'),  # JSON inside a JSON string
}
_WORD = re.compile(r"[^\s;,\"'<>)]*")
_QUERY_VALUE = re.compile(r"[^\s&#;,\"'<>]*")
_LINE = re.compile(r"[^\n\r]*")
_LINE_VALUE = re.compile(r"[^\n\r\"'}\]]*")
# A value that names where the secret comes from, or one already redacted.
_REFERENCE = re.compile(
    r"""["']?(?:\$?\{\{[^{}\n]*\}\}|\$\([^()\n]*\)|%\(\w+\)s|\$\{[^{}\n]*\}|\[redacted\])"""
    r"""["']?(?![^\s,;&)\]}])"""
)
_AUTH_SCHEME = re.compile(r"[A-Za-z][\w-]*[ \t]+(?=\S)")


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


def _is_basic_credential(token: str) -> bool:
    """`Basic` followed by base64 of `user:password` (RFC 7617), not the word in prose."""
    try:
        decoded = base64.b64decode(token + "=" * (-len(token) % 4), validate=True)
        text = decoded.decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return False
    return ":" in text and text.isprintable()


def redact_text(text: str) -> str:
    """`text` with every credential-looking substring replaced by `[redacted]`."""
    return _clean(text) if _may_hold_a_secret(text) else text


# --------------------------------------------------------------------------- records


#: `json.dumps(record, ensure_ascii=False, default=str)`, made once rather than per record.
_TEXT_ENCODER = json.JSONEncoder(ensure_ascii=False, default=str)


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
    lineage = record.get("lineage")
    if isinstance(lineage, dict):
        # A model version's record: the registry's tags and the sweep's parameters.
        if isinstance(lineage.get("model"), dict) and isinstance(
            lineage["model"].get("tags"), dict
        ):
            yield "/lineage/model/tags", lineage["model"]["tags"]
        for v, version in _entries(lineage.get("versions")):
            if isinstance(version.get("tags"), dict):
                yield f"/lineage/versions/{v}/tags", version["tags"]
        if isinstance(lineage.get("version"), dict) and isinstance(
            lineage["version"].get("tags"), dict
        ):
            yield "/lineage/version/tags", lineage["version"]["tags"]
        sweep = lineage.get("sweep")
        if isinstance(sweep, dict) and isinstance(sweep.get("search_space"), dict):
            yield "/lineage/sweep/search_space", sweep["search_space"]
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


def _rename_keys(node: dict[Any, Any], hinted: frozenset[str]) -> dict[Any, str]:
    """Rename, in place and keeping their order, the keys of a mapping that hold a secret (a
    token pasted as a param's name) to their redacted text, made unique by a number."""
    renamed = {}
    for key in node:
        if key in hinted:
            cleaned = _clean(key)
            if cleaned != key:
                renamed[key] = cleaned
    if renamed:
        taken = {key for key in node if key not in renamed}
        for key, cleaned in renamed.items():
            unique, number = cleaned, 1
            while unique in taken:
                number += 1
                unique = f"{cleaned} ({number})"
            taken.add(unique)
            renamed[key] = unique
        items = [(renamed.get(key, key), value) for key, value in node.items()]
        node.clear()
        node.update(items)
    return renamed


def _redact_values(node: Any, path: list[Any], hinted: frozenset[str], found: list[str]) -> None:
    """Replace secrets inside the strings of a container, its keys included, in place: the
    strings in `hinted` (`_hinted_strings`). `path` leads to `node`."""
    if isinstance(node, dict):
        if not hinted.isdisjoint(node):
            found += (_pointer(path, key) for key in _rename_keys(node, hinted).values())
        items: Any = node.items()
    else:
        items = enumerate(node)
    for key, value in items:
        if isinstance(value, str):
            if value in hinted:
                cleaned = _clean(value)
                if cleaned != value:
                    node[key] = cleaned
                    found.append(_pointer(path, key))
        elif isinstance(value, dict | list):
            path.append(key)
            _redact_values(value, path, hinted, found)
            path.pop()


def _pointer(path: list[Any], key: Any) -> str:
    return "".join(f"/{_escape(str(part))}" for part in (*path, key))


def _strings(node: Any) -> Iterator[str]:
    """Every string of a record, keys included."""
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(key, str):
                yield key
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)
    elif isinstance(node, str):
        yield node


def redact(record: dict[str, Any], screen: str | None = None) -> list[str]:
    """Replace credential-looking values (and keys) in an evidence record, in place, with
    `[redacted]`.

    Returns the sorted JSON Pointers (RFC 6901) of the replaced values and renamed keys, each
    pointing at where the record holds it now. Running it again on its own output changes
    nothing and returns an empty list. `screen`, when given, is a JSON encoding of the record
    (its canonical JSON, say) to look for hints of secrets in, instead of encoding it here:
    every string of the record is in it, escaped the same way.
    """
    found: list[str] = []
    text = _TEXT_ENCODER.encode(record) if screen is None else screen
    hinted = _hinted_strings(text)
    if hinted is None:  # `screen` was not JSON: look at every string
        hinted = frozenset(_strings(record))
    if hinted:
        # `collection.redacted` holds pointers, which name keys only.
        collection = record.get("collection")
        if isinstance(collection, dict) and "notes" in collection:
            notes = {"notes": collection["notes"]}
            _redact_values(notes, ["collection"], hinted, found)
            collection["notes"] = notes["notes"]
        sections = {k: v for k, v in record.items() if k != "collection"}
        _redact_values(sections, [], hinted, found)
        record.update(sections)
    # After the keys were renamed, so that no pointer holds a secret.
    for pointer, mapping in _keyed_maps(record):
        for key, value in mapping.items():
            kind = _credential_kind(str(key)) if isinstance(value, str) else 0
            if kind and not _kept(value, kind):
                mapping[key] = REDACTED
                found.append(f"{pointer}/{_escape(str(key))}")
    return sorted(set(found))
