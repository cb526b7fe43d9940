"""Small server-rendered SVG charts for the Monitoring page: no script, no external file (the
console's CSP allows neither inline scripts nor other origins), readable by screen readers
(each chart is role="img" with a <title> and a <desc>, every bar and point has a <title>, and
the page gives the numbers as tables too).

Everything drawn is text we escape here; the result is Markup for the Jinja template.
"""

from __future__ import annotations

from itertools import count
from typing import Callable, Sequence

from markupsafe import Markup, escape

# Colour-blind-safe (Okabe-Ito), then greys: one per category, in label order.
PALETTE = ["#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#000000", "#999999"]
WIDTH, HEIGHT = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 12, 40
_ids = count(1)


def percent(value: float) -> str:
    return f"{value:.0%}"


def number(value: float) -> str:
    return f"{value:,.0f}"


def _frame(title: str, desc: str, body: list[str], *, width: int = WIDTH, height: int = HEIGHT) -> Markup:
    n = next(_ids)
    head = (
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="100%" role="img" '
        f'aria-labelledby="chart{n}-title chart{n}-desc">'
        f'<title id="chart{n}-title">{escape(title)}</title><desc id="chart{n}-desc">{escape(desc)}</desc>'
    )
    return Markup(head + "".join(body) + "</svg>")


def _axes(y_max: float, y_fmt: Callable[[float], str], x_labels: Sequence[str], slot: float) -> list[str]:
    plot_h = HEIGHT - TOP - BOTTOM
    out = [f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH - RIGHT}" y2="{TOP + plot_h}" stroke="#6b7480"/>']
    for i in range(5):
        value = y_max * i / 4
        y = TOP + plot_h - plot_h * i / 4
        out.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" stroke="#e3e8ef"/>')
        out.append(
            f'<text x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="10" fill="#4a525c">'
            f"{escape(y_fmt(value))}</text>"
        )
    every = max(1, round(len(x_labels) / 10))  # at most ~10 labels under the axis
    for i, label in enumerate(_short(x_labels)):
        if i % every == 0:
            x = LEFT + slot * (i + 0.5)
            out.append(
                f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 14}" text-anchor="middle" font-size="10" fill="#4a525c">'
                f"{escape(label)}</text>"
            )
    return out


def _short(labels: Sequence[str]) -> list[str]:
    """Dates of one year as MM-DD under the axis (the bars' titles keep the whole date)."""
    dates = all(len(x) == 10 and x[4] == "-" and x[7] == "-" for x in labels)
    return [x[5:] for x in labels] if dates and len({x[:4] for x in labels}) == 1 else list(labels)


def _nothing(title: str, desc: str) -> Markup:
    return _frame(
        title,
        desc + " No data in this range.",
        [f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle" fill="#6b7480">No data in this range</text>'],
    )


def stacked_bars(
    title: str, desc: str, x_labels: Sequence[str], series: dict[str, Sequence[float]], *, totals: Sequence[int]
) -> Markup:
    """One bar per period, split into the series' shares of it (the category mix)."""
    if not x_labels or not any(totals):
        return _nothing(title, desc)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / len(x_labels)
    body = _axes(1.0, percent, x_labels, slot)
    for i, label in enumerate(x_labels):
        y = TOP + plot_h
        for j, (name, values) in enumerate(series.items()):
            share = values[i] or 0.0
            if share <= 0:
                continue
            h = plot_h * share
            y -= h
            body.append(
                f'<rect x="{LEFT + slot * i + slot * 0.1:.1f}" y="{y:.1f}" width="{slot * 0.8:.1f}" height="{h:.1f}" '
                f'fill="{PALETTE[j % len(PALETTE)]}"><title>{escape(label)}: {escape(name)} {percent(share)} '
                f"of {totals[i]}</title></rect>"
            )
    return _frame(title, desc, body)


def bars(title: str, desc: str, x_labels: Sequence[str], values: Sequence[float], *, fmt=number) -> Markup:
    """A plain bar chart (a histogram: the confidence bins, the length bins)."""
    if not x_labels or not any(values):
        return _nothing(title, desc)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot, top = plot_w / len(x_labels), max(values) or 1
    body = _axes(top, fmt, x_labels, slot)
    for i, (label, value) in enumerate(zip(x_labels, values)):
        h = plot_h * (value / top)
        body.append(
            f'<rect x="{LEFT + slot * i + slot * 0.1:.1f}" y="{TOP + plot_h - h:.1f}" width="{slot * 0.8:.1f}" '
            f'height="{h:.1f}" fill="{PALETTE[0]}"><title>{escape(label)}: {escape(fmt(value))}</title></rect>'
        )
    return _frame(title, desc, body)


def lines(
    title: str,
    desc: str,
    x_labels: Sequence[str],
    series: dict[str, Sequence[float | None]],
    *,
    fmt=percent,
    y_max: float | None = None,
) -> Markup:
    """One line per series over the periods (rates, length percentiles); gaps where a value is None."""
    values = [v for s in series.values() for v in s if v is not None]
    if not x_labels or not values:
        return _nothing(title, desc)
    top = y_max or max(values) or 1
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / len(x_labels)
    body = _axes(top, fmt, x_labels, slot)
    for j, (name, points) in enumerate(series.items()):
        colour = PALETTE[j % len(PALETTE)]
        path, pen_down = [], False
        for i, value in enumerate(points):
            if value is None:
                pen_down = False
                continue
            x, y = LEFT + slot * (i + 0.5), TOP + plot_h - plot_h * min(value / top, 1.0)
            path.append(f"{'L' if pen_down else 'M'}{x:.1f},{y:.1f}")
            pen_down = True
            body.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"><title>{escape(x_labels[i])}: '
                f"{escape(name)} {escape(fmt(value))}</title></circle>"
            )
        if path:
            body.append(f'<path d="{" ".join(path)}" fill="none" stroke="{colour}" stroke-width="2"/>')
    return _frame(title, desc, body)


def legend(names: Sequence[str]) -> Markup:
    """The colour key of a chart, as an HTML list (screen readers read the bars' titles anyway)."""
    items = "".join(
        f'<li><svg width="12" height="12" aria-hidden="true"><rect width="12" height="12" '
        f'fill="{PALETTE[i % len(PALETTE)]}"/></svg> {escape(name)}</li>'
        for i, name in enumerate(names)
    )
    return Markup(f'<ul class="legend">{items}</ul>')
