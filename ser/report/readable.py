"""Notebook output and mathematics as a reader should see them, offline.

- :func:`plain_progress` turns a notebook's ``stderr`` stream outputs (progress bars,
  library warnings) into plain text output: a progress bar keeps only its final state
  and the rest reads as ordinary printed output, never as an error-styled box.
- :func:`inline_math` renders simple TeX between ``$…$`` (``$T$``, ``$T > 1$``,
  ``$x^2$``, ``$\\alpha$``) as HTML, so formulas read correctly without MathJax or any
  other network resource; the fallback renderer applies it to every markdown text.
"""

from __future__ import annotations

import html
import re

import nbformat

_BAR = re.compile(r"\d+%\|.*\||\d+/\d+ \[\d|it/s\]|s/it\]")


def _final_state(text: str) -> str:
    """What a terminal shows of ``text``: each line's last carriage-return segment, and of
    consecutive progress-bar lines only the last."""
    lines = [seg.split("\r")[-1] if "\r" in seg.rstrip("\r") else seg.rstrip("\r")
             for seg in text.split("\n")]
    out: list[str] = []
    for line in lines:
        if out and _BAR.search(line) and _BAR.search(out[-1]):
            out[-1] = line
        else:
            out.append(line)
    return "\n".join(out)


def plain_progress(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Turn ``stderr`` stream outputs of ``nb`` into plain ``stdout`` text, in place.

    Progress bars keep their final state; empty outputs are dropped. Error outputs
    (tracebacks) are left alone: a failed cell must still read as a failure.

    Returns:
        ``nb``.
    """
    for cell in nb.cells:
        if cell.get("cell_type") != "code":
            continue
        kept = []
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                text = _final_state("".join(out["text"]) if isinstance(out["text"], list)
                                    else str(out["text"]))
                if not text.strip():
                    continue
                out["name"] = "stdout"
                out["text"] = text
            kept.append(out)
        cell["outputs"] = kept
    return nb


_SYMBOLS = {
    "alpha": "α", "beta": "β", "gamma": "γ", "delta": "δ", "Delta": "Δ", "epsilon": "ε",
    "theta": "θ", "lambda": "λ", "mu": "μ", "pi": "π", "rho": "ρ", "sigma": "σ",
    "Sigma": "Σ", "tau": "τ", "phi": "φ", "chi": "χ", "omega": "ω", "times": "×",
    "cdot": "·", "pm": "±", "le": "≤", "leq": "≤", "ge": "≥", "geq": "≥", "neq": "≠",
    "approx": "≈", "to": "→", "rightarrow": "→", "infty": "∞", "sum": "∑", "log": "log",
    "exp": "exp", "ln": "ln", "min": "min", "max": "max", "quad": " ", ",": " ",
}
# $…$ on one line, not $$, not an escaped \$, not a currency amount like "$5 and $6"
_INLINE = re.compile(r"(?<![\\$\w])\$(?!\s)([^$\n]+?)(?<![\s\\])\$(?![\w$])")


def _tex_to_html(tex: str) -> str:
    out = html.escape(tex, quote=False)
    out = re.sub(r"\\(?:text|mathrm|operatorname)\{([^{}]*)\}", r"\1", out)
    out = re.sub(r"\\frac\{([^{}]*)\}\{([^{}]*)\}", r"(\1)/(\2)", out)
    out = re.sub(r"\\sqrt\{([^{}]*)\}", r"√(\1)", out)
    out = re.sub(r"\\([A-Za-z]+|,)", lambda m: _SYMBOLS.get(m.group(1), m.group(1)), out)
    out = re.sub(r"\^\{([^{}]*)\}|\^(\S)", lambda m: f"<sup>{m.group(1) or m.group(2)}</sup>", out)
    out = re.sub(r"_\{([^{}]*)\}|_(\S)", lambda m: f"<sub>{m.group(1) or m.group(2)}</sub>", out)
    out = out.replace("{", "").replace("}", "")
    # single Latin letters are variables: italic, as TeX sets them
    out = re.sub(r"(?<![&\w<>/])([A-Za-z])(?![\w;>])", r"<i>\1</i>", out)
    return out


def inline_math(text: str) -> str:
    """Replace simple inline TeX ``$…$`` in markdown by HTML (no script, no network).

    Code spans and fenced code blocks are left untouched.

    Example:
        >>> inline_math("divides by $T > 1$")
        'divides by <span class="ser-math"><i>T</i> &gt; 1</span>'
    """
    parts = re.split(r"(```.*?```|`[^`\n]*`)", text, flags=re.DOTALL)
    for i in range(0, len(parts), 2):
        parts[i] = _INLINE.sub(lambda m: f'<span class="ser-math">{_tex_to_html(m.group(1))}</span>',
                               parts[i])
    return "".join(parts)
