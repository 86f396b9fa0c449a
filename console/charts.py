"""Small server-rendered SVG charts: no JavaScript library, nothing fetched from a CDN."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from django.utils.html import escape, format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe


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


# --- A queue's GPU use over time: one panel per flavor, the used line under the quota line ---
WIDTH, HEIGHT = 560, 120
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 36, 8, 18, 20


def _points(values: list[tuple[float, float]]) -> str:
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in values)


def gpu_usage_svg(flavor: str, points: list[dict], *, start: datetime, end: datetime) -> SafeString:
    """One panel: GPUs used (filled line) and quota (dashed) from `start` to `end`."""
    span = max((end - start).total_seconds(), 1.0)
    top = max([1] + [max(p["gpus_used"], p["gpus_quota"]) for p in points])
    inner_w = WIDTH - PAD_LEFT - PAD_RIGHT
    inner_h = HEIGHT - PAD_TOP - PAD_BOTTOM

    def xy(point: dict, key: str) -> tuple[float, float]:
        x = PAD_LEFT + inner_w * min(max((point["at"] - start).total_seconds() / span, 0.0), 1.0)
        y = PAD_TOP + inner_h * (1 - point[key] / top)
        return x, y

    used = [xy(p, "gpus_used") for p in points]
    quota = [xy(p, "gpus_quota") for p in points]
    base = PAD_TOP + inner_h
    parts = [
        f'<svg class="usage-chart" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" '
        f'preserveAspectRatio="none" data-flavor="{escape(flavor)}" data-points="{len(points)}">',
        f"<title>GPUs used vs quota in flavor {escape(flavor)}</title>",
        f'<text x="{PAD_LEFT}" y="12" font-size="11">{escape(flavor)}: GPUs used '
        f"{points[-1]['gpus_used'] if points else 0} of {points[-1]['gpus_quota'] if points else 0}</text>",
        f'<line x1="{PAD_LEFT}" y1="{base}" x2="{WIDTH - PAD_RIGHT}" y2="{base}" stroke="#999"/>',
        f'<text x="{PAD_LEFT - 4}" y="{PAD_TOP + 4}" font-size="10" text-anchor="end">{top}</text>',
        f'<text x="{PAD_LEFT - 4}" y="{base}" font-size="10" text-anchor="end">0</text>',
        f'<text x="{PAD_LEFT}" y="{HEIGHT - 4}" font-size="10">{start:%H:%M}</text>',
        f'<text x="{WIDTH - PAD_RIGHT}" y="{HEIGHT - 4}" font-size="10" text-anchor="end">'
        f"{end:%H:%M} UTC</text>",
    ]
    if used:
        area = [(used[0][0], base), *used, (used[-1][0], base)]
        parts.append(
            f'<polygon class="used-area" points="{_points(area)}" fill="#4a90d9" fill-opacity="0.25"/>'
        )
        parts.append(
            f'<polyline class="used" points="{_points(used)}" fill="none" stroke="#4a90d9" stroke-width="2"/>'
        )
        parts.append(
            f'<polyline class="quota" points="{_points(quota)}" fill="none" stroke="#c0392b" '
            'stroke-dasharray="4 3" stroke-width="1.5"/>'
        )
    else:
        parts.append(
            f'<text x="{WIDTH / 2}" y="{base - inner_h / 2}" font-size="11" text-anchor="middle">'
            "no samples yet</text>"
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - numbers we format and escaped names only
