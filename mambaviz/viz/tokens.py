"""Token text made safe and visible for HTML and Plotly labels.

Plotly renders a subset of HTML in labels and hover text, and Gradio's HTML component renders raw
HTML, so every token text goes through `html.escape` here before it reaches either. Quotes stay
unescaped: these strings never go into an HTML attribute, and Plotly 7 shows `&quot;` literally.
"""

from __future__ import annotations

import html

# Glyphs for whitespace and control characters, which would otherwise be invisible or break a label.
# C0 controls other than tab and newline map to their Unicode "control pictures" (U+2400 + code).
_GLYPHS = {" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍", "\x7f": "␡"}
_GLYPHS.update({chr(code): chr(0x2400 + code) for code in range(0x20) if chr(code) not in _GLYPHS})
_GLYPH_TABLE = str.maketrans(_GLYPHS)


def visible(text: str) -> str:
    """Replace whitespace and control characters with visible glyphs (␣ ↵ ⇥ …); the result is not escaped."""
    return text.translate(_GLYPH_TABLE)


def shorten(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"


def label(text: str, max_chars: int = 12) -> str:
    """Return a token's text as an escaped, whitespace-visible label of at most `max_chars` glyphs."""
    return html.escape(shorten(visible(text), max_chars), quote=False)


def quoted(text: str, max_chars: int = 40) -> str:
    """Return a token's text for hover and tables: visible glyphs, escaped, between quotes."""
    return "“" + html.escape(shorten(visible(text), max_chars), quote=False) + "”"
