"""`mlflow-audit export --format FORMAT`: the audit's facts in formats other tools read."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from audit.cliparser import fill
from audit.commands.options import (
    add_audit_arguments,
    add_key_arguments,
    audit_options,
    configure,
    signing_key,
)
from audit.commands.output import Progress, emit, warn_about_waivers
from audit.errors import AuditError

if TYPE_CHECKING:
    from audit.api import ExportFiles

#: The choices of --format (as `audit.exports.EXPORT_FORMATS`, without importing it at start).
FORMATS = ("cyclonedx", "spdx", "oscal", "model-card")

_EPILOG = """\
formats:
  cyclonedx   CycloneDX 1.6 ML-BOM (JSON; 1.7 with --cyclonedx-version 1.7) per
              run or model version: the model with its model card, datasets with
              their digests, packages with purls, how it was trained, the
              policy's outcomes as declarations.
              Read by Dependency-Track, sbom-tools and other SBOM platforms.
  spdx        SPDX 3.0.1 (JSON-LD) with the AI and Dataset profiles per run or
              model version: AIPackage, DatasetPackages, trainedOn / testedOn.
  oscal       OSCAL 1.1.3 assessment results (JSON), one for the whole audit: an
              observation per evidence item, a finding per failed rule with its
              provision as the target. Imported by GRC tools that read OSCAL.
  model-card  Hugging Face model card (README.md with YAML metadata; model-index
              holds the evaluation results with their datasets) per subject.

output:
  Without -o, or with -o FILE, the export is one document: one run or model
  version (or any selection with --format oscal). With -o DIR/ (an existing
  folder, or a path ending in /) every subject gets its own document:
  NAME-vVERSION or RUN_ID, with the format's ending (a model card is
  DIR/NAME-vVERSION/README.md). Documents are written when the audit has
  completed, together; an export that fails leaves DIR as it was.

examples:
  mlflow-audit export -f cyclonedx --model churn-classifier@champion \\
      -o bom.cdx.json
  mlflow-audit export --format spdx -e churn-model -o exports/
  mlflow-audit export --format oscal -o assessment-results.json
  mlflow-audit export --format model-card --model churn-classifier/3 \\
      --system-card system-card.yaml -o README.md

exit codes:
  0  exported (and the gate, when --fail-on asks for one, passed)
  1  exported, and the gate failed (--fail-on, --min-score)
  2  the export could not be made (store, selection, policy, writing)
"""


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "export",
        help="export the audit as CycloneDX, SPDX 3, OSCAL or model cards",
        description=fill(
            "Audit the selected runs or model versions (as check does) and export what "
            "MLflow holds and what the policy found in a format other tools read: a "
            "CycloneDX ML-BOM, an SPDX 3 AI/Dataset document or a Hugging Face model card per "
            "subject, or OSCAL assessment results for the whole audit. The documents are "
            "made from the evidence records and the result alone; with the same MLflow data, "
            "policy and --date they are the same bytes. Credentials are redacted as in "
            "every other output."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_audit_arguments(parser, fail_on_default="never")
    output = parser.add_argument_group("output")
    output.add_argument(
        "-f",
        "--format",
        choices=FORMATS,
        required=True,
        metavar="FORMAT",
        help="cyclonedx, spdx, oscal or model-card (below)",
    )
    output.add_argument(
        "-o",
        "--output",
        metavar="FILE|DIR/",
        help="write to FILE (one document), or one document per subject into DIR/ (an "
        "existing folder or a path ending in /); default: stdout (one document)",
    )
    signing = parser.add_argument_group(
        "signing",
        fill(
            "With -o DIR/ only: the folder also gets the audit's result.json and an in-toto "
            "envelope over every file (audit.intoto.jsonl), as a signed report folder has; "
            "'mlflow-audit verify DIR --cert PEM' checks it offline."
        ),
    )
    signing.add_argument("--sign", dest="sign_key", metavar="KEY", help="PKCS#12 file or PEM key")
    add_key_arguments(signing)
    output.add_argument(
        "--cyclonedx-version",
        choices=("1.6", "1.7"),
        default="1.6",
        help="the CycloneDX version a BOM declares (default: 1.6; the document is valid 1.7 "
        "as well)",
    )
    output.add_argument(
        "--date",
        metavar="DATE",
        help="the date the documents carry (YYYY-MM-DD or an ISO 8601 time; default: now): "
        "give it to make an export reproducible",
    )


def run(args: argparse.Namespace) -> int:
    import tempfile

    from audit.api import export

    configure(args, "export")
    if args.fail_on is None:
        args.fail_on = "never"
    target = args.output
    into_folder = target is not None and (target.endswith(("/", "\\")) or Path(target).is_dir())
    if target is not None and not into_folder:
        if not Path(target).resolve().parent.is_dir():
            raise AuditError(f"cannot write {target}: its folder does not exist")
    elif into_folder and Path(target).exists() and not Path(target).is_dir():
        raise AuditError(f"--output {target}: exists and is not a folder")
    key = None
    if args.sign_key:
        if not into_folder:
            raise AuditError("--sign signs an export folder: give -o DIR/ as well")
        # Opened before the audit: a wrong passphrase must not cost a long one.
        key = signing_key(
            Path(args.sign_key),
            Path(args.signer_cert) if args.signer_cert else None,
            args.passphrase_env,
            pdf=False,
        )
    progress = Progress(sys.stderr)
    with tempfile.TemporaryDirectory(prefix="mlflow-audit-export-") as scratch:
        result, files = export(
            args.format,
            target if into_folder else scratch,
            args.tracking_uri,
            **audit_options(args),
            date=args.date,
            on_run=progress.update,
            sign_with=key,
            cyclonedx_version=args.cyclonedx_version,
        )
        progress.done()
        warn_about_waivers(result)
        if into_folder:
            _tell_exported(args.format, files)
            return result.exit_code
        if len(files.documents) != 1:
            raise AuditError(
                f"{len(result.runs)} subjects were selected and --format {args.format} writes "
                f"one document for each: give -o DIR/ to write them into a folder, or select "
                f"one run (--run-id) or model version (--model NAME/VERSION)"
            )
        document = (Path(scratch) / files.documents[0]).read_text(encoding="utf-8")
        emit([document], target)
        if target is not None:
            subjects = len(result.runs)
            print(
                f"Exported {args.format} ({subjects} subject{'s' if subjects != 1 else ''}) "
                f"to {target}",
                file=sys.stderr,
            )
    return result.exit_code


def _tell_exported(format_name: str, files: ExportFiles) -> None:
    documents = len(files.documents) - (2 if files.signed else 0)  # result.json, the envelope
    print(
        f"Exported {documents} {format_name} document{'s' if documents != 1 else ''} "
        f"into {files.folder}",
        file=sys.stderr,
    )
    if files.signed:
        print(
            f"  signed: {files.folder / 'audit.intoto.jsonl'} (with result.json); check it "
            f"with: mlflow-audit verify {files.folder} --cert CERT.pem",
            file=sys.stderr,
        )
