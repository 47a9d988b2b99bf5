"""Text from MLflow as every output shows it: untrusted, so nothing in it may act as control.

Run names, experiment names, params and tags are free text anyone with write access to the
tracking store chooses. A terminal or a CI log interprets escape sequences, a Markdown viewer
reorders text after a bidirectional override, XML 1.0 rejects most control characters outright.
`visible` turns all of those into their escaped spelling (``\\x1b``, ``\\u202e``), which keeps the
value recognisable, unlike dropping the characters, and distinct from a name without them.
"""

from __future__ import annotations

import re

# C0 controls but tab and newline (each format decides about those), DEL and C1; the Unicode
# bidirectional controls (Trojan Source, CVE-2021-42574) and line/paragraph separators; lone
# surrogates and U+FFFE/U+FFFF, which XML 1.0 does not allow and UTF-8 cannot encode.
_INVISIBLE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
    "\u2028\u2029\ud800-\udfff\ufffe\uffff]"
)


def visible(text: str) -> str:
    """`text` with every control character written out as an escape."""
    return _INVISIBLE.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def one_line(text: str) -> str:
    """`visible` on one line: for places where a line break would end the field."""
    return visible(text).replace("\t", " ").replace("\n", " ")


def safe_line(text: str) -> str:
    """A line for a terminal or a CI log that holds untrusted text: every control character
    escaped, line breaks as ``\\n`` so that it stays one line and nothing in it can start a
    new one (``::error::`` or ``::add-mask::`` read by GitHub Actions at the start of a line),
    and the legacy ``##[command]`` the runner reads anywhere in a line defused."""
    return visible(text.replace("\n", "\\n")).replace("##[", "\\x23#[")


# A word that starts like a workflow command: it may become the start of a wrapped line.
_COMMAND_AT_WORD = re.compile(r"(?<=\s)::")


def safe_wrapped(text: str, width: int = 100, hang: int = 6) -> list[str]:
    """`safe_line`, wrapped at `width` with continuation lines indented by `hang`. GitHub
    Actions reads a workflow command after leading spaces too, so a continuation line never
    starts with ``::``."""
    import textwrap

    lines = textwrap.wrap(
        _COMMAND_AT_WORD.sub(r"\\x3a:", safe_line(text)),
        width=width,
        subsequent_indent=" " * hang,
        break_long_words=True,
        break_on_hyphens=False,
    ) or [""]
    return [lines[0]] + [
        line.replace("::", "\\x3a:", 1) if line.lstrip().startswith("::") else line
        for line in lines[1:]
    ]


def plural(number: int, noun: str, plural_form: str | None = None) -> str:
    return f"{number} {noun if number == 1 else plural_form or noun + 's'}"


def shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
