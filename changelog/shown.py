"""Text from outside (keys, attribute names, values, store paths) as a person should see it.

A table's writer controls its items: a line break in a key shown in an SQL comment starts a
statement of its own, a terminal escape rewrites the screen, and a right-to-left override makes
``pk=order-1`` read as another key. Shown text keeps every other character and turns control and
format characters (Unicode categories Cc and Cf) into ``\\uXXXX``, so that it is seen, not obeyed.
"""

from __future__ import annotations

import unicodedata


def visible(text: str) -> str:
    """``text`` with each control or format character written as ``\\uXXXX`` (``\\UXXXXXXXX`` above the BMP)."""
    return "".join(_shown(character) for character in text)


def _shown(character: str) -> str:
    if unicodedata.category(character) not in ("Cc", "Cf"):
        return character
    code = ord(character)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
