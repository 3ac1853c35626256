"""The run's output as HTML: each committed token coloured by origin and grouped by step.

Accepted draft tokens are green and the target's bonus tokens amber. Consecutive steps alternate
between a light and a darker shade of each, and hovering a token shows its step. Styles are inline
because Gradio's HTML component scopes class-based CSS unpredictably across versions.
"""

from __future__ import annotations

import html

from mambaviz.trace import StepRecord, Trace

# origin: (shade on even steps, shade on odd steps)
SHADES = {
    "accepted": ("#c9ecd0", "#9bd8a8"),
    "bonus": ("#ffe3a3", "#ffc95c"),
}
TEXT_STYLE = ("font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 14px;"
              " line-height: 1.7; white-space: pre-wrap; word-break: break-word; color: #1b1b1b;"
              " background: #ffffff; padding: 10px; border-radius: 6px; border: 1px solid #ddd;")
GLYPH_STYLE = "color: #8a8a8a;"


def token_html(text: str) -> str:
    """Escape a token's text for a pre-wrapped block, marking newlines, tabs and carriage returns with glyphs.

    Spaces stay spaces: the token's background already shows them. A newline keeps its line break
    after the ↵ glyph so the text keeps its layout.
    """
    parts = []
    for char in text:
        if char == "\n":
            parts.append(f'<span style="{GLYPH_STYLE}">↵</span>\n')
        elif char == "\t":
            parts.append(f'<span style="{GLYPH_STYLE}">⇥</span>\t')
        elif char == "\r":
            parts.append(f'<span style="{GLYPH_STYLE}">␍</span>')
        else:
            parts.append(html.escape(char))
    return "".join(parts)


def token_origins(step: StepRecord) -> list[str]:
    """Return 'accepted' or 'bonus' for each committed token of a step.

    The first tokens are the accepted draft tokens and the one after them is the bonus token. A stop
    at EOS or at the token limit may cut either.
    """
    return ["accepted" if position < len(step.accepted) else "bonus" for position in range(len(step.committed))]


def step_html(step: StepRecord) -> str:
    shade = step.index % 2
    spans = []
    for text, origin in zip(step.committed_text, token_origins(step)):
        description = "accepted draft token" if origin == "accepted" else "bonus token from the target"
        title = html.escape(f"step {step.index + 1}: {description}")
        colour = SHADES[origin][shade]
        spans.append(f'<span title="{title}" data-step="{step.index + 1}" data-origin="{origin}"'
                     f' style="background: {colour}; border-radius: 2px;">{token_html(text)}</span>')
    return "".join(spans)


def legend_html() -> str:
    swatch = "display: inline-block; padding: 0 6px; border-radius: 3px; margin-right: 8px;"
    return (f'<div style="font-size: 13px; margin-bottom: 6px; color: inherit;">'
            f'<span style="{swatch} background: {SHADES["accepted"][0]}; color: #1b1b1b;">accepted draft token</span>'
            f'<span style="{swatch} background: {SHADES["bonus"][0]}; color: #1b1b1b;">bonus token (target)</span>'
            f'<span style="color: #8a8a8a;">shades alternate by step; hover a token for its step; '
            f'<span style="color: #8a8a8a;">↵ ⇥</span> mark newlines and tabs</span></div>')


def output_html(trace: Trace, steps: int | None = None) -> str:
    """Render the prompt (grey) followed by the committed tokens of the first `steps` steps (all by default)."""
    prompt = trace.settings.get("prompt", "")
    shown = trace.steps if steps is None else trace.steps[:steps]
    body = "".join(step_html(step) for step in shown)
    return (legend_html()
            + f'<div class="mambaviz-output" style="{TEXT_STYLE}">'
            + f'<span style="color: #7a7a7a;" title="prompt">{token_html(prompt)}</span>{body}</div>')
