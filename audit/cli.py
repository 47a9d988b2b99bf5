"""The `mlflow-audit` command line: a thin layer over the `audit` API."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from audit import __version__
from audit.cliparser import Parser, fill
from audit.commands import Command, system_card, verify_deploy
from audit.commands import diff as commands_diff
from audit.commands import export as commands_export
from audit.commands import ledger as commands_ledger
from audit.commands import serve as commands_serve
from audit.commands.options import (
    add_audit_arguments,
    add_config_arguments,
    add_key_arguments,
    audit_options,
    configure,
    load_config,
    positive_int,
    read_passphrase,
    signing_key,
)
from audit.commands.output import (
    Progress,
    emit,
    tell,
    terminal_width,
    use_color,
    warn_about_waivers,
)
from audit.errors import AuditError, first_line

if TYPE_CHECKING:
    from audit.signing import PdfSignOptions, SignedBundle, SigningKey

EXIT_OK, EXIT_GAPS, EXIT_INCOMPLETE = 0, 1, 2

#: Commands with a module of their own: each has `add_parser(commands)` and `run(args)`.
COMMAND_MODULES: dict[str, Command] = {
    "export": commands_export,
    "diff": commands_diff,
    "system-card": system_card,
    "verify-deploy": verify_deploy,
    "ledger": commands_ledger,
    "serve": commands_serve,
}

_EPILOG = """\
outcomes:
  Every rule is decided on every run: pass (reports show the evidence it
  passed on), fail (a gap, with the provisions it is relevant to and the fix),
  waived, not applicable (its subject is absent: no model, no dataset) or
  unknown (MLflow's record cannot show it either way). Not applicable and
  unknown never fail the gate; the score counts the applicable rule
  evaluations, an unknown one as not passed. Runs are listed worst first: most
  errors, then warnings, then unknown.

exit codes:
  0  no open finding at or above --fail-on, and the score reaches --min-score
  1  gaps at or above --fail-on that no waiver accepts, or a score below
     --min-score
  2  the audit could not be completed (bad arguments, unreadable policy or
     waivers file, store missing or unreachable, no runs matched); never
     reported as a pass
"""


_SIGN_EPILOG = """\
exit codes:
  0  signed (and logged to MLflow with --log-to-mlflow)
  2  not signed (key, passphrase or folder unusable, a certificate expired or
     not for signing, pyHanko missing, timestamp authority unreachable, a write
     or rename failing: the folder keeps its previous contents), or signed but
     not logged to MLflow (the message says how many runs were written)
"""

_VERIFY_EPILOG = """\
exit codes:
  0  every signature valid, by the given certificate, every file as signed (and,
     with --against-store, every run unchanged)
  1  invalid: a file changed, added (hidden ones too) or missing, a signature
     broken or appended to, a certificate not trusted, expired or not for
     signing, or a run or a metric history it charts changed in MLflow
  2  could not verify: missing signature file, unreadable certificate, store
     unreachable
"""

_REPORT_EPILOG = """\
exit codes:
  0  the documents were written (gaps are documented in them)
  1  written, and gaps at or above --fail-on exist (only with --fail-on or
     --min-score)
  2  the audit, the writing or the signing could not be completed; the folder
     keeps its previous contents
"""


#: Extra outputs of one audit: format -> (flag, what it writes). Flags follow pytest
#: (--junit-xml) and linters (--sarif).
_OUTPUT_FLAGS = {
    "junit": ("--junit-xml", "JUnit XML (one testsuite per run, one testcase per rule)"),
    "sarif": ("--sarif", "SARIF 2.1.0 for code scanning"),
    "markdown": ("--markdown", "a Markdown summary for a pull-request comment"),
    "csv": ("--csv", "CSV, one row per finding"),
    "json": ("--json", "the JSON result (schemas/audit-result.schema.json)"),
}
_OUTPUT_FILES = {
    fmt: flag.lstrip("-").replace("-", "_") + "_file" for fmt, (flag, _) in _OUTPUT_FLAGS.items()
}


def build_parser() -> argparse.ArgumentParser:
    from audit.formats import FORMATS

    parser = Parser(
        prog="mlflow-audit",
        description="Audit MLflow runs for the provenance evidence a model's documentation "
        "needs (data, hyperparameters, metrics, environment, source, model), map every gap to "
        "the EU AI Act, ISO/IEC 42001 and NIST AI RMF, gate CI on it, and write and sign the "
        "model documentation.",
        epilog="Run 'mlflow-audit COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"mlflow-audit {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show a traceback when something goes wrong"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    check = commands.add_parser(
        "check",
        help="audit runs against a policy and fail on gaps (the CI gate)",
        description=fill(
            "Collect runs from an MLflow tracking store (read-only), validate each against a "
            "policy, decide every rule on every run (pass with its evidence, fail, not "
            "applicable, unknown, waived), print every gap with the provisions it is relevant "
            "to and how to fix it, and exit 1 when gaps at or above --fail-on exist."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_audit_arguments(check, fail_on_default="error")
    output = check.add_argument_group("output")
    output.add_argument(
        "-f",
        "--format",
        choices=FORMATS,
        metavar="FORMAT",
        default=None,  # from the configuration, else table
        help="table for people (default); json (schemas/audit-result.schema.json), junit, "
        "sarif, markdown, csv; github: workflow annotations, plus the Markdown summary "
        "appended to $GITHUB_STEP_SUMMARY when set",
    )
    output.add_argument(
        "-o", "--output", metavar="FILE", help="write the --format output to FILE, not stdout"
    )
    output.add_argument(
        "--sarif-artifact",
        metavar="PATH",
        help="repository file every SARIF result points at (GitHub code scanning needs one), "
        "e.g. pyproject.toml or the training script",
    )
    for fmt, (flag, what) in _OUTPUT_FLAGS.items():
        output.add_argument(
            flag, dest=_OUTPUT_FILES[fmt], metavar="FILE", help=f"also write {what}"
        )
    output.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="colour in the table: auto (default) colours a terminal unless NO_COLOR is set",
    )
    detail = output.add_mutually_exclusive_group()
    detail.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="the table shows every run's findings and fixes, however many runs (by default "
        "above 20 runs it lists the runs that fail the gate with their rule ids, then the "
        "rules by failing runs)",
    )
    detail.add_argument(
        "-q", "--quiet", action="store_true", help="the table shows only the summary and gate"
    )

    report = commands.add_parser(
        "report",
        help="write model documentation (HTML and PDF/A) mapped to the provisions",
        description=fill(
            "Audit the selected runs like 'check' and write their documentation into a folder: "
            "for each run NAME.html and NAME.pdf (PDF/A-3b carrying the evidence), summary.html "
            "and summary.pdf when several runs are selected, evidence.json and result.json. "
            "A model version (--model NAME/VERSION or NAME@ALIAS) gets its technical "
            "documentation in the order of Annex IV: its lineage from MLflow (source run, sweep, "
            "evaluating runs, registry), what a system card declares, what is missing, and the "
            "changes since the version before it. "
            "Gaps are documented, not gated: the exit code is 0 unless --fail-on is given."
        ),
        epilog=_REPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_audit_arguments(report, fail_on_default="never")
    documents = report.add_argument_group("documents")
    documents.add_argument(
        "--out",
        default=None,  # from the configuration (report.out) if not given
        metavar="DIR",
        help="folder to write into (created if missing; files of the same names are replaced); "
        "required here or as report.out in the configuration",
    )
    documents.add_argument("--organisation", metavar="NAME", help="organisation on the cover")
    documents.add_argument("--author", metavar="NAME", help="author on the cover and in the PDF")
    documents.add_argument(
        "--date",
        metavar="DATE",
        help="date of the documents, YYYY-MM-DD or an ISO 8601 time (default: now); the same "
        "data, policy and date give byte-identical files",
    )
    documents.add_argument(
        "--page-size",
        type=_page_size,
        choices=("A4", "letter"),
        default=None,  # from the configuration, else A4
        help="PDF page size (default: A4)",
    )
    documents.add_argument(
        "--compare-to",
        metavar="SPEC",
        help="for a model version's documentation: the version (NAME/VERSION, NAME@ALIAS) or "
        "run id whose changes section 6 lists (default: the version before it)",
    )
    documents.add_argument(
        "--template-dir",
        metavar="DIR",
        help="your Jinja2 templates, looked up before the built-in ones (which stay available "
        "as builtin/NAME to extend); see samples/report_templates/",
    )
    documents.add_argument(
        "--no-pdf", action="store_true", help="write HTML only (no WeasyPrint needed)"
    )
    documents.add_argument(
        "-j",
        "--jobs",
        type=positive_int,
        metavar="N",
        help="render PDFs in N processes (default: one per core)",
    )
    signing = report.add_argument_group("signing (see 'mlflow-audit sign --help')")
    signing.add_argument(
        "--sign",
        dest="sign_key",
        metavar="KEY",
        help="sign the folder with KEY (PKCS#12 from 'mlflow-audit keygen' or your CA, or a "
        "PEM key with --signer-cert): a PAdES signature in every PDF and audit.intoto.jsonl "
        "over every file",
    )
    _add_signing_arguments(signing)

    keygen = commands.add_parser(
        "keygen",
        help="make a signing key and a self-signed certificate (to try signing out)",
        description=fill(
            "Make a private key and a self-signed X.509 certificate for document signing (key "
            "usage digitalSignature and nonRepudiation). Writes DIR/signer.p12 (key and "
            "certificate, encrypted with a passphrase) and DIR/signer.pem (the certificate, "
            "for reviewers), and prints the certificate's SHA-256 fingerprint. For documents "
            "others rely on, use a certificate from your organisation's CA instead."
        ),
    )
    keygen.add_argument(
        "--subject",
        required=True,
        metavar="DN",
        help='who signs, as a distinguished name: "CN=Jane Doe,O=Acme ML"',
    )
    keygen.add_argument("--out", required=True, metavar="DIR", help="folder for the two files")
    keygen.add_argument(
        "--key-type",
        choices=("rsa-3072", "rsa-4096", "ecdsa-p256"),
        default="rsa-3072",
        help="rsa-3072 (default) keeps signed PDFs PDF/A-3b; pyHanko writes ECDSA signatures "
        "only into PDF 2.0 files",
    )
    keygen.add_argument(
        "--days",
        type=positive_int,
        default=None,
        metavar="N",
        help="validity of the certificate (default: 3700, a little over the 10 years Art. 18 "
        "keeps documentation)",
    )
    keygen.add_argument(
        "--passphrase-env",
        metavar="VAR",
        help="read the passphrase from environment variable VAR (default: ask on the terminal)",
    )
    keygen.add_argument("--force", action="store_true", help="replace existing key files")

    sign = commands.add_parser(
        "sign",
        help="sign a report folder: PAdES in each PDF, a DSSE envelope over every file",
        description=fill(
            "Sign a folder written by 'mlflow-audit report': each PDF gets a PAdES signature "
            "(it stays PDF/A-3b with an RSA key), then audit.intoto.jsonl, a DSSE envelope "
            "holding an in-toto Statement v1, signs the SHA-256 of every file with what was "
            "audited (store, policy, runs and their evidence digests). Nothing is written to "
            "MLflow unless --log-to-mlflow is given. Needs pyHanko: pip install "
            "'mlflow-audit[sign]' (from a checkout: pip install '.[sign]')."
        ),
        epilog=_SIGN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sign.add_argument("folder", metavar="DIR", help="the report folder")
    sign.add_argument(
        "--key", dest="sign_key", required=True, metavar="KEY", help="PKCS#12 file or PEM key"
    )
    _add_signing_arguments(sign)
    sign.add_argument(
        "--tracking-uri",
        metavar="URI",
        help="with --log-to-mlflow: the store to write to (default: the one result.json names)",
    )
    sign.add_argument(
        "--allow-artifact-location",
        action="append",
        default=[],
        metavar="PREFIX",
        help="with --log-to-mlflow: also upload to runs whose artifacts are under this remote "
        "location, as check reads them (repeatable)",
    )

    verify = commands.add_parser(
        "verify",
        help="verify a signed report folder or file, offline (and against MLflow today)",
        description=fill(
            "Check a signed report folder (or one file of it, or a signed PDF on its own) "
            "against the certificate you trust: the envelope's signature, every file's digest, "
            "every PDF's signature covering the whole file, and the signer's certificate "
            "(the given one, or issued by it, and valid today). With --against-store, collect "
            "each signed run again and list the runs whose evidence changed since signing."
        ),
        epilog=_VERIFY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verify.add_argument("path", metavar="DIR|FILE", help="report folder, or a file in it")
    verify.add_argument(
        "--cert",
        action="append",
        required=True,
        metavar="CERT",
        help="certificate you trust (PEM or DER): the signer's own, or the CA that issued it; "
        "repeat for several",
    )
    verify.add_argument(
        "--against-store",
        action="store_true",
        help="also collect every signed run again (read-only) and compare its evidence and "
        "the metric histories its documents chart",
    )
    verify.add_argument(
        "--tracking-uri",
        metavar="URI",
        help="with --against-store: the store to compare with (default: the one the signature "
        "names; give it when the store moved or needs credentials)",
    )
    verify.add_argument(
        "--source",
        choices=("auto", "sql", "client"),
        default="auto",
        help="with --against-store: how to read the store (as for check)",
    )
    verify.add_argument(
        "--allow-artifact-location",
        action="append",
        default=[],
        metavar="PREFIX",
        help="with --against-store: also read artifacts under this remote location, as for "
        "check (repeatable; give the ones the signed audit was allowed)",
    )
    verify.add_argument(
        "-f", "--format", choices=("text", "json"), default="text", help="text (default) or json"
    )

    policy_cmd = commands.add_parser(
        "policy",
        help="list, show or validate policies",
        description="Policies are JSON Schema 2020-12 documents over the evidence record; "
        "x-audit annotations name each rule, its severity, provisions and fix.",
    )
    policy_actions = policy_cmd.add_subparsers(
        dest="policy_command", metavar="ACTION", required=True
    )
    policy_actions.add_parser("list", help="list the built-in policies")
    show = policy_actions.add_parser("show", help="show a policy's rules")
    show.add_argument("policy", metavar="NAME|FILE")
    show.add_argument(
        "--schema", action="store_true", help="print the policy document itself (JSON)"
    )
    validate = policy_actions.add_parser(
        "validate", help="check a policy file: JSON/YAML, JSON Schema, x-audit, provision ids"
    )
    validate.add_argument("policy", metavar="FILE")

    config_cmd = commands.add_parser(
        "config",
        help="show the effective configuration and where each value comes from",
        description=fill(
            "Print every setting of check and report with its effective value and its source: "
            "the environment (MLFLOW_TRACKING_URI, MLFLOW_AUDIT_*), the configuration file "
            "([tool.mlflow-audit] in pyproject.toml, or mlflow-audit.toml, found from the "
            "working directory upwards) or the built-in default. Flags given to check or "
            "report override all of these."
        ),
    )
    add_config_arguments(config_cmd)
    config_cmd.add_argument(
        "-f",
        "--format",
        choices=("text", "json"),
        default="text",
        help="text for people (default), json: {config_file, settings: {key: {value, source}}}",
    )

    provisions = commands.add_parser(
        "provisions",
        help="list the provisions a finding can cite",
        description="The provisions catalog: EU AI Act (Regulation (EU) 2024/1689), "
        "ISO/IEC 42001 Annex A and NIST AI RMF entries, with the text version each follows.",
    )
    provisions.add_argument("--framework", metavar="ID", help="only this framework, e.g. eu-ai-act")
    provisions.add_argument("-f", "--format", choices=("table", "json"), default="table")
    for command in COMMAND_MODULES.values():
        command.add_parser(commands)
    return parser


def _add_signing_arguments(group: argparse._ActionsContainer) -> None:
    """How to sign: the same for `report --sign` and `sign`."""
    add_key_arguments(group)
    group.add_argument(
        "--reason",
        metavar="TEXT",
        help="reason in the PDF signature (default: that mlflow-audit generated the "
        "documentation from MLflow evidence)",
    )
    group.add_argument("--location", metavar="TEXT", help="location in the PDF signature")
    group.add_argument(
        "--tsa-url",
        metavar="URL",
        help="RFC 3161 timestamp authority to countersign the PDF signatures (PAdES B-T); "
        "needs the network",
    )
    group.add_argument(
        "--visible-signature",
        action="store_true",
        help="draw a signature block on the cover page of each PDF",
    )
    group.add_argument(
        "--log-to-mlflow",
        action="store_true",
        help="upload the signed folder to every documented run under audit/ and set the tags "
        "audit.status, audit.policy, audit.report_sha256, audit.signed_by: the only option that "
        "writes to MLflow",
    )


def _page_size(text: str) -> str:
    return {"a4": "A4", "letter": "letter"}.get(text.lower(), text)


# --------------------------------------------------------------------------- commands


def _run_config(args: argparse.Namespace) -> int:
    from audit.config import defaults, render_settings, resolve

    config = load_config(args)
    settings = resolve(config, {}, os.environ, defaults())
    if settings["tracking_uri"].value is None:
        from audit.config import Setting
        from audit.sources.store import default_store

        settings["tracking_uri"] = Setting(*default_store())
    sys.stdout.write(render_settings(settings, config, args.format))
    return EXIT_OK


def _run_check(args: argparse.Namespace) -> int:
    from audit.api import check
    from audit.formats import render_chunks

    configure(args, "check")
    files = {fmt: getattr(args, dest) for fmt, dest in _OUTPUT_FILES.items() if getattr(args, dest)}
    for target in (args.output, *files.values()):
        # Checked before the audit: a gate that ran for minutes must not fail on a typo here.
        if target and not Path(target).resolve().parent.is_dir():
            raise AuditError(f"cannot write {target}: its folder does not exist")
    progress = Progress(sys.stderr)
    result = check(
        args.tracking_uri,
        **audit_options(args),
        on_run=progress.update,
    )
    progress.done()
    if args.format not in ("table", "github") or args.output:
        warn_about_waivers(result)  # the table and the annotations show them themselves
    # One audit, every rendering: the files first, so that a reader of the terminal output
    # (or a CI step after it) finds them complete.
    for fmt, target in files.items():
        emit(render_chunks(result, fmt, artifact_uri=args.sarif_artifact), target)
    color = args.output is None and use_color(args.color, sys.stdout)
    width = min(terminal_width(), 100) if args.output is None else 80
    chunks = render_chunks(
        result,
        args.format,
        color=color,
        width=width,
        artifact_uri=args.sarif_artifact,
        detail="full" if args.verbose else "summary" if args.quiet else "auto",
    )
    if args.output is None and args.format != "github" and os.environ.get("GITHUB_ACTIONS"):
        from audit.formats.github import stop_commands_around

        # Run names and messages from MLflow must not become workflow commands in the log.
        chunks = stop_commands_around(chunks)
    emit(chunks, args.output)
    if args.format == "github":
        from audit.formats.github import write_step_summary

        try:
            write_step_summary(result)
        except OSError as error:
            raise AuditError(
                f"cannot append to $GITHUB_STEP_SUMMARY: {error.strerror or error}"
            ) from None
    return result.exit_code


def _run_report(args: argparse.Namespace) -> int:
    from audit.api import report
    from audit.report import ReportSettings, parse_date

    configure(args, "report")
    if args.out is None:
        raise AuditError("report: give --out DIR, or report.out in the configuration")
    try:
        date = parse_date(args.date)
    except ValueError as error:
        raise AuditError(str(error)) from None
    # Checked before the audit, which can take minutes on a large store.
    if args.template_dir and not Path(args.template_dir).is_dir():
        raise AuditError(f"--template-dir {args.template_dir}: not a directory")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise AuditError(f"--out {args.out}: exists and is not a folder")
    # The key is opened before the audit: a wrong passphrase must not cost a long audit.
    key = _signing_key(args) if args.sign_key else None
    if args.log_to_mlflow and key is None:
        raise AuditError("--log-to-mlflow logs a signed folder: give --sign KEY as well")
    if args.log_to_mlflow:
        # Said before a long audit: mlflow-skinny's client cannot write to a SQL store.
        from audit.signing.publish import check_can_log
        from audit.sources import resolve_store

        check_can_log(resolve_store(args.tracking_uri))
    settings = ReportSettings(
        date=date,
        organisation=args.organisation,
        author=args.author,
        page_size=args.page_size,
    )
    progress = Progress(sys.stderr)
    result, files = report(
        args.out,
        args.tracking_uri,
        **audit_options(args),
        settings=settings,
        template_dir=args.template_dir,
        html_only=args.no_pdf,
        jobs=args.jobs,
        on_run=progress.update,
        on_document=progress.documents,
        sign_with=key,
        sign_options=_sign_options(args) if key else None,
        on_signed=lambda done, total: progress.documents(done, total, "signing"),
        compare_to=args.compare_to,
    )
    progress.done()
    warn_about_waivers(result)
    from audit.formats.text import plural

    counts = result.status_counts()
    versions = sum(1 for run in result.runs if run.model_versions)
    subjects = (
        plural(versions, "model version") if versions == len(result.runs)
        else plural(len(result.runs), "run")
    )  # fmt: skip
    print(
        f"Documented {subjects} ({counts['pass']} pass, "
        f"{counts['warn']} with warnings, {counts['fail']} fail) in {files.folder}"
    )
    if files.summary:
        print(f"  start with {files.folder / files.summary}")
        print(f"  {len(files.documents)} document files, {', '.join(files.data)}")
    else:
        for name in (*files.documents, *files.data):
            print(f"  {files.folder / name}")
    if files.signature is not None:
        _tell_signed(args, files.signature, tracking_uri=args.tracking_uri)
    else:
        from audit.signing.statement import ENVELOPE_FILE

        if (files.folder / ENVELOPE_FILE).exists():
            tell(
                "warning",
                f"{files.folder / ENVELOPE_FILE} signed the folder's previous contents and no "
                "longer matches; sign again (--sign) or remove it",
            )
    return result.exit_code


def _signing_key(args: argparse.Namespace) -> SigningKey:
    return signing_key(
        Path(args.sign_key),
        Path(args.signer_cert) if args.signer_cert else None,
        args.passphrase_env,
        pdf=True,
    )


def _sign_options(args: argparse.Namespace) -> PdfSignOptions:
    from audit.signing import PdfSignOptions

    return PdfSignOptions(
        reason=args.reason or PdfSignOptions.reason,
        location=args.location,
        tsa_url=args.tsa_url,
        visible=args.visible_signature,
    )


def _tell_signed(
    args: argparse.Namespace, bundle: SignedBundle, *, tracking_uri: str | None
) -> None:
    """Say what was signed, and log it to MLflow when asked."""
    from audit.formats.text import safe_line
    from audit.signing.keys import colon_fingerprint

    pdfs = len(bundle.pdfs)
    print(
        f"Signed {pdfs} PDF{'s' if pdfs != 1 else ''} and {len(bundle.subjects)} files "
        f"({bundle.envelope}) as {safe_line(bundle.signer)}"
    )
    print(f"  certificate SHA-256:\n    {colon_fingerprint(bundle.fingerprint)}")
    if args.log_to_mlflow:
        from audit.signing.bundle import store_uri
        from audit.signing.publish import log_to_mlflow
        from audit.sources import resolve_store
        from audit.sources.locations import allowing

        # Uploads go where an audit would read: the run's author chose its artifact location.
        store = allowing(
            resolve_store(tracking_uri or store_uri(bundle.result.get("store"))),
            args.allow_artifact_location,
        )
        progress = Progress(sys.stderr)
        written = log_to_mlflow(store, bundle, progress.update)
        progress.done()
        print(f"Logged the signed folder to {written} runs in {store.display} (artifacts audit/)")


def _run_keygen(args: argparse.Namespace) -> int:
    from audit.formats.text import safe_line
    from audit.signing.keys import (
        CERT_FILE,
        DEFAULT_VALIDITY_DAYS,
        colon_fingerprint,
        generate,
        parse_subject,
        save,
    )

    subject = parse_subject(args.subject)
    folder = Path(args.out)
    if folder.exists() and not folder.is_dir():
        raise AuditError(f"--out {folder}: exists and is not a folder")
    passphrase = read_passphrase(
        args.passphrase_env, "Passphrase for the new key: ", path=folder, confirm=True
    )
    key = generate(subject, key_type=args.key_type, days=args.days or DEFAULT_VALIDITY_DAYS)
    p12 = save(key, folder, passphrase, force=args.force)
    certificate = key.certificate
    print(f"Wrote {p12} (private key and certificate, encrypted with the passphrase)")
    print(f"  and {folder / CERT_FILE} (the certificate: reviewers verify with --cert)")
    print(f"Subject:  {safe_line(key.subject)}")
    print(
        f"Valid:    {certificate.not_valid_before_utc:%Y-%m-%d} to "
        f"{certificate.not_valid_after_utc:%Y-%m-%d}"
    )
    print(f"SHA-256:  {colon_fingerprint(key.fingerprint)}")
    print(
        "The certificate is self-signed: tell reviewers its fingerprint through another channel, "
        "or use one from your organisation's CA."
    )
    if args.key_type == "ecdsa-p256":
        tell(
            "warning",
            "PDFs signed with an ECDSA key become PDF 2.0 and are no longer PDF/A-3b; use an "
            "RSA key for archival documents",
        )
    return EXIT_OK


def _run_sign(args: argparse.Namespace) -> int:
    from audit.signing import sign_folder

    folder = Path(args.folder)
    if not folder.is_dir():
        raise AuditError(f"{folder}: not a folder")
    from audit.signing.bundle import read_result

    result = read_result(folder)  # a folder that cannot be signed fails before the prompt
    if args.log_to_mlflow:
        from audit.signing.bundle import store_uri
        from audit.signing.publish import check_can_log
        from audit.sources import resolve_store

        check_can_log(resolve_store(args.tracking_uri or store_uri(result.get("store"))))
    key = _signing_key(args)
    progress = Progress(sys.stderr)
    bundle = sign_folder(
        folder,
        key,
        _sign_options(args),
        on_file=lambda done, total: progress.documents(done, total, "signing"),
    )
    progress.done()
    _tell_signed(args, bundle, tracking_uri=args.tracking_uri)
    return EXIT_OK


def _run_verify(args: argparse.Namespace) -> int:
    import json

    from audit.signing import verify
    from audit.signing.keys import load_certificates, require_pyhanko

    require_pyhanko()
    trusted = [c for path in args.cert for c in load_certificates(Path(path))]
    progress = Progress(sys.stderr)
    outcome = verify(
        Path(args.path),
        trusted,
        against_store=args.against_store,
        tracking_uri=args.tracking_uri,
        source=args.source,
        on_run=progress.update,
        allow_artifact_locations=args.allow_artifact_location,
    )
    progress.done()
    if args.format == "json":
        sys.stdout.write(json.dumps(outcome.to_dict(), indent=2) + "\n")
        return outcome.exit_code
    from audit.signing.verify import describe

    sys.stdout.write(describe(outcome))
    return outcome.exit_code


def _run_policy(args: argparse.Namespace) -> int:
    import json

    from audit.policy import builtin_policy_names, load_policy

    if args.policy_command == "list":
        for name in builtin_policy_names():
            policy = load_policy(name)
            default = " (default)" if name == "eu-ai-act-high-risk" else ""
            print(f"{name}{default}  v{policy.version}  {len(policy.rules)} rules")
            print(f"  {policy.title}")
        return EXIT_OK
    policy = load_policy(args.policy)
    if args.policy_command == "validate":
        print(
            f"{policy.origin}: valid policy {policy.name!r}, {len(policy.rules)} rules, "
            f"sha256 {policy.sha256}"
        )
        return EXIT_OK
    if args.schema:
        print(json.dumps(policy.document, indent=2, ensure_ascii=False))
        return EXIT_OK
    from audit.formats.table import wrap
    from audit.provisions import load_catalog

    catalog = load_catalog()
    lines = [f"{policy.name}  v{policy.version}  {policy.origin}", f"sha256 {policy.sha256}"]
    if policy.title:
        lines += wrap(policy.title, "")
    for rule in policy.rules:
        lines += ["", f"{rule.severity:<8}{rule.id}  [{rule.category}]"]
        lines += wrap(rule.title, " " * 8)
        lines += wrap(f"gap: {rule.gap_text}", " " * 8, hang=5)
        if rule.not_applicable:
            lines += wrap(f"not applicable when: {rule.not_applicable}", " " * 8, hang=21)
        if rule.unknown:
            lines += wrap(f"unknown when: {rule.unknown}", " " * 8, hang=14)
        citations = ", ".join(catalog[p].citation for p in rule.provisions)
        if citations:
            lines += wrap(f"relevant to: {citations}", " " * 8, hang=13)
        lines += wrap(f"fix: {rule.remediation}", " " * 8, hang=5)
    print("\n".join(lines))
    return EXIT_OK


def _run_provisions(args: argparse.Namespace) -> int:
    import json

    from audit.provisions import load_catalog

    catalog = load_catalog()
    if args.framework and args.framework not in catalog.frameworks:
        raise AuditError(
            f"unknown framework {args.framework!r}; choose from {', '.join(catalog.frameworks)}"
        )
    frameworks = [f for f in catalog.frameworks.values() if args.framework in (None, f.id)]
    if args.format == "json":
        print(
            json.dumps(
                [
                    {
                        "framework": framework.id,
                        "title": framework.title,
                        "text_version": framework.text_version,
                        "link": framework.link,
                        "provisions": [
                            p.to_dict()
                            for p in catalog.provisions.values()
                            if p.framework == framework.id
                        ],
                    }
                    for framework in frameworks
                ],
                indent=2,
                ensure_ascii=False,
            )
        )
        return EXIT_OK
    from audit.formats.table import wrap

    lines: list[str] = []
    for framework in frameworks:
        lines += wrap(framework.title, "")
        lines += wrap(f"text: {framework.text_version}", "  ", hang=6)
        for provision in catalog.provisions.values():
            if provision.framework == framework.id:
                lines += wrap(f"{provision.citation:<24}{provision.title}", "  ", hang=24)
                lines.append(f"  {'':<24}id {provision.id}")
        lines.append("")
    print("\n".join(lines))
    return EXIT_OK


# --------------------------------------------------------------------------- plumbing


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_INCOMPLETE
    handlers = {
        "check": _run_check,
        "report": _run_report,
        "keygen": _run_keygen,
        "sign": _run_sign,
        "verify": _run_verify,
        "config": _run_config,
        "policy": _run_policy,
        "provisions": _run_provisions,
        **{name: module.run for name, module in COMMAND_MODULES.items()},
    }
    try:
        return handlers[args.command](args)
    except AuditError as error:
        if args.debug:
            raise
        tell("error", str(error))
        return EXIT_INCOMPLETE
    except KeyboardInterrupt:
        print("mlflow-audit: interrupted; the audit is incomplete", file=sys.stderr)
        return EXIT_INCOMPLETE
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): the output is incomplete, so is the audit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_INCOMPLETE
    except Exception as error:
        if args.debug:
            raise
        tell(
            "error",
            f"unexpected {type(error).__name__}: {first_line(error)} (run with --debug for the "
            "traceback)",
        )
        return EXIT_INCOMPLETE
