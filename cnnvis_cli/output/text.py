"""Text that came from the user's file system, made safe for where it is shown.

File names may hold anything but ``/`` and NUL: escape sequences that would clear the user's
screen, control characters that XML 1.0 forbids, bytes that are not UTF-8 (Python keeps them as
lone surrogates, ``surrogateescape``). Each output gets a visible, unambiguous spelling instead:

- terminal: control characters as ``\\x1b``, ``\\n``...; undecodable bytes as ``\\xff``;
- XML (JUnit): characters XML 1.0 cannot hold as ``\\uXXXX`` text;
- JSON: written with ``ensure_ascii=False`` and encoded with ``backslashreplace``, so an
  undecodable byte becomes the JSON escape ``\\udcff`` (see ``output.summary``).
"""

from __future__ import annotations

import re

_SURROGATE_ESCAPE = range(0xDC80, 0xDD00)  # how Python keeps an undecodable byte
_XML_FORBIDDEN = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def printable(text: object) -> str:
    """``text`` with control characters and undecodable bytes spelled out, for a terminal."""
    out = []
    for char in str(text):
        code = ord(char)
        if code in _SURROGATE_ESCAPE:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code < 0x20 or code == 0x7F or 0x80 <= code < 0xA0 or 0xD800 <= code < 0xE000:
            out.append(repr(char)[1:-1])
        else:
            out.append(char)
    return "".join(out)


def xml_safe(text: object) -> str:
    """``text`` with every character XML 1.0 forbids replaced by its ``\\uXXXX`` spelling."""
    return _XML_FORBIDDEN.sub(lambda match: f"\\u{ord(match.group()):04x}", str(text))
