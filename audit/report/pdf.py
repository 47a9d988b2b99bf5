"""PDF rendering with WeasyPrint: PDF/A-3b with the evidence inside, and nothing fetched from
outside the templates' own folders.

Identical inputs give an identical PDF: the document identifier and every date come from the
inputs (the HTML and `--date`), never from the clock.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from audit.errors import AuditError, first_line

PDF_VARIANT = "pdf/a-3b"


@dataclass(frozen=True)
class EmbeddedFile:
    """A file carried inside the PDF as a PDF/A-3 associated file."""

    name: str
    content: bytes
    description: str
    media_type: str = "application/json"


def import_weasyprint() -> Any:
    """WeasyPrint, or a one-line reason why the PDF cannot be made here."""
    try:
        import weasyprint
    except ImportError:
        raise AuditError(
            "PDF output needs WeasyPrint (pip install weasyprint); use --no-pdf for HTML only"
        ) from None
    except OSError as error:  # Pango or its fonts missing from the system
        raise AuditError(
            "PDF output needs the Pango library (Debian/Ubuntu: apt install libpango-1.0-0 "
            f"libpangoft2-1.0-0 fonts-dejavu-core); {first_line(error)}. Use --no-pdf for "
            "HTML only"
        ) from None
    # WeasyPrint logs every refused fetch and unsupported CSS property as a warning; the
    # fetcher below reports refusals itself.
    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    return weasyprint


def fetcher_class(allowed_roots: Sequence[Path]) -> Any:
    """A WeasyPrint URL fetcher that serves files under `allowed_roots` and refuses the rest:
    no network, no file:// elsewhere on the machine, whatever the HTML asks for."""
    weasyprint = import_weasyprint()
    from weasyprint.urls import FatalURLFetchingError, URLFetcher, URLFetcherResponse

    roots = tuple(root.resolve() for root in allowed_roots)

    class ProjectAssetsFetcher(URLFetcher):  # type: ignore[misc]
        refused: list[str]

        def __init__(self) -> None:
            super().__init__(allowed_protocols=("file",), allow_redirects=False)
            self.refused = []

        def fetch(self, url: str, headers: Any = None) -> Any:
            parts = urlsplit(url)
            if parts.scheme == "file" and not parts.netloc:
                path = Path(unquote(parts.path)).resolve()
                if any(path.is_relative_to(root) for root in roots) and path.is_file():
                    return URLFetcherResponse(url, body=path.read_bytes())
            self.refused.append(url[:200])
            raise FatalURLFetchingError(f"refused to fetch {url[:200]}")

    del weasyprint
    return ProjectAssetsFetcher


def write_pdf(
    html: str,
    target: Path,
    *,
    base_dir: Path,
    allowed_roots: Sequence[Path],
    attachments: Iterable[EmbeddedFile],
    date: datetime,
) -> None:
    """Render `html` to a PDF/A-3b file at `target`. Title, author, subject and keywords come
    from the HTML's <title> and <meta> elements."""
    weasyprint = import_weasyprint()
    from weasyprint.urls import FatalURLFetchingError

    fetcher = fetcher_class(allowed_roots)()
    # The date becomes naive UTC: WeasyPrint writes attachment dates with a literal "Z".
    stamp = date.replace(tzinfo=None)
    identifier = hashlib.sha256(html.encode("utf-8")).hexdigest()[:32].encode("ascii")
    try:
        with _source_date(date):
            files = [
                weasyprint.Attachment(
                    string=item.content,
                    name=item.name,
                    description=item.description,
                    created=stamp,
                    modified=stamp,
                    relationship="Data",
                    url_fetcher=fetcher,
                )
                for item in attachments
            ]
            document = weasyprint.HTML(
                string=html, base_url=base_dir.resolve().as_uri() + "/", url_fetcher=fetcher
            )
            document.write_pdf(
                target, pdf_variant=PDF_VARIANT, pdf_identifier=identifier, attachments=files
            )
    except (Exception, FatalURLFetchingError) as error:  # the latter is a BaseException
        if fetcher.refused:
            # Whatever asked for it (a custom template, a stylesheet), the document would differ
            # from its HTML or leak a fetch: no PDF rather than that.
            raise AuditError(
                f"{target.name}: refused to load {fetcher.refused[0]} (documents may only use "
                "files from the template folders)"
            ) from None
        raise AuditError(f"cannot render {target.name}: {first_line(error)}") from None


@contextlib.contextmanager
def _source_date(date: datetime) -> Iterator[None]:
    """fontTools stamps embedded font subsets with the current time unless SOURCE_DATE_EPOCH
    (the reproducible-builds convention) says otherwise."""
    previous = os.environ.get("SOURCE_DATE_EPOCH")
    os.environ["SOURCE_DATE_EPOCH"] = str(int(date.timestamp()))
    try:
        yield
    finally:
        if previous is None:
            del os.environ["SOURCE_DATE_EPOCH"]
        else:
            os.environ["SOURCE_DATE_EPOCH"] = previous
