"""Options and settings shared by the commands: the configuration file, the tracking store,
and the argument types and help layout they use."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from audit.cliparser import fill
from audit.errors import AuditError

if TYPE_CHECKING:
    from audit.signing import SigningKey


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return value


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "configuration",
        fill(
            "Settings also come from [tool.mlflow-audit] in pyproject.toml or mlflow-audit.toml "
            "(found from the working directory upwards) and MLFLOW_AUDIT_* variables; flags "
            "win. See 'mlflow-audit config'."
        ),
    )
    choice = group.add_mutually_exclusive_group()
    choice.add_argument("--config", metavar="FILE", help="use this configuration file")
    choice.add_argument(
        "--no-config",
        action="store_true",
        help="ignore configuration files and MLFLOW_AUDIT_CONFIG",
    )


def add_store_arguments(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """The tracking store to read and how: the group, for commands to add to."""
    store = parser.add_argument_group("tracking store")
    store.add_argument(
        "--tracking-uri",
        metavar="URI",
        help="sqlite:///path.db, ./mlruns, postgresql://..., http(s)://server; default: "
        "$MLFLOW_TRACKING_URI, else MLflow's default (./mlruns when it holds experiments, "
        "else sqlite:///mlflow.db)",
    )
    store.add_argument(
        "--source",
        choices=("auto", "sql", "client"),
        default="auto",
        help="how to read the store: sql reads a SQLite or PostgreSQL store's tables directly "
        "(read-only, no MLflow import), client goes through MLflow's client; auto (default) "
        "uses sql for SQLite and PostgreSQL, client otherwise",
    )
    store.add_argument(
        "--timeout",
        type=positive_int,
        default=None,  # from the configuration, else MLFLOW_HTTP_REQUEST_TIMEOUT, else 30
        metavar="SECONDS",
        help="seconds each request to a tracking server may wait; each is tried 3 times "
        "(default: MLFLOW_HTTP_REQUEST_TIMEOUT, else 30)",
    )
    store.add_argument(
        "--allow-artifact-location",
        action="append",
        default=[],
        metavar="PREFIX",
        help="also read artifacts from remote locations that start with PREFIX (e.g. "
        "s3://bucket/, https://artifacts.example.com/), with the credentials MLflow has for "
        "them (repeatable). Without it only local folders and the tracking server's own "
        "artifacts are read; other locations, which anyone who logs runs can set, are not "
        "contacted and their evidence is unreadable",
    )
    return store


#: The --policy option's help, the same wherever a command evaluates a policy.
POLICY_HELP = (
    "built-in policy name or a JSON/YAML policy file (default: eu-ai-act-high-risk; see "
    "'mlflow-audit policy list')"
)


def configure(args: argparse.Namespace, command: str) -> None:
    """Fill in what the command line left open from the environment, the configuration file
    and the defaults, in that order."""
    from audit.config import apply_settings, defaults, given_options, resolve

    settings = resolve(
        load_config(args), given_options(args, command), os.environ, defaults(command)
    )
    apply_settings(args, settings, command)


def load_config(args: argparse.Namespace) -> Any:
    from audit.config import find_config
    from audit.config import load_config as read

    return read(find_config(Path.cwd(), os.environ, explicit=args.config, disabled=args.no_config))


def add_key_arguments(group: argparse._ActionsContainer) -> None:
    """How the signing key is opened: the same for every command that signs."""
    group.add_argument(
        "--signer-cert",
        metavar="PEM",
        help="with a PEM private key: its certificate, then the chain up to the CA",
    )
    group.add_argument(
        "--passphrase-env",
        metavar="VAR",
        help="read the key's passphrase from environment variable VAR (default: ask on the "
        "terminal); never give a passphrase on the command line",
    )


def signing_key(
    path: Path, certificate: Path | None, passphrase_env: str | None, *, pdf: bool
) -> SigningKey:
    """The key a command signs with, opened before any audit (a wrong passphrase must not cost
    one) and refused when `verify` would refuse its certificate. `pdf`: it signs PDFs too,
    which needs pyHanko (the `sign` extra); DSSE envelopes need only cryptography."""
    from audit.signing.keys import (
        check_can_sign,
        load_signing_key,
        needs_passphrase,
        require_pyhanko,
    )

    if pdf:
        require_pyhanko()  # before the passphrase prompt and the audit
    passphrase = None
    if needs_passphrase(path):
        passphrase = read_passphrase(passphrase_env, f"Passphrase for {path}: ", path=path)
    key = load_signing_key(path, passphrase, certificate)
    check_can_sign(key)
    return key


def read_passphrase(
    variable: str | None, prompt: str, *, path: Path, confirm: bool = False
) -> bytes:
    """From the environment variable named by --passphrase-env, else from the terminal.
    Never from the command line, where other users and shell histories see it."""
    if variable:
        value = os.environ.get(variable)
        if value is None:
            raise AuditError(f"--passphrase-env {variable}: the variable is not set")
        return value.encode("utf-8")
    if not sys.stdin.isatty():
        raise AuditError(
            f"{path} needs a passphrase: name an environment variable that holds it with "
            "--passphrase-env VAR (there is no terminal to ask on)"
        )
    import getpass

    value = getpass.getpass(prompt)
    if confirm and getpass.getpass("Repeat the passphrase: ") != value:
        raise AuditError("the passphrases differ")
    return value.encode("utf-8")


def add_audit_arguments(parser: argparse.ArgumentParser, *, fail_on_default: str) -> None:
    """Store, selection and policy options: the same for every command that audits runs."""
    from audit.result import FAIL_ON_CHOICES

    add_config_arguments(parser)
    add_store_arguments(parser)
    selection = parser.add_argument_group(
        "selection",
        fill(
            "Default: every run of every active experiment. --run-id and --model add those "
            "runs; --experiment and --filter narrow the search."
        ),
    )
    selection.add_argument(
        "-e",
        "--experiment",
        action="append",
        default=[],
        metavar="NAME|ID",
        help="audit the runs of this experiment (repeatable)",
    )
    selection.add_argument(
        "--run-id", action="append", default=[], metavar="ID", help="audit this run (repeatable)"
    )
    selection.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="SPEC",
        help="audit a registered model version with its lineage (its source run, the runs "
        "that evaluated its model, its sweep): NAME (every version), NAME/VERSION, "
        "NAME/latest or NAME@ALIAS (repeatable)",
    )
    selection.add_argument(
        "--filter",
        metavar="EXPR",
        help="MLflow search expression, e.g. \"attributes.status = 'FINISHED' and "
        "tags.team = 'risk'\"",
    )
    selection.add_argument(
        "--include-deleted", action="store_true", help="also audit deleted runs and experiments"
    )
    selection.add_argument("--max-runs", type=positive_int, metavar="N", help="stop after N runs")
    selection.add_argument(
        "--search-page-size",
        type=positive_int,
        default=None,  # from the configuration, else 50000
        metavar="N",
        help="runs per search request at most (default: 50000, MLflow's maximum, for SQL "
        "stores; 5000 from a tracking server and 2000 through MLflow's client, fewer for "
        "large runs or a slow server)",
    )
    policy = parser.add_argument_group("policy and gate")
    policy.add_argument(
        "--policy",
        metavar="NAME|FILE",
        help=POLICY_HELP,
    )
    policy.add_argument(
        "--fail-on",
        choices=FAIL_ON_CHOICES,
        default=None,  # from the configuration, else fail_on_default
        help=f"lowest severity that fails (exit 1); default: {fail_on_default}",
    )
    policy.add_argument(
        "--min-score",
        type=percentage,
        metavar="N",
        help="also fail when fewer than N percent of the applicable rule evaluations pass "
        "(0-100; unknown ones count as not passed)",
    )
    policy.add_argument(
        "--system-card",
        metavar="FILE",
        help="the provider's system card for the model versions audited (YAML, or Markdown "
        "with YAML front matter): what MLflow cannot hold, checked by the declared rules; "
        "'mlflow-audit system-card init' writes a template",
    )
    policy.add_argument(
        "--waivers",
        metavar="FILE",
        help="YAML or TOML file of accepted gaps (rule, scope, reason, approved_by, expires); "
        "waived findings are reported but do not fail (schemas/waivers.schema.json)",
    )


def audit_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options `add_audit_arguments` declares, as the API takes them."""
    return {
        "experiment": args.experiment,
        "run_id": args.run_id,
        "model": args.model,
        "filter": args.filter,
        "include_deleted": args.include_deleted,
        "max_runs": args.max_runs,
        "policy": args.policy,
        "fail_on": args.fail_on,
        "min_score": args.min_score,
        "waivers": args.waivers,
        "system_card": args.system_card,
        "page_size": args.search_page_size,
        "source": args.source,
        "timeout": args.timeout,
        "allow_artifact_locations": args.allow_artifact_location,
    }


def percentage(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"{value:g} is not between 0 and 100")
    return value
