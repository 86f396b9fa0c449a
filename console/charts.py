"""Small server-rendered SVG charts: no JavaScript library, nothing fetched from a CDN."""

from __future__ import annotations

from collections.abc import Sequence

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString


def bar_chart(
    points: Sequence[tuple[str, float]], *, title: str, unit: str = "", width: int = 720, height: int = 140
) -> SafeString:
    """Bars for (label, value) points, each with a tooltip; an empty chart says there is no data."""
    if not points:
        return format_html('<p class="muted" data-chart="{}">No data for this period.</p>', title)
    top = max(value for _, value in points) or 1.0
    step = width / len(points)
    bar = max(step * 0.8, 1.0)
    scale = (height - 14) / top  # room above the tallest bar for the "max" label
    bars = format_html_join(
        "",
        '<rect x="{}" y="{}" width="{}" height="{}"><title>{}: {} {}</title></rect>',
        (
            (
                f"{i * step:.1f}",
                f"{height - value * scale:.1f}",
                f"{bar:.1f}",
                f"{value * scale:.1f}",
                label,
                _num(value),
                unit,
            )
            for i, (label, value) in enumerate(points)
        ),
    )
    return format_html(
        '<svg class="chart" role="img" aria-label="{}" data-chart="{}" viewBox="0 0 {} {}" '
        'preserveAspectRatio="none" width="100%" height="{}">'
        '<text x="0" y="10" class="chart-max">max {} {}</text>{}</svg>',
        title, title, width, height, height, _num(top), unit, bars,
    )  # fmt: skip


def _num(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 or value == int(value) else f"{value:.2f}"
