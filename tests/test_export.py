"""`mlflow-audit export`: what it writes where, signing, configuration, failures (the formats
themselves: test_export_cyclonedx, _spdx, _oscal, _model_card)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import LineageStore

PASSPHRASE = "correct horse battery staple"


def test_model_cards_go_in_a_folder_each_as_the_hub_has_them(
    cli, lineage_store: LineageStore, tmp_path: Path
) -> None:
    out = tmp_path / "cards"
    done = cli(
        "export", "--tracking-uri", lineage_store.uri, "-f", "model-card",
        "--model", lineage_store.model, "-o", f"{out}/",
    )  # fmt: skip
    assert done.code == 0, done.err
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        f"{lineage_store.model}-v{v}/README.md" for v in (1, 2, 3)
    ]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging left


def test_an_export_replaces_its_own_documents_and_leaves_the_rest(
    cli, lineage_store: LineageStore, tmp_path: Path
) -> None:
    out = tmp_path / "boms"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    stale = out / f"{lineage_store.model}-v1.cdx.json"
    stale.write_text("old")
    done = cli(
        "export", "--tracking-uri", lineage_store.uri, "-f", "cyclonedx",
        "--model", f"{lineage_store.model}/1", "-o", str(out),  # an existing folder: no slash
    )  # fmt: skip
    assert done.code == 0, done.err
    assert (out / "notes.txt").read_text() == "mine"
    assert json.loads(stale.read_text())["bomFormat"] == "CycloneDX"


def test_a_signed_export_verifies_and_an_edit_is_caught(
    cli, lineage_store: LineageStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUDIT_TEST_PASSPHRASE", PASSPHRASE)
    keys = tmp_path / "keys"
    made = cli(
        "keygen", "--subject", "CN=Jane Doe,O=Acme ML", "--out", str(keys),
        "--passphrase-env", "AUDIT_TEST_PASSPHRASE",
    )  # fmt: skip
    assert made.code == 0, made.err
    out = tmp_path / "signed"
    done = cli(
        "export", "--tracking-uri", lineage_store.uri, "-f", "cyclonedx",
        "--model", lineage_store.model, "-o", f"{out}/",
        "--sign", str(keys / "signer.p12"), "--passphrase-env", "AUDIT_TEST_PASSPHRASE",
    )  # fmt: skip
    assert done.code == 0, done.err
    assert "Exported 3 cyclonedx documents" in done.err
    assert {p.name for p in out.iterdir()} == {
        *(f"{lineage_store.model}-v{v}.cdx.json" for v in (1, 2, 3)),
        "result.json",
        "audit.intoto.jsonl",
    }
    verified = cli("verify", str(out), "--cert", str(keys / "signer.pem"))
    assert verified.code == 0, verified.out + verified.err
    assert "OK: 4 files as signed" in verified.out
    bom = out / f"{lineage_store.model}-v2.cdx.json"
    bom.write_bytes(bom.read_bytes().replace(b'"Met"', b'"Met!"', 1))
    tampered = cli("verify", str(out), "--cert", str(keys / "signer.pem"))
    assert tampered.code == 1 and "changed since signing" in tampered.out


def test_signing_needs_a_folder(cli, lineage_store: LineageStore, tmp_path: Path) -> None:
    done = cli(
        "export", "--tracking-uri", lineage_store.uri, "-f", "cyclonedx",
        "--model", f"{lineage_store.model}/1", "--sign", str(tmp_path / "none.p12"),
    )  # fmt: skip
    assert done.code == 2 and "give -o DIR/" in done.err


def test_the_selection_comes_from_the_configuration_as_for_check(
    cli, lineage_store: LineageStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "mlflow-audit.toml").write_text(
        f'tracking_uri = "{lineage_store.uri}"\nmodels = ["{lineage_store.model}/3"]\n'
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the environment beats the file
    done = cli("export", "-f", "cyclonedx")
    assert done.code == 0, done.err
    assert json.loads(done.out)["metadata"]["component"]["version"] == "3"


def test_an_export_that_cannot_be_published_leaves_the_folder_as_it_was(
    cli, lineage_store: LineageStore, tmp_path: Path
) -> None:
    out = tmp_path / "boms"
    (out / f"{lineage_store.model}-v2.cdx.json").mkdir(parents=True)  # a folder in the way
    (out / f"{lineage_store.model}-v1.cdx.json").write_text("kept")
    before = sorted((p.relative_to(out), p.is_dir()) for p in out.rglob("*"))
    done = cli(
        "export", "--tracking-uri", lineage_store.uri, "-f", "cyclonedx",
        "--model", lineage_store.model, "-o", f"{out}/",
    )  # fmt: skip
    assert done.code == 2 and "cannot write the export into" in done.err
    assert len(done.err.strip().splitlines()) == 1
    assert sorted((p.relative_to(out), p.is_dir()) for p in out.rglob("*")) == before
    assert (out / f"{lineage_store.model}-v1.cdx.json").read_text() == "kept"


def test_an_unknown_format_is_refused_before_any_audit(
    cli, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli("export", "-f", "cyclonedx-2", "--tracking-uri", f"sqlite:///{tmp_path}/x.db")
    assert stopped.value.code == 2
    assert "invalid choice: 'cyclonedx-2'" in capsys.readouterr().err
    assert not (tmp_path / "x.db").exists()
