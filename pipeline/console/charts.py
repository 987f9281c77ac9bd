"""Per-rule alert counts as a small inline SVG (no chart library, no script)."""

from __future__ import annotations

from html import escape

from pipeline.history.store import RuleCounts

COLOURS = ("#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#be185d", "#4b5563")


def rule_counts_svg(counts: RuleCounts, width: int = 720, height: int = 160) -> str:
    """One polyline per rule over the buckets, a legend, and the peak value on the axis."""
    if not counts.by_rule:
        return '<p class="muted">no alerts in the last 24 h</p>'
    peak = max(max(series) for series in counts.by_rule.values()) or 1
    left, bottom, top = 30, height - 20, 10
    step = (width - left - 10) / max(1, counts.buckets - 1)
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img"'
             ' aria-label="alerts per rule per hour, last 24 h">',
             f'<line x1="{left}" y1="{bottom}" x2="{width - 10}" y2="{bottom}" stroke="#999"/>',
             f'<text x="2" y="{top + 8}" font-size="10">{peak}</text><text x="2" y="{bottom}" font-size="10">0</text>',
             f'<text x="{left}" y="{height - 4}" font-size="10">-24 h</text>'
             f'<text x="{width - 40}" y="{height - 4}" font-size="10">now</text>']  # fmt: skip
    for i, (rule, series) in enumerate(sorted(counts.by_rule.items())):
        colour = COLOURS[i % len(COLOURS)]
        points = " ".join(
            f"{left + j * step:.1f},{bottom - (bottom - top) * n / peak:.1f}" for j, n in enumerate(series)
        )
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}">'
                     f"<title>{escape(rule)}: {sum(series)}</title></polyline>")  # fmt: skip
        parts.append(f'<text x="{left + 10 + 150 * i}" y="{top + 10}" font-size="11" fill="{colour}" '
                     f'class="legend">{escape(rule)} ({sum(series)})</text>')  # fmt: skip
    parts.append("</svg>")
    return "".join(parts)
