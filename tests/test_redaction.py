"""Credentials logged to MLflow: redacted from every record and output, and reported by name."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import jsonschema_rs
import mlflow
import pytest

from audit.api import make_selection
from audit.evaluation import SECRETS_RULE_ID, evaluate, evaluate_record
from audit.evidence import (
    DatasetFacts,
    RunFacts,
    build_record,
    canonical_json,
    record_and_digest,
    sha256_hex,
)
from audit.policy import load_policy
from audit.redaction import REDACTED, redact, redact_text
from audit.resources import schema_path
from tests import stores
from tests.fixtures import secrets_corpus as corpus
from tests.records import complete_record

# Shaped like the real thing, made up for these tests.
OPENAI_KEY = "sk-proj-" + "Xq7LmN2pR9tVb4WcZ8" * 3
ANTHROPIC_KEY = "sk-ant-api03-" + "Hd82kLq0_Zp3Vn7xRt5y-Mw9" * 4
AWS_KEY_ID = "AKIAQ3EGUXNEXAMPLE7Z"
AWS_SESSION_KEY_ID = "ASIAY34FZKBOKMUTVV7A"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkFkYSJ9"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
PEM = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n"
    "QyNTUxOQAAACBVbWJXN2lRxdKs\n-----END OPENSSH PRIVATE KEY-----"
)
GITHUB_TOKEN = "ghp_" + "R7uT2pQ9xL4mZ8vB1nC6kW3yH5jD0sFgA2eK"
GITHUB_PAT = "github_pat_11ABCDEFG0" + "aZ9yX8wV7uT6sR5qP4oN3mL2kJ1iH0gF" * 2
SLACK_TOKEN = "xoxb-1234567890123-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"
HF_TOKEN = "hf_" + "QwErTyUiOpAsDfGhJkLzXcVbNm1234567"
PASSWORD = "c0rrect-h0rse-battery"


def _record(**sections: Any) -> dict[str, Any]:
    record = complete_record()
    record.update(sections)
    return record


def _params(**params: str) -> dict[str, Any]:
    return _record(hyperparameters={"alpha": "0.1", **params})


# --------------------------------------------------------------------------- by key


@pytest.mark.parametrize(
    "key",
    [
        "api_key", "apikey", "api-key", "apiKey", "APIKey", "X-Api-Key", "OPENAI_API_KEY",
        "password", "passwd", "pwd", "db.password", "DB_PASSWORD", "passphrase",
        "secret", "client_secret", "clientSecret", "secret_key", "SECRET_KEY",
        "token", "auth_token", "hf_token", "HF_TOKEN", "GITHUB_TOKEN", "access_token",
        "refreshToken", "bearer token", "use_auth_token",
        "credential", "credentials", "private_key", "privateKey",
        "aws_access_key_id", "aws_secret_access_key", "connection_string",
    ],
)  # fmt: skip
def test_a_param_whose_key_names_a_credential_is_redacted(key: str) -> None:
    record = _params(**{key: PASSWORD})
    assert redact(record) == [f"/hyperparameters/{key}"]
    assert record["hyperparameters"] == {"alpha": "0.1", key: REDACTED}


@pytest.mark.parametrize(
    ("key", "value"),
    [
        # tokenizers and generation settings
        ("max_tokens", "512"), ("num_tokens", "1024"), ("max_new_tokens", "256"),
        ("tokenizer", "bert-base-uncased"), ("tokenizer_name", "gpt2"),
        ("pad_token", "<pad>"), ("eos_token", "</s>"), ("bos_token", "<s>"),
        ("unk_token", "<unk>"), ("sep_token", "[SEP]"), ("cls_token", "[CLS]"),
        ("mask_token", "[MASK]"), ("pad_token_id", "0"), ("token_type_ids", "segment"),
        # settings about a secret, not the secret: numbers, flags, names, places
        ("token_limit", "4096"), ("token_limit", "unbounded"), ("secret_sauce_enabled", "True"),
        ("secret_sauce_enabled", "yes-please"), ("password_min_length", "12"),
        ("token_url", "https://auth.example.com/oauth/token"), ("secret_name", "prod/db"),
        ("credentials_path", "/etc/gcp/sa.json"), ("api_key_env", "OPENAI_API_KEY"),
        # words that contain a credential word
        ("keyboard_layout", "qwerty"), ("passwordless", "enabled-for-all"),
        ("monkey", "business"), ("secretary", "Ada"), ("key", "churn"),
    ],
)  # fmt: skip
def test_ml_hyperparameters_are_not_taken_for_credentials(key: str, value: str) -> None:
    record = _params(**{key: value})
    assert redact(record) == []
    assert record["hyperparameters"][key] == value


@pytest.mark.parametrize(
    "value", ["", "None", "null", "True", "False", "${HF_TOKEN}", "$API_KEY", "****", "[redacted]"]
)
def test_empty_or_placeholder_values_under_credential_keys_are_kept(value: str) -> None:
    record = _params(api_key=value, PWD="/home/ada/project")
    assert redact(record) == []
    assert record["hyperparameters"]["api_key"] == value


def test_tags_and_registered_version_tags_are_redacted_by_key() -> None:
    record = _record(tags={"HF_TOKEN": HF_TOKEN, "team": "risk", "wandb_api_key": "0123abcd"})
    version = record["models"][0]["registered_versions"][0]
    version["tags"] = {"deploy_token": "t-0123456789", "owner": "ada"}
    assert redact(record) == [
        "/models/0/registered_versions/0/tags/deploy_token",
        "/tags/HF_TOKEN",
        "/tags/wandb_api_key",
    ]
    assert record["tags"] == {"HF_TOKEN": REDACTED, "team": "risk", "wandb_api_key": REDACTED}
    assert version["tags"] == {"deploy_token": REDACTED, "owner": "ada"}


# --------------------------------------------------------------------------- by value


@pytest.mark.parametrize(
    "secret",
    [
        OPENAI_KEY, ANTHROPIC_KEY, "sk-" + "0f3a9c2b7d" * 4, AWS_KEY_ID, AWS_SESSION_KEY_ID, JWT,
        PEM, GITHUB_TOKEN, "gho_" + GITHUB_TOKEN[4:], "ghs_" + GITHUB_TOKEN[4:], GITHUB_PAT,
        SLACK_TOKEN, HF_TOKEN, "glpat-xY7zQ2wE9rT4uI1oP6aS",
        "AIzaSyD3x9" + "kLmN0pQrStUvWxYz12345678aBcDe", "rk_live_" + "51HxYzAbCdEfGh0123456789",
    ],
)  # fmt: skip
def test_credential_formats_are_redacted_inside_any_string(secret: str) -> None:
    record = _params(note=f"used {secret} to fetch the data")
    record["run"]["name"] = f"run-{secret}"
    assert redact(record) == ["/hyperparameters/note", "/run/name"]
    assert record["hyperparameters"]["note"] == f"used {REDACTED} to fetch the data"
    assert record["run"]["name"] == f"run-{REDACTED}"


@pytest.mark.parametrize(
    "text",
    [
        "sk-learn-random-forest-v2-baseline",  # a kebab-case name, not a key
        "task-0123456789abcdefghij0123",  # sk- inside a word
        "hf_internal_testing_tiny_random_bert",
        "AKIA is a prefix; AKIASHORT too",
        "s3://acme-data/churn/train.parquet?versionId=3HL4kqtJlcpXroDTDmJ",
        "https://github.com/acme/churn.git",
        "git@github.com:acme/churn.git",
        "wasbs://training-data-container-for-churn-model@acme.blob.core.windows.net/train",
        "http://localhost:5000/#/experiments/1",
        "Bearer tokens are rotated daily",
        "pad_token=<pad> max_new_tokens=5 token=${HF_TOKEN} PWD=/home/ada",
        "3f1c2a9b7d4e5f60718293a4b5c6d7e8f9012345",
    ],
)
def test_harmless_strings_are_left_alone(text: str) -> None:
    assert redact_text(text) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://ada:s3cr3t@pypi.acme.internal/simple", "https://[redacted]@pypi.acme.internal/simple"),
        ("postgresql://mlflow:p@ss:w0rd@db:5432/mlflow", "postgresql://[redacted]@db:5432/mlflow"),
        (f"https://x-access-token:{GITHUB_TOKEN}@github.com/acme/churn.git",
         "https://[redacted]@github.com/acme/churn.git"),
        # a classic 40-hex GitHub token as the user name
        ("https://0123456789abcdef0123456789abcdef01234567@github.com/acme/churn.git",
         "https://[redacted]@github.com/acme/churn.git"),
        ("https://ada@github.com/acme/churn.git", "https://ada@github.com/acme/churn.git"),
        ("https://ada:@github.com/acme/churn.git", "https://ada:@github.com/acme/churn.git"),
    ],
)  # fmt: skip
def test_url_userinfo_is_replaced_and_the_url_kept(text: str, expected: str) -> None:
    assert redact_text(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("s3://b/k.parquet?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=9f0e1d2c&X-Amz-Expires=60",
         "s3://b/k.parquet?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=[redacted]&X-Amz-Expires=60"),
        ("https://acme.blob.core.windows.net/c/train.csv?sv=2022-11-02&sig=AbC%2Bd3F",
         "https://acme.blob.core.windows.net/c/train.csv?sv=2022-11-02&sig=[redacted]"),
        ("DefaultEndpointsProtocol=https;AccountName=acme;AccountKey=Zm9v+YmFy==;EndpointSuffix=x",
         "DefaultEndpointsProtocol=https;AccountName=acme;AccountKey=[redacted];EndpointSuffix=x"),
        ('{"api_key": "abc123xyz", "lr": 0.1}', '{"api_key": "[redacted]", "lr": 0.1}'),
        ("python train.py --password=hunter2 --epochs 3",
         "python train.py --password=[redacted] --epochs 3"),
        ("Authorization: Bearer a1B2c3D4e5F6g7H8i9", "Authorization: Bearer [redacted]"),
        (f"head\n{PEM}\ntail", f"head\n{REDACTED}\ntail"),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA…[truncated 3000 characters]", REDACTED),
    ],
)  # fmt: skip
def test_only_the_secret_inside_a_longer_string_is_replaced(text: str, expected: str) -> None:
    assert redact_text(text) == expected


def test_every_string_of_the_record_is_searched() -> None:
    record = complete_record()
    record["source"]["git_repo_url"] = f"https://{GITHUB_TOKEN}@github.com/acme/churn.git"
    record["environment"]["requirements"].append(
        {
            "name": "acme-features",
            "specifier": None,
            "pinned": True,
            "line": f"acme-features @ https://deploy:{PASSWORD}@pypi.acme.internal/f-1.0.whl",
        }
    )
    training = record["data"]["training"][0]
    presigned = f"s3://acme/train.parquet?X-Amz-Credential={AWS_KEY_ID}%2F20260101"
    training["source_uri"] = presigned
    training["source"] = {"uri": presigned, "options": {"storage": {"password": PASSWORD}}}
    version = record["models"][0]["registered_versions"][0]
    version["description"] = f"Pull with HF token {HF_TOKEN} first."
    record["collection"]["notes"] = [f"cannot read https://ada:{PASSWORD}@files/x"]

    assert redact(record) == [
        "/collection/notes/0",
        "/data/training/0/source/options/storage/password",
        "/data/training/0/source/uri",
        "/data/training/0/source_uri",
        "/environment/requirements/1/line",
        "/models/0/registered_versions/0/description",
        "/source/git_repo_url",
    ]
    assert record["source"]["git_repo_url"] == "https://[redacted]@github.com/acme/churn.git"
    assert record["environment"]["requirements"][1]["line"] == (
        "acme-features @ https://[redacted]@pypi.acme.internal/f-1.0.whl"
    )
    # `X-Amz-Credential` names a credential: its whole value goes, the key id and its scope
    assert training["source_uri"] == "s3://acme/train.parquet?X-Amz-Credential=[redacted]"
    assert version["description"] == "Pull with HF token [redacted] first."
    text = canonical_json(record).decode()
    for secret in (GITHUB_TOKEN, PASSWORD, AWS_KEY_ID, HF_TOKEN):
        assert secret not in text


def test_secrets_in_strings_json_would_escape_are_found() -> None:
    # The record is first checked as JSON text, where quotes, backslashes and control
    # characters are escaped; the check must still see these.
    record = _params(
        config='{\n\t"api_key":\t"abc123xyz"\n}',
        remote='https://ada\\corp:p"w\x01d@git.acme.internal/churn',
        command='echo "Bearer a1B2c3D4e5F6g7H8i9"\n',
    )
    assert redact(record) == [
        "/hyperparameters/command",
        "/hyperparameters/config",
        "/hyperparameters/remote",
    ]
    assert record["hyperparameters"]["config"] == '{\n\t"api_key":\t"[redacted]"\n}'
    assert record["hyperparameters"]["remote"] == "https://[redacted]@git.acme.internal/churn"


def test_pointers_escape_slash_and_tilde_in_keys() -> None:
    record = _params(**{"auth/token": PASSWORD, "~user_password": PASSWORD})
    record["tags"] = {"notes/deploy": f"key {OPENAI_KEY}"}
    assert redact(record) == [
        "/hyperparameters/auth~1token",
        "/hyperparameters/~0user_password",
        "/tags/notes~1deploy",
    ]


def test_redaction_is_idempotent_and_leaves_clean_records_alone() -> None:
    clean = complete_record()
    assert redact(clean) == [] and clean == complete_record()

    record = _params(api_key=OPENAI_KEY, note=f"token {JWT}", url="https://a:b@h/p")
    record["tags"] = {"HF_TOKEN": HF_TOKEN}
    assert len(redact(record)) == 4
    once = copy.deepcopy(record)
    assert redact(record) == []
    assert record == once


def test_a_credential_pasted_as_a_name_is_renamed_deterministically() -> None:
    """A token as a param or tag *name*: the name is replaced by its redacted text, numbered
    when two redacted names would collide, in the order of the mapping; the pointer names the
    new key, never the secret, and running again changes nothing."""
    record = _params(**{GITHUB_TOKEN: "1", HF_TOKEN: "2", f"token {SLACK_TOKEN}": "3"})
    record["tags"] = {"[redacted]": "a tag that was named so", f"note/{OPENAI_KEY}": "x"}
    twin = copy.deepcopy(record)
    pointers = redact(record)
    assert pointers == [
        "/hyperparameters/[redacted]",
        "/hyperparameters/[redacted] (2)",
        "/hyperparameters/token [redacted]",
        "/tags/note~1[redacted]",
    ]
    assert list(record["hyperparameters"]) == [
        "alpha", "[redacted]", "[redacted] (2)", "token [redacted]",
    ]  # fmt: skip
    assert record["hyperparameters"]["[redacted]"] == "1"
    assert record["tags"] == {"[redacted]": "a tag that was named so", "note/[redacted]": "x"}
    assert redact(twin) == pointers and twin == record  # the same data, the same record
    settled = copy.deepcopy(record)
    assert redact(record) == [] and record == settled
    text = canonical_json(record).decode()
    for secret in (GITHUB_TOKEN, HF_TOKEN, SLACK_TOKEN, OPENAI_KEY):
        assert secret not in text


def test_a_renamed_param_is_reported_by_its_new_name() -> None:
    record = _params(**{GITHUB_TOKEN: "1"})
    record["collection"]["redacted"] = redact(record)
    (finding,) = [
        f for f in evaluate_record(record, load_policy("baseline")) if f.rule_id == SECRETS_RULE_ID
    ]
    assert finding.message.startswith('/hyperparameters/[redacted] (param "[redacted]")')
    assert GITHUB_TOKEN not in finding.message


def test_the_one_search_finds_every_text_that_holds_a_hint() -> None:
    """Records are first searched once for any hint of a credential (RE2); only the strings
    holding a hint found are looked at closely (`_Hints.in_`). Every literal hint, in any case,
    and a URL's user info, anywhere in a text, are found by that search and select the string,
    lone surrogates and all; texts without one are not. (The corpus test checks the same for
    every credential sample: tests/test_secrets_corpus.py.)"""
    from audit.redaction import _HINT_LITERALS, _hinted_strings, _may_hold_a_secret

    def casings(hint: str) -> list[str]:
        return [hint, hint.lower(), hint.upper(), hint.swapcase(), hint[:1].upper() + hint[1:]]

    texts = [
        f"{before}{cased}{after}"
        for hint in _HINT_LITERALS
        for cased in casings(hint)
        for before, after in (("", ""), ("x", "y"), ('{"a":"', '\ud800"}'), ("é\u212a ", "\n"))
    ]
    texts += [
        "git+https://ada:pw@git.acme.internal/churn",
        "HTTPS://X@HOST",
        "s3://@bucket",
        "\ud800://ab@",
        "s3://AKIA:a/b+c@bucket",
    ]
    assert [text for text in texts if not _may_hold_a_secret(text)] == []
    # in a JSON text, with its escapes, the hints select the string they are in, key or value
    for text in texts:
        encodings = [
            json.dumps({"a": ["x", text, "y"]}, ensure_ascii=False),
            json.dumps({"a": {text: "x"}, "b": "\\"}, ensure_ascii=False),
        ]
        if "\ud800" not in text:  # RFC 8785 refuses lone surrogates
            encodings.append(canonical_json({"z": text, '"': ""}).decode())
        for encoded in encodings:
            assert _hinted_strings(encoded) == {text}, (text, encoded)
    harmless = [
        "",
        "learning_rate 0.001 max_depth 8 ada@acme.com",
        "s3://acme-data/churn/train.parquet?versionId=3HL4kqtJlcpX",
        "\ud800 tok en",
        "://a\x0bb@",  # white space ends a URL's user info
        "max_tokens=512 num_tokens=3 tokenizer=gpt2 altair==5.3.0 asia-east1",
    ]
    assert [text for text in harmless if _may_hold_a_secret(text)] == []
    # (in JSON the vertical tab is `\u000b`, an escape the hint lets through: more, not less)
    assert _hinted_strings(json.dumps([t for t in harmless if "\x0b" not in t])) == set()


def test_hostile_strings_take_linear_time() -> None:
    # Untrusted values are up to 16 KiB; a backtracking pattern would take minutes on these.
    hostile = [
        "sk-" + "a" * 16_000,
        "https://" + "a:" * 8_000,
        "https://" + "a" * 16_000,
        "password=" * 1_800,
        "-----BEGIN PRIVATE KEY-----" * 600,
        "eyJ" + "a" * 8_000 + ".eyJ" + "b" * 8_000,
        "Bearer " * 2_300,
        # names, separators and values of every spelling, run together
        "password: " * 1_600, "--password " * 1_450, "a=" * 8_000, "a: " * 5_000,
        "token=\"" * 2_200, "password='" * 1_600, "\\npassword=" * 1_400,
        ("a" * 101 + "=") * 150, "<password>" * 1_600, "<a>" * 5_000,
        "Authorization: " * 1_000, "mysql " * 2_600, "mysql" + " -u" * 5_000,
        "login a password " * 900, "sshpass -p" * 1_500, "redis-cli -a " * 1_200, "-u a:" * 3_000,
        "PuTTY-User-Key-File-2:" * 700, "://" * 5_000, "://a:" * 3_000,
        "https://a:b" + "@" * 16_000, "https://a:" + "/" * 16_000, "a@" * 8_000,
        "jdbc:oracle:thin:" * 900,
        "x:thin:" + "a/" * 8_000, "password=${{" * 1_300, "/:_authToken=" * 1_200, "{{" * 8_000,
        "Basic YWRhOnB3" * 1_100, "-" * 16_000, " " * 16_000,
    ]  # fmt: skip
    started = time.perf_counter()
    for text in hostile:
        redact_text(text)
    assert time.perf_counter() - started < 2.0


# --------------------------------------------------------------------------- build_record


def _facts(**overrides: Any) -> RunFacts:
    fields: dict[str, Any] = {
        "run_id": "a" * 32,
        "run_name": "leaky",
        "experiment_id": "1",
        "experiment_name": "churn",
        "status": "FINISHED",
        "start_time": 1_767_225_600_000,
        "end_time": 1_767_225_660_000,
        "user": "ada",
        "lifecycle_stage": "active",
        "params": {"alpha": "0.1", "api_key": OPENAI_KEY},
        "metrics": [],
        "tags": {
            "HF_TOKEN": HF_TOKEN,
            "mlflow.source.git.repoURL": f"https://oauth2:{PASSWORD}@gitlab.acme.internal/ml/churn",
        },
        "datasets": [
            DatasetFacts(
                name="train",
                digest="1a2b3c4d",
                source_type="http",
                source=json.dumps(
                    {"url": f"https://data.acme.internal/train.csv?token={PASSWORD}"}
                ),
                schema=None,
                profile=None,
                context="training",
            )
        ],
    }
    fields.update(overrides)
    return RunFacts(**fields)


def test_build_record_redacts_and_records_where() -> None:
    record = build_record(_facts())
    assert record["collection"]["redacted"] == [
        "/data/training/0/source/url",
        "/data/training/0/source_uri",
        "/hyperparameters/api_key",
        "/source/git_repo_url",
        "/tags/HF_TOKEN",
    ]
    assert record["source"]["git_repo_url"] == "https://[redacted]@gitlab.acme.internal/ml/churn"
    text = canonical_json(record).decode()
    assert OPENAI_KEY not in text and HF_TOKEN not in text and PASSWORD not in text
    validator = jsonschema_rs.validator_for(
        json.loads(schema_path("evidence-record.schema.json").read_text())
    )
    assert [e.message for e in validator.iter_errors(record)] == []
    # the digest covers the redacted record, the same for the same MLflow data
    assert canonical_json(build_record(_facts())) == canonical_json(record)
    clean = build_record(_facts(params={"alpha": "0.1"}, tags={}, datasets=[]))
    assert clean["collection"]["redacted"] == []
    # The digest sources hand on with the record is that of the record as redacted.
    for facts in (_facts(), _facts(params={"alpha": "0.1"}, tags={}, datasets=[])):
        built, digest = record_and_digest(facts)
        assert digest == sha256_hex(built) == sha256_hex(build_record(facts))


def test_a_record_with_credentials_as_names_digests_the_same_every_time() -> None:
    """`verify --against-store` collects the run again and compares the digest of its record:
    the redacted record, names and all, is the same for the same MLflow data."""
    facts = _facts(
        params={GITHUB_TOKEN: "1", "env": f"MLFLOW_TRACKING_PASSWORD={PASSWORD}", "alpha": "0.1"},
        tags={HF_TOKEN: "x", "PGPASSWORD": PASSWORD},
    )
    record, digest = record_and_digest(facts)
    assert (record, digest) == record_and_digest(facts)
    assert digest == sha256_hex(record)
    assert record["collection"]["redacted"] == [
        "/data/training/0/source/url",
        "/data/training/0/source_uri",
        "/hyperparameters/[redacted]",
        "/hyperparameters/env",
        "/tags/PGPASSWORD",
        "/tags/[redacted]",
    ]
    text = canonical_json(record).decode()
    assert GITHUB_TOKEN not in text and HF_TOKEN not in text and PASSWORD not in text


# --------------------------------------------------------------------------- findings


@pytest.mark.parametrize("policy_name", ["baseline", "eu-ai-act-high-risk"])
def test_one_warning_per_redacted_value_whatever_the_policy(policy_name: str) -> None:
    record = _params(api_key=OPENAI_KEY)
    record["tags"] = {"HF_TOKEN": HF_TOKEN}
    record["collection"]["redacted"] = redact(record)
    policy = load_policy(policy_name)
    secrets = [f for f in evaluate_record(record, policy) if f.rule_id == SECRETS_RULE_ID]
    assert [(f.pointer, f.severity, f.category) for f in secrets] == [
        ("/hyperparameters/api_key", "warning", "run"),
        ("/tags/HF_TOKEN", "warning", "run"),
    ]
    param, tag = secrets
    assert param.title == "No credentials are logged to MLflow"
    assert param.gap_text == "A credential is logged to MLflow"
    assert param.message.startswith('/hyperparameters/api_key (param "api_key"):')
    assert tag.message.startswith('/tags/HF_TOKEN (tag "HF_TOKEN"):')
    assert param.provisions == ("eu-ai-act/art-15/5",) and param.citations == ["Art. 15(5)"]
    for finding in secrets:
        assert OPENAI_KEY not in finding.message + finding.remediation
        assert HF_TOKEN not in finding.message + finding.remediation
    # one fix for the rule, since outputs show it once for all of a run's findings
    assert param.remediation == tag.remediation
    for step in ("Rotate", "delete_tag(run_id, key)", "cannot be deleted", "delete_run(run_id)",
                 "environment variables"):  # fmt: skip
        assert step in param.remediation


def test_secret_warnings_sort_with_the_other_findings_and_count_in_the_score() -> None:
    policy = load_policy("baseline")
    record = _record(hyperparameters={"api_key": OPENAI_KEY}, metrics=[])
    record["collection"]["redacted"] = redact(record)
    findings = evaluate_record(record, policy)
    assert [f.severity for f in findings] == sorted(
        (f.severity for f in findings), key=["error", "warning", "info"].index
    )
    assert SECRETS_RULE_ID in {f.rule_id for f in findings}

    result = evaluate([record, complete_record()], policy, selection=make_selection().to_dict())
    evaluations, passes = result.rule_evaluations()
    # counted like a failing rule the policy does not name: an evaluation only where it fails
    assert evaluations == 2 * len(policy.rules) + 1
    assert passes == evaluations - len(result.runs[0].failed_rule_ids)
    schema = json.loads(schema_path("audit-result.schema.json").read_text())
    jsonschema_rs.validator_for(schema).validate(json.loads(json.dumps(result.to_dict())))


def test_plain_records_without_the_redacted_list_are_still_evaluated() -> None:
    record = complete_record()
    assert "redacted" not in record["collection"]
    assert evaluate_record(record, load_policy("baseline")) == ()


@pytest.mark.parametrize(
    ("pointer", "place"),
    [
        ("/source/git_repo_url", "git remote URL, tag mlflow.source.git.repoURL"),
        ("/run/name", "run name, tag mlflow.runName"),
        ("/models/0/registered_versions/0/tags/deploy~1token",
         'tag "deploy/token" of registered model "m" version 1'),
        ("/models/0/registered_versions/0/description", 'description of registered model "m"'),
        ("/environment/requirements/0/line", "in numpy==2.1.1"),
        ("/data/training/0/source_uri", "in train"),
        ("/models/0/uri", "in model"),
        ("/environment/requirements_from", "in the run's data"),
    ],
)  # fmt: skip
def test_the_message_names_where_the_secret_was_logged(pointer: str, place: str) -> None:
    record = complete_record()
    record["collection"]["redacted"] = [pointer]
    (finding,) = evaluate_record(record, load_policy("baseline"))
    assert finding.message.startswith(f"{pointer} ({place}")


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def leaky_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real SQLite store where a run logged an API key param and a Hugging Face token tag."""
    directory = tmp_path_factory.mktemp("leaky-store")
    uri = f"sqlite:///{directory / 'mlflow.db'}"
    with stores.tracking(uri):
        experiment = mlflow.create_experiment(
            "leaky", artifact_location=(directory / "artifacts").as_uri()
        )
        with mlflow.start_run(experiment_id=experiment, run_name="leaky-run"):
            mlflow.log_params({"api_key": OPENAI_KEY, "alpha": 0.1, "max_tokens": 512})
            mlflow.set_tags(
                {
                    "HF_TOKEN": HF_TOKEN,
                    "mlflow.source.git.commit": stores.COMMIT,
                    "mlflow.source.git.repoURL": f"https://{GITHUB_TOKEN}@github.com/acme/churn",
                }
            )
            mlflow.log_metric("test_accuracy", 0.9)
    return uri


def test_cli_outputs_never_contain_the_secrets(cli, leaky_store: str, tmp_path: Path) -> None:
    secrets = (OPENAI_KEY, HF_TOKEN, GITHUB_TOKEN)
    as_json = cli("check", "--tracking-uri", leaky_store, "--format", "json")
    as_table = cli("check", "--tracking-uri", leaky_store, "--format", "table")
    assert as_json.code == as_table.code == 1  # the run misses evidence too
    for output in (as_json.out, as_json.err, as_table.out, as_table.err):
        for secret in secrets:
            assert secret not in output

    (run,) = as_json.json()["runs"]
    warnings = {f["pointer"]: f for f in run["findings"] if f["rule_id"] == SECRETS_RULE_ID}
    assert set(warnings) == {"/hyperparameters/api_key", "/source/git_repo_url", "/tags/HF_TOKEN"}
    assert all(f["severity"] == "warning" for f in warnings.values())
    assert '"api_key"' in warnings["/hyperparameters/api_key"]["message"]
    assert '"HF_TOKEN"' in warnings["/tags/HF_TOKEN"]["message"]
    assert "secrets.logged" in as_table.out and "api_key" in as_table.out
    assert "HF_TOKEN" in as_table.out

    schema = json.loads(schema_path("audit-result.schema.json").read_text())
    jsonschema_rs.validator_for(schema).validate(as_json.json())


def test_collected_record_shows_redacted_values(leaky_store: str) -> None:
    from audit.api import collect

    (collected,) = collect(leaky_store)
    record = collected.record
    assert collected.evidence_sha256 == sha256_hex(record)
    assert record["hyperparameters"] == {"alpha": "0.1", "api_key": REDACTED, "max_tokens": "512"}
    assert record["tags"]["HF_TOKEN"] == REDACTED
    assert record["source"]["git_repo_url"] == "https://[redacted]@github.com/acme/churn"
    assert record["collection"]["redacted"] == [
        "/hyperparameters/api_key",
        "/source/git_repo_url",
        "/tags/HF_TOKEN",
    ]


# --------------------------------------------------------------------------- issue 17, end to end

# Letters and digits only, so that no escaping (HTML, PDF text, JSON) could hide a leak.
_E2E = {
    "tracking": "Qm7vX2pL9sK4tR8wQm7v",
    "pg": "Zc3nB6yH1jF5gD0aZc3n",
    "yaml": "Lp8rT4wE2qY6uI9oLp8r",
    "cli": "Vb5nM1kJ7hG3fD2sVb5n",
    "header": "Hx4cW9eR3tY7uN2mHx4c",
    "index": "Tg6yU2iO8pA4sD1fTg6y",
    "wheel": "Kj2hG8fD4sA6pO0iKj2h",
}
_DATABRICKS_AS_METRIC = "dapi0f1e2d3c4b5a69788796a5b4c3d2e1f0"
_ISSUE_PARAMS = {
    "env": f"MLFLOW_TRACKING_PASSWORD={_E2E['tracking']} DATABRICKS_TOKEN={corpus.DATABRICKS}",
    "cluster": "dapid3bf89a7419be54d3fb2f0e2dfe4ff27-2",
    "aws_config": f"[default]\naws_secret_access_key = {corpus.AWS_SECRET}",
    "PGPASSWORD": _E2E["pg"],
    "headers": f"Authorization: Basic {corpus.BASIC}",
    "signing_key": corpus.PRIVATE_KEYS[6],
    "config": f"db:\n  host: db.internal\n  password: {_E2E['yaml']}",
    "command": f"python train.py --password {_E2E['cli']} --epochs 3",
    "api": f"X-API-Key: {_E2E['header']}",
    corpus.GITHUB: "1",  # a token pasted as a param name
    "alpha": "0.1",
    "max_tokens": "512",
}
_ISSUE_TAGS = {corpus.HUGGING_FACE: "yes", "team": "risk"}  # a token pasted as a tag name
_ISSUE_SECRETS = (
    *_E2E.values(),
    corpus.DATABRICKS,
    "dapid3bf89a7419be54d3fb2f0e2dfe4ff27",
    corpus.AWS_SECRET,
    corpus.BASIC,
    "lQOYBGZk3iQBCADJ8wQk2Ck1Z7bq0Tm4c9Qf1Wn",
    corpus.GITHUB,
    corpus.HUGGING_FACE,
    _DATABRICKS_AS_METRIC,
)


@pytest.fixture(scope="module")
def issue_17_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real SQLite store whose run logged the credentials issue 17 found leaking: in param
    values (environment variables, a bare Databricks token, the AWS credentials file, a Basic
    header, a PGP key, YAML, a command line, an API key header), under the name PGPASSWORD, as
    a param, tag and metric *name*, and in a requirements file (a private index's password)."""
    directory = tmp_path_factory.mktemp("issue-17-store")
    uri = f"sqlite:///{directory / 'mlflow.db'}"
    requirements = directory / "requirements.txt"
    requirements.write_text(
        f"--extra-index-url https://ada:{_E2E['index']}@pypi.acme.internal/simple\n"
        f"acme-features @ https://deploy:{_E2E['wheel']}@pypi.acme.internal/f-1.0.whl\n"
        "numpy==2.1.1\n"
    )
    with stores.tracking(uri):
        experiment = mlflow.create_experiment(
            "leaky", artifact_location=(directory / "artifacts").as_uri()
        )
        with mlflow.start_run(experiment_id=experiment, run_name="issue-17"):
            mlflow.log_params(_ISSUE_PARAMS)
            mlflow.set_tags({**_ISSUE_TAGS, "mlflow.source.git.commit": stores.COMMIT})
            for step in range(3):
                mlflow.log_metric(_DATABRICKS_AS_METRIC, 0.5 + step / 10, step=step)
            mlflow.log_metric("test_accuracy", 0.9)
            mlflow.log_artifact(str(requirements))
            mlflow.set_tag("python_version", "3.11.7")
    return uri


def _pdf_text(path: Path) -> str:
    from pypdf import PdfReader

    return "\n".join(page.extract_text() or "" for page in PdfReader(path).pages)


def _pdf_attachments(path: Path) -> list[bytes]:
    from pypdf import PdfReader

    return [contents[0] for contents in PdfReader(path).attachments.values()]


def _leaked(blobs: dict[str, str]) -> list[tuple[str, str]]:
    """(secret, where) for each secret found in an output, white space ignored (a PDF's text
    breaks lines where its layout wrapped)."""
    return [
        (secret, where)
        for where, blob in blobs.items()
        for secret in _ISSUE_SECRETS
        if secret in "".join(blob.split())
    ]


def test_no_credential_of_issue_17_reaches_any_output(
    cli, issue_17_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUDIT_TEST_PASSPHRASE", "correct horse battery staple")
    keygen = cli(
        "keygen", "--subject", "CN=Jane Doe,O=Acme ML", "--out", str(tmp_path / "keys"),
        "--passphrase-env", "AUDIT_TEST_PASSPHRASE",
    )  # fmt: skip
    assert keygen.code == 0, keygen.err
    folder = tmp_path / "reports"
    report = cli(
        "report", "--tracking-uri", issue_17_store, "--out", str(folder), "--date", "2026-11-26",
        "--sign", str(tmp_path / "keys" / "signer.p12"),
        "--passphrase-env", "AUDIT_TEST_PASSPHRASE",
    )  # fmt: skip
    assert report.code == 0, report.err
    as_json = cli("check", "--tracking-uri", issue_17_store, "--format", "json")
    as_table = cli("check", "--tracking-uri", issue_17_store, "--format", "table")
    verified = cli(
        "verify", str(folder), "--cert", str(tmp_path / "keys" / "signer.pem"),
        "--against-store", "--tracking-uri", issue_17_store,
    )  # fmt: skip
    # The record is redacted before its digest: collected again, it is the same.
    assert verified.code == 0, verified.out + verified.err
    assert "OK: 1 run unchanged" in verified.out

    blobs = {
        "check json": as_json.out + as_json.err,
        "check table": as_table.out + as_table.err,
        "report output": report.out + report.err,
        "verify output": verified.out + verified.err,
    }
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    assert {p.name for p in files} >= {"evidence.json", "result.json", "issue-17.html"}
    for path in files:
        blobs[path.name] = path.read_bytes().decode("utf-8", "replace")
        if path.suffix == ".pdf":
            blobs[f"{path.name} text"] = _pdf_text(path)
            for index, attachment in enumerate(_pdf_attachments(path)):
                blobs[f"{path.name} attachment {index}"] = attachment.decode("utf-8", "replace")
    assert [name for name in blobs if "attachment" in name], "the PDFs embed their data"
    assert _leaked(blobs) == []

    (record,) = json.loads((folder / "evidence.json").read_text())["records"]
    assert record["hyperparameters"]["[redacted]"] == "1"
    assert record["hyperparameters"]["PGPASSWORD"] == REDACTED
    assert record["hyperparameters"]["max_tokens"] == "512"
    assert record["tags"]["[redacted]"] == "yes"
    assert record["environment"]["requirements"][0]["line"] == (
        "acme-features @ https://[redacted]@pypi.acme.internal/f-1.0.whl"
    )
    assert [m["key"] for m in record["metrics"] if m["key"] != "test_accuracy"] == [REDACTED]
    assert record["collection"]["redacted"] == [
        "/environment/requirements/0/line",
        *(f"/hyperparameters/{name}" for name in (
            "PGPASSWORD", "[redacted]", "api", "aws_config", "cluster", "command", "config",
            "env", "headers", "signing_key",
        )),
        "/metrics/0/key",
        "/tags/[redacted]",
    ]  # fmt: skip
    (run,) = as_json.json()["runs"]
    warned = sorted(f["pointer"] for f in run["findings"] if f["rule_id"] == SECRETS_RULE_ID)
    assert warned == record["collection"]["redacted"]


@pytest.mark.parametrize("fmt", ["cyclonedx", "spdx", "oscal", "model-card"])
def test_no_credential_of_issue_17_reaches_any_export(
    cli, issue_17_store: str, tmp_path: Path, fmt: str
) -> None:
    """Exports are made from the redacted records: what a report never shows, no export shows
    either, in its file or in what the command prints."""
    target = tmp_path / "export"
    done = cli(
        "export", "--tracking-uri", issue_17_store, "-f", fmt, "--date", "2026-12-01",
        "-o", str(target),
    )  # fmt: skip
    assert done.code == 0, done.err
    text = target.read_text(encoding="utf-8")
    assert "redacted" in text  # the places are there (OSCAL escapes the brackets), not the values
    assert _leaked({fmt: text, "output": done.out + done.err}) == []


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("https://ghp_" + "a1B2" * 9 + "@mlflow.example:5000/", "https://***@mlflow.example:5000/"),
        ("https://oauth2:glpat-" + "x1Y2z3" * 4 + "@gitlab.example", "https://oauth2:***@gitlab.example"),
        ("postgresql://audit:s3cret@db/mlflow", "postgresql://audit:***@db/mlflow"),
        ("postgresql://audit@db/mlflow", "postgresql://audit@db/mlflow"),
        ("http://mlflow:5000?token=abc", "http://mlflow:5000?token=***"),
    ],
)  # fmt: skip
def test_a_tracking_uri_is_shown_without_its_credentials(uri: str, shown: str) -> None:
    from audit.sources.store import redact_uri

    assert redact_uri(uri) == shown
