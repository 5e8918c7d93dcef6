"""The one rule for text that leaves specgraph: which characters are unsafe, and how they are shown.

Spec names are refused when they hold an unsafe character (``_schema``); every renderer and
emitter still passes spec-derived text through :func:`visible`, because a ``Plan`` can be
built or deserialised without the schema.

Unsafe: control characters (``Cc``: newlines, tabs, escape...), format characters (``Cf``:
bidi overrides such as U+202E, zero-width spaces and joiners, the BOM), line and paragraph
separators (``Zl``, ``Zp``), surrogates, private-use and unassigned code points, and the
non-characters U+FFFE / U+FFFF.
"""

from __future__ import annotations

import json
import re
import unicodedata
from functools import cache

__all__ = ["brief", "first_unsafe", "format_path", "visible"]

_UNSAFE_CATEGORIES = {"Cc": "a control character", "Cf": "a format character", "Cs": "a surrogate",
                      "Co": "a private-use character", "Cn": "an unassigned code point",
                      "Zl": "a line separator", "Zp": "a paragraph separator"}


def _unsafe(ch: str) -> bool:
    return unicodedata.category(ch) in _UNSAFE_CATEGORIES


@cache
def _pattern() -> re.Pattern[str]:
    # A class of the Basic Multilingual Plane's unsafe characters (built once, ~40 ms); astral
    # characters are matched wholesale and checked by category in the callers.
    bmp = "".join(re.escape(chr(c)) for c in range(0x10000) if _unsafe(chr(c)))
    return re.compile(f"[{bmp}]|[\U00010000-\U0010ffff]")


def _escape(match: re.Match[str]) -> str:
    ch = match.group()
    if not _unsafe(ch):  # an astral character that is an ordinary letter or symbol
        return ch
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def visible(text: str) -> str:
    """``text`` with every unsafe character replaced by its escape (``\\n`` -> ``\\x0a``, U+202E ->
    ``\\u202e``): one line, no hidden or reordering characters. Other text is unchanged."""
    return _pattern().sub(_escape, str(text))


def first_unsafe(text: str) -> str | None:
    """The first unsafe character of ``text`` as ``U+XXXX (NAME)``, or None when there is none."""
    for match in _pattern().finditer(text):
        ch = match.group()
        if _unsafe(ch):
            name = unicodedata.name(ch, _UNSAFE_CATEGORIES[unicodedata.category(ch)])
            return f"U+{ord(ch):04X} ({name})"
    return None


def brief(value: object, limit: int = 80) -> str:
    """``repr(value)`` for an error message: visible, at most ``limit`` characters, and safe for
    integers too long for ``repr`` (Python refuses more than 4,300 digits)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1:,} digits"
    text = visible(repr(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def format_path(loc: tuple | list) -> str:
    """``('blocks', 7, 'inputs', 1)`` -> ``blocks[7].inputs[1]``."""
    out = ""
    for i, part in enumerate(loc):
        if i == 1 and loc[0] == "filters" and isinstance(part, str) and re.fullmatch("-?[0-9]+", part):
            part = int(part)  # a level key, whether the format wrote it as a number or a string
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        else:
            part = str(part)
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part):
                part = json.dumps(part)
            out += f".{part}" if out else part
    return out
