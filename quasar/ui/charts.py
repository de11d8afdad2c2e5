"""Small inline SVG charts, drawn on the server: a histogram of a feature's values (or lengths) and the bars of
a string feature's most frequent values."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

W, H, AXIS = 300, 96, 16


def _num(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def histogram_svg(feature: str, counts: Sequence[int], edges: Sequence[Any], labels: Sequence[str] | None = None,
                  of: str = "values") -> str:
    """``counts[i]`` rows in ``[edges[i], edges[i + 1])`` (the last bin closed) as bars: an ``svg.histogram``
    (``data-feature``) with one ``rect.bar`` per bin (``data-count``), the first and last edge under it.
    ``labels`` (two) replace the edges' text, e.g. dates for a timestamp feature."""
    bins = len(counts)
    top = max(counts, default=0) or 1
    plot = H - AXIS
    width = (W - 2) / max(bins, 1)
    lo, hi = (labels or [_num(edges[0]), _num(edges[-1])]) if edges else ("", "")
    parts = [f'<svg class="histogram" data-feature="{escape(feature)}" xmlns="http://www.w3.org/2000/svg" '
             f'width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img" '
             f'aria-label="histogram of {escape(feature)} {escape(of)}">',
             f'<line x1="0" y1="{plot}" x2="{W}" y2="{plot}" stroke="#94a3b8"/>']
    for i, count in enumerate(counts):
        h = round((plot - 4) * count / top, 1)
        x = round(1 + i * width, 1)
        span = f"[{_num(edges[i])}, {_num(edges[i + 1])}{']' if i == bins - 1 else ')'}" if edges else ""
        parts.append(f'<rect class="bar" data-count="{count}" x="{x}" y="{round(plot - h, 1)}" '
                     f'width="{max(round(width - 1, 1), 1)}" height="{h}"><title>{escape(span)}: {count:,} '
                     f'row{"s" * (count != 1)}</title></rect>')
    parts.append(f'<text x="1" y="{H - 3}" class="axis">{escape(str(lo))}</text>'
                 f'<text x="{W - 1}" y="{H - 3}" class="axis" text-anchor="end">{escape(str(hi))}</text></svg>')
    return "".join(parts)


def top_values_svg(feature: str, top: Sequence[tuple[Any, int]], rows: int) -> str:
    """A string feature's most frequent values as horizontal bars (``svg.topvalues``, one ``rect.bar`` each)."""
    line = 17
    height = line * max(len(top), 1) + 4
    most = max((c for _, c in top), default=0) or 1
    parts = [f'<svg class="topvalues" data-feature="{escape(feature)}" xmlns="http://www.w3.org/2000/svg" '
             f'width="{W}" height="{height}" viewBox="0 0 {W} {height}" role="img" '
             f'aria-label="most frequent values of {escape(feature)}">']
    for i, (value, count) in enumerate(top):
        y = 2 + i * line
        bar = round((W - 130) * count / most, 1)
        share = f"{count / rows:.0%}" if rows else ""
        text = "null" if value is None else str(value)
        text = text if len(text) <= 14 else text[:13] + "…"
        parts.append(f'<text x="0" y="{y + 12}" class="axis">{escape(text)}</text>'
                     f'<rect class="bar" data-count="{count}" x="92" y="{y + 2}" width="{max(bar, 1)}" '
                     f'height="{line - 5}"><title>{escape(str(value))}: {count:,}</title></rect>'
                     f'<text x="{96 + bar}" y="{y + 12}" class="axis">{count:,} {share}</text>')
    parts.append("</svg>")
    return "".join(parts)
