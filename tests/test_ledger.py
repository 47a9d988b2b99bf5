"""The alias ledger: real keys from `mlflow-audit keygen`, entries appended by `append_entry`
(from two processes at once too), and every kind of tampering named by `ledger verify` with its
line number."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from audit.ledger import (
    GENESIS,
    MAX_LINE_BYTES,
    LedgerError,
    append_entry,
    line_digest,
    verify_ledger,
)
from audit.signing.keys import SigningKey, load_certificates, load_signing_key
from tests import stores
from tests.conftest import REPO
from tests.test_signing import PASSPHRASE, PASSPHRASE_VARIABLE, Keys, _keygen

Main = Callable[..., tuple[int, str, str]]


@pytest.fixture(scope="module", autouse=True)
def _passphrase_in_environment() -> Iterator[None]:
    os.environ[PASSPHRASE_VARIABLE] = PASSPHRASE
    yield
    del os.environ[PASSPHRASE_VARIABLE]


@pytest.fixture(scope="module")
def main() -> Main:
    return stores.in_process_cli()


@pytest.fixture(scope="module")
def keys(main: Main, tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return _keygen(main, tmp_path_factory.mktemp("keys"), "CN=Registry Gate,O=Acme ML")


@pytest.fixture(scope="module")
def other_keys(main: Main, tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return _keygen(main, tmp_path_factory.mktemp("other-keys"), "CN=Mallory,O=Elsewhere")


@pytest.fixture(scope="module")
def key(keys: Keys) -> SigningKey:
    return load_signing_key(keys.p12, PASSPHRASE.encode())


def _move(number: int, model: str = "churn-classifier") -> dict[str, object]:
    return {
        "model": model,
        "alias": "champion",
        "old_version": str(number) if number else None,
        "new_version": str(number + 1),
        "moved_at": f"2026-12-03T17:{number:02d}:00Z",
        "verdict": {
            "status": "pass",
            "score": 0.9,
            "policy": "eu-ai-act-high-risk",
            "policy_sha256": "a" * 64,
            "result_sha256": "b" * 64,
            "evidence_sha256": "c" * 64,
            "checked_at": f"2026-12-03T16:{number:02d}:00Z",
        },
    }


@pytest.fixture(scope="module")
def ledger(key: SigningKey, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ledger") / "aliases.jsonl"
    for number in range(5):
        append_entry(path, _move(number), key)
    return path


@pytest.fixture(scope="module")
def other_ledger(key: SigningKey, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another ledger signed by the same key: its lines verify on their own."""
    path = tmp_path_factory.mktemp("other-ledger") / "aliases.jsonl"
    for number in range(3):
        append_entry(path, _move(number, model="fraud-detector"), key)
    return path


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def _verify(main: Main, path: Path, *certs: Path) -> tuple[int, str, str]:
    return main("ledger", "verify", str(path), *(f"--cert={cert}" for cert in certs))


def test_appended_entries_verify_and_chain(main: Main, ledger: Path, keys: Keys) -> None:
    lines = _lines(ledger)
    assert len(lines) == 5 and all(line.endswith(b"\n") for line in lines)
    envelope = json.loads(lines[1])
    assert envelope["payloadType"] == "application/vnd.mlflow-audit.ledger-entry+json"
    entry = json.loads(base64.b64decode(envelope["payload"]))
    assert entry["previous"] == line_digest(lines[0]) and entry["sequence"] == 1
    assert entry["old_version"] == "1" and entry["new_version"] == "2"
    assert json.loads(base64.b64decode(json.loads(lines[0])["payload"]))["previous"] == GENESIS

    code, out, err = _verify(main, ledger, keys.pem)
    assert (code, err) == (0, ""), out
    assert "OK: 5 entries, chain intact" in out and "Registry Gate" in out
    assert f"head sha256 {line_digest(lines[-1])}" in out
    outcome = verify_ledger(ledger, load_certificates(keys.pem))
    assert outcome.valid and outcome.entries == 5 and outcome.last and outcome.last.sequence == 4


def _change_one_byte(path: Path, _: Path, line: int = 2) -> None:
    lines = _lines(path)
    envelope = json.loads(lines[line])
    payload = base64.b64decode(envelope["payload"]).replace(b'"3"', b'"9"', 1)
    envelope["payload"] = base64.b64encode(payload).decode()
    lines[line] = json.dumps(envelope, separators=(",", ":")).encode() + b"\n"
    path.write_bytes(b"".join(lines))


def _delete_line(path: Path, _: Path) -> None:
    lines = _lines(path)
    del lines[2]
    path.write_bytes(b"".join(lines))


def _swap_lines(path: Path, _: Path) -> None:
    lines = _lines(path)
    lines[2], lines[3] = lines[3], lines[2]
    path.write_bytes(b"".join(lines))


def _insert_foreign_line(path: Path, other: Path) -> None:
    lines = _lines(path)
    lines.insert(2, _lines(other)[2])
    path.write_bytes(b"".join(lines))


def _drop_last_newline(path: Path, _: Path) -> None:
    path.write_bytes(path.read_bytes()[:-1])


def _tear_last_line(path: Path, _: Path) -> None:
    lines = _lines(path)
    lines[-1] = lines[-1][: len(lines[-1]) // 2]
    path.write_bytes(b"".join(lines))


@pytest.mark.parametrize(
    ("tamper", "named"),
    [
        (_change_one_byte, "line 3: the signature does not verify"),
        (_delete_line, "line 3: sequence 3 where 2 was due"),
        (_swap_lines, "line 3: sequence 3 where 2 was due"),
        (_insert_foreign_line, "line 3: previous is not the SHA-256 of the line before"),
        (_drop_last_newline, "line 5: the file ends without a newline"),
        (_tear_last_line, "line 5: not JSON"),
    ],
)
def test_tampering_is_named_with_its_line(
    main: Main,
    ledger: Path,
    other_ledger: Path,
    keys: Keys,
    copy_of: Callable[[Path], Path],
    tamper: Callable[[Path, Path], None],
    named: str,
) -> None:
    copy = copy_of(ledger)
    tamper(copy, other_ledger)
    code, out, err = _verify(main, copy, keys.pem)
    assert (code, err) == (1, ""), out
    assert f"FAIL  {named}" in out
    assert "INVALID:" in out


def test_a_torn_line_is_named_torn(
    main: Main, ledger: Path, keys: Keys, copy_of: Callable[[Path], Path]
) -> None:
    copy = copy_of(ledger)
    _tear_last_line(copy, copy)
    _, out, _ = _verify(main, copy, keys.pem)
    assert "FAIL  line 5: the file ends without a newline (a torn write)" in out


def test_another_signers_certificate_fails_every_line(
    main: Main, ledger: Path, other_keys: Keys
) -> None:
    code, out, _ = _verify(main, ledger, other_keys.pem)
    assert code == 1
    failures = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert len(failures) == 5
    assert failures[0].startswith("FAIL  line 1: signed by an unknown key (key id ")


def test_either_of_two_certificates_may_sign(
    main: Main, ledger: Path, keys: Keys, other_keys: Keys
) -> None:
    code, out, _ = _verify(main, ledger, other_keys.pem, keys.pem)
    assert code == 0, out


def test_json_output_names_problems_by_line(
    main: Main, ledger: Path, keys: Keys, copy_of: Callable[[Path], Path]
) -> None:
    copy = copy_of(ledger)
    _delete_line(copy, copy)
    code, out, _ = main("ledger", "verify", str(copy), "--cert", str(keys.pem), "-f", "json")
    document = json.loads(out)
    assert code == 1 and document["valid"] is False and document["entries"] == 4
    assert {problem["line"] for problem in document["problems"]} == {3}


def test_an_overlong_line_is_named_and_the_rest_still_checked(
    main: Main, ledger: Path, keys: Keys, copy_of: Callable[[Path], Path]
) -> None:
    copy = copy_of(ledger)
    lines = _lines(copy)
    lines.insert(1, b"x" * (MAX_LINE_BYTES * 3) + b"\n")
    copy.write_bytes(b"".join(lines))
    _, out, _ = _verify(main, copy, keys.pem)
    assert f"FAIL  line 2: longer than {MAX_LINE_BYTES} bytes" in out
    assert "FAIL  line 3: previous is not the SHA-256" in out
    assert "line 4" not in out and "line 6" not in out


def test_a_missing_ledger_or_certificate_is_one_line_exit_2(
    main: Main, ledger: Path, keys: Keys, tmp_path: Path
) -> None:
    code, out, err = _verify(main, tmp_path / "nowhere.jsonl", keys.pem)
    assert (code, out) == (2, "") and len(err.strip().splitlines()) == 1
    assert "nowhere.jsonl: no such file" in err
    code, _, err = _verify(main, ledger, tmp_path / "missing.pem")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "missing.pem" in err


def test_a_fifo_is_refused_without_waiting(keys: Keys, key: SigningKey, tmp_path: Path) -> None:
    fifo = tmp_path / "ledger.jsonl"
    os.mkfifo(fifo)
    done = subprocess.run(
        [sys.executable, "-m", "audit", "ledger", "verify", str(fifo), "--cert", str(keys.pem)],
        capture_output=True, text=True, cwd=REPO, env=stores.environment(), timeout=30,
    )  # fmt: skip
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [f"mlflow-audit: error: {fifo}: not a regular file"]
    outcome: list[BaseException | None] = []

    def append() -> None:
        try:
            append_entry(fifo, _move(0), key)
        except LedgerError as error:
            outcome.append(error)
        else:
            outcome.append(None)

    thread = threading.Thread(target=append, daemon=True)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive(), "append_entry blocked on a FIFO"
    assert isinstance(outcome[0], LedgerError) and "not a regular file" in str(outcome[0])


def test_append_refuses_a_tampered_or_torn_last_line_and_a_symlink(
    ledger: Path, key: SigningKey, copy_of: Callable[[Path], Path], tmp_path: Path
) -> None:
    copy = copy_of(ledger)
    lines = _lines(copy)
    lines.append(lines[2])
    copy.write_bytes(b"".join(lines))
    _change_one_byte(copy, copy, line=-1)
    with pytest.raises(LedgerError, match="signature of the last line does not verify"):
        append_entry(copy, _move(5), key)
    lines = _lines(copy)
    lines[-1] = b'{"payloadType": "text/plain", "payload": "", "signatures": []}\n'
    copy.write_bytes(b"".join(lines))
    for damage in (None, _drop_last_newline):
        if damage:
            damage(copy, copy)
        before = copy.read_bytes()
        with pytest.raises(LedgerError, match="the last line"):
            append_entry(copy, _move(5), key)
        assert copy.read_bytes() == before
    link = tmp_path / "link.jsonl"
    link.symlink_to(ledger)
    before = ledger.read_bytes()
    with pytest.raises(LedgerError, match="is a symlink"):
        append_entry(link, _move(5), key)
    assert ledger.read_bytes() == before


def test_append_refuses_a_move_that_is_not_one(key: SigningKey, tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    for bad, why in [
        ({**_move(0), "sequence": 7}, "not fields of an alias move: sequence"),
        ({**_move(0), "moved_at": "2026-12-03T17:00:00+02:00"}, "moved_at is not in UTC"),
        ({**_move(0), "old_version": None, "new_version": None}, "both null"),
        ({**_move(0), "verdict": {"status": "pass", "note": "x"}}, "unknown fields note"),
    ]:
        with pytest.raises(LedgerError, match=why):
            append_entry(path, bad, key)
    assert not path.exists() or path.read_bytes() == b""


_APPENDER = textwrap.dedent(
    """
    import sys
    import time
    from pathlib import Path
    from audit.ledger import append_entry
    from audit.signing.keys import load_signing_key

    ledger, p12, passphrase, model, start = sys.argv[1:]
    key = load_signing_key(Path(p12), passphrase.encode())
    deadline = time.monotonic() + 30
    while not Path(start).exists() and time.monotonic() < deadline:
        time.sleep(0.001)
    for number in range(30):
        append_entry(Path(ledger), {
            "model": model, "alias": "champion", "old_version": str(number),
            "new_version": str(number + 1), "moved_at": "2026-12-03T17:00:00Z",
        }, key)
    """
)


def test_two_processes_append_at_once(keys: Keys, tmp_path: Path) -> None:
    ledger, start = tmp_path / "ledger.jsonl", tmp_path / "start"
    arguments = (str(ledger), str(keys.p12), PASSPHRASE)
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _APPENDER, *arguments, model, str(start)],
            cwd=REPO,
            env=stores.environment(),
            stderr=subprocess.PIPE,
            text=True,
        )
        for model in ("first", "second")
    ]
    start.touch()
    for process in processes:
        _, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
    outcome = verify_ledger(ledger, load_certificates(keys.pem))
    assert outcome.valid, outcome.problems
    assert outcome.entries == 60 and outcome.last and outcome.last.sequence == 59
    models = [json.loads(base64.b64decode(json.loads(line)["payload"]))["model"]
              for line in _lines(ledger)]  # fmt: skip
    assert sorted(models) == ["first"] * 30 + ["second"] * 30
    assert oct(ledger.stat().st_mode & 0o777) == oct(0o644 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_show_lists_entries_one_escaped_line_each(
    main: Main, key: SigningKey, tmp_path: Path
) -> None:
    path = tmp_path / "ledger.jsonl"
    append_entry(path, _move(0), key)
    append_entry(path, {**_move(1), "model": "evil\n::error::owned\x1b[31m", "verdict": None}, key)
    with path.open("ab") as handle:
        handle.write(b"not json\n")
    code, out, err = main("ledger", "show", str(path))
    assert (code, err) == (1, "")
    lines = out.splitlines()
    assert lines[0].split() == [
        "0", "2026-12-03T17:00:00Z", "churn-classifier@champion", "-", "->", "1", "pass", "0.9",
    ]  # fmt: skip
    assert lines[1].split()[2] == "evil\\n::error::owned\\x1b[31m@champion"
    assert "no verdict" in lines[1]
    assert lines[2].startswith("line 3: not JSON")
    assert len(lines) == 3
    code, out, _ = main("ledger", "show", str(path), "-f", "json")
    listed = json.loads(out)
    assert code == 1 and [item["line"] for item in listed] == [1, 2, 3]
    assert listed[1]["model"] == "evil\n::error::owned\x1b[31m" and "error" in listed[2]
