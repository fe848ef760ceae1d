"""Server-side SVG plots for the dashboard (no JavaScript, no CDN; text is escaped).

Two plots: a latency quantile strip per variant (p50/p90/p99 on a log axis, CI whiskers) and
a heatmap of evaluator-score deltas vs the base model by cohort (diverging colours, the
number printed in every cell, grey where either side has too few samples). Only presentation
attributes are used (no ``style=``), so the page works under a strict Content-Security-Policy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

WORSE = (200, 48, 39)  # red: variant scores lower than base
BETTER = (33, 102, 172)  # blue: variant scores higher than base
NEUTRAL = (247, 247, 247)
QUANTILE_STYLE = {  # quantile -> (marker colour, label)
    "p50": ("#2b6cb0", "p50"),
    "p90": ("#d69e2e", "p90"),
    "p99": ("#c53030", "p99"),
}


@dataclass(frozen=True, slots=True)
class Interval:
    value: float | None
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True, slots=True)
class LatencyRow:
    label: str
    n: int
    p50: Interval
    p90: Interval
    p99: Interval


@dataclass(frozen=True, slots=True)
class HeatCell:
    delta: float | None
    n: int
    n_base: int
    value: float | None = None
    base_value: float | None = None


def _t(text: object) -> str:
    return escape(str(text), quote=True)


def fmt_ms(ms: float) -> str:
    if ms >= 10_000:
        return f"{ms / 1000:.0f}s"
    if ms >= 1000:
        return f"{ms / 1000:.1f}s"
    if ms >= 10:
        return f"{ms:.0f}ms"
    return f"{ms:.1f}ms"


def log_ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 ticks covering [lo, hi] (lo > 0)."""
    ticks: list[float] = []
    exp = math.floor(math.log10(lo))
    while True:
        for m in (1, 2, 5):
            t = m * 10.0**exp
            if t > hi * 1.0001:
                return ticks
            if t >= lo * 0.9999:
                ticks.append(t)
        exp += 1


def latency_svg(rows: Sequence[LatencyRow], *, width: int = 720) -> str:
    """Horizontal quantile strips, one row per variant, log-scaled milliseconds."""
    values = [
        v
        for r in rows
        for q in (r.p50, r.p90, r.p99)
        for v in (q.value, q.low, q.high)
        if v is not None and v > 0
    ]
    if not values:
        return '<p class="empty">No latency data in this window.</p>'
    lo = 10 ** math.floor(math.log10(min(values)))
    hi = 10 ** math.ceil(math.log10(max(values)))
    if hi / lo < 10:
        hi = lo * 10
    left, right, top, row_h = 150, 24, 34, 30
    plot_w = width - left - right
    height = top + row_h * len(rows) + 36

    def x(v: float) -> float:
        return left + plot_w * (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))

    out = [
        f'<svg class="plot latency" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="Latency p50, p90 and p99 per variant">'
    ]
    for i, (q, (color, label)) in enumerate(QUANTILE_STYLE.items()):  # legend
        lx = left + i * 90
        out.append(_marker(q, lx + 6, 14, color, klass=f"key-{q}"))
        out.append(f'<text class="legend" x="{lx + 16}" y="18">{label}</text>')
    out.append(
        f'<text class="legend muted" x="{left + 290}" y="18">line: p50→p99, '
        "whiskers: 95% CI (log scale)</text>"
    )
    axis_y = top + row_h * len(rows)
    for t in log_ticks(lo, hi):
        tx = x(t)
        out.append(
            f'<line class="grid" x1="{tx:.1f}" x2="{tx:.1f}" y1="{top - 4}" '
            f'y2="{axis_y}" stroke="#e2e8f0"/>'
        )
        out.append(
            f'<text class="tick" x="{tx:.1f}" y="{axis_y + 16}" '
            f'text-anchor="middle">{fmt_ms(t)}</text>'
        )
    for i, r in enumerate(rows):
        cy = top + row_h * i + row_h / 2
        if i % 2 == 0:
            out.append(
                f'<rect x="0" y="{top + row_h * i}" width="{width}" height="{row_h}" '
                'fill="#f8fafc"/>'
            )
        out.append(
            f'<text class="rowlabel" x="{left - 10}" y="{cy + 4:.1f}" text-anchor="end">'
            f'{_t(r.label)} <tspan class="muted">n={r.n}</tspan></text>'
        )
        if r.p50.value and r.p99.value:
            out.append(
                f'<line x1="{x(r.p50.value):.1f}" x2="{x(r.p99.value):.1f}" '
                f'y1="{cy:.1f}" y2="{cy:.1f}" stroke="#a0aec0" stroke-width="3"/>'
            )
        for q, (color, label) in QUANTILE_STYLE.items():
            iv: Interval = getattr(r, q)
            if not iv.value or iv.value <= 0:
                continue
            if iv.low and iv.high and iv.low > 0:
                out.append(
                    f'<line x1="{x(iv.low):.1f}" x2="{x(iv.high):.1f}" y1="{cy:.1f}" '
                    f'y2="{cy:.1f}" stroke="{color}" stroke-width="1.5"/>'
                )
            tip = f"{r.label} {label}: {fmt_ms(iv.value)}"
            if iv.low is not None and iv.high is not None:
                tip += f" (95% CI {fmt_ms(iv.low)}\u2013{fmt_ms(iv.high)})"
            out.append(f"<g>{_marker(q, x(iv.value), cy, color)}<title>{_t(tip)}</title></g>")
    out.append(
        f'<line x1="{left}" x2="{left + plot_w}" y1="{axis_y}" y2="{axis_y}" stroke="#718096"/>'
    )
    out.append("</svg>")
    return "".join(out)


def _marker(q: str, cx: float, cy: float, color: str, klass: str = "") -> str:
    klass = klass or f"m-{q}"
    if q == "p50":
        return f'<circle class="{klass}" cx="{cx:.1f}" cy="{cy:.1f}" r="5" fill="{color}"/>'
    if q == "p90":
        return (
            f'<rect class="{klass}" x="{cx - 4.5:.1f}" y="{cy - 4.5:.1f}" width="9" height="9" '
            f'fill="{color}" transform="rotate(45 {cx:.1f} {cy:.1f})"/>'
        )
    return (
        f'<rect class="{klass}" x="{cx - 4.5:.1f}" y="{cy - 4.5:.1f}" width="9" height="9" '
        f'fill="{color}"/>'
    )


def diverging(delta: float, scale: float) -> str:
    """Colour for ``delta`` on a symmetric scale: red (worse), white, blue (better)."""
    t = 0.0 if scale <= 0 else max(-1.0, min(1.0, delta / scale))
    end = BETTER if t > 0 else WORSE
    a = abs(t) ** 0.8
    rgb = [round(n + (e - n) * a) for n, e in zip(NEUTRAL, end, strict=True)]
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def heatmap_svg(
    rows: Sequence[str],
    cols: Sequence[str],
    cells: dict[tuple[str, str], HeatCell],
    *,
    metric: str,
    min_n: int = 30,
    col_title: str = "cohort",
) -> str:
    """Evaluator delta (variant minus base, same cohort) per variant and cohort."""
    if not rows or not cols:
        return '<p class="empty">No evaluator scores by cohort in this window.</p>'
    cell_w, cell_h, left, top = 92, 34, 150, 56
    width = max(left + cell_w * len(cols) + 20, left + 440)
    height = top + cell_h * len(rows) + 44
    deltas = [abs(c.delta) for c in cells.values() if c.delta is not None and c.n >= min_n]
    scale = max([0.05, *deltas])
    out = [
        f'<svg class="plot heatmap" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="{_t(metric)} delta vs base by {_t(col_title)}">',
        f'<text class="legend" x="{left}" y="16">{_t(metric)}: variant \u2212 base, by '
        f"{_t(col_title)}</text>",
    ]
    for j, col in enumerate(cols):
        out.append(
            f'<text class="collabel" x="{left + cell_w * j + cell_w / 2:.1f}" '
            f'y="{top - 8}" text-anchor="middle">{_t(_short(col))}<title>{_t(col)}'
            "</title></text>"
        )
    for i, row in enumerate(rows):
        y = top + cell_h * i
        out.append(
            f'<text class="rowlabel" x="{left - 10}" y="{y + cell_h / 2 + 4:.1f}" '
            f'text-anchor="end">{_t(row)}</text>'
        )
        for j, col in enumerate(cols):
            x = left + cell_w * j
            cell = cells.get((row, col))
            small = cell is None or cell.delta is None or min(cell.n, cell.n_base) < min_n
            fill = "#e2e8f0" if small or cell is None else diverging(cell.delta or 0.0, scale)
            label = "\u2013" if cell is None or cell.delta is None else f"{cell.delta:+.3f}"
            tip = f"{row} · {col}: "
            if cell is None or cell.delta is None:
                tip += "no data"
            else:
                tip += (
                    f"{_num(cell.value)} vs base {_num(cell.base_value)} "
                    f"(n={cell.n}, base n={cell.n_base})"
                )
                if small:
                    tip += f"; fewer than {min_n} samples"
            dark = not small and cell is not None and abs(cell.delta or 0) / scale > 0.55
            klass = "cell dark" if dark else ("cell small" if small else "cell")
            out.append(
                f'<g><rect x="{x + 1}" y="{y + 1}" width="{cell_w - 2}" height="{cell_h - 2}" '
                f'rx="3" fill="{fill}"/><text class="{klass}" x="{x + cell_w / 2:.1f}" '
                f'y="{y + cell_h / 2 + 4:.1f}" text-anchor="middle">{label}</text>'
                f"<title>{_t(tip)}</title></g>"
            )
    ly = top + cell_h * len(rows) + 14
    for k, (txt, d) in enumerate(
        ((f"\u2212{scale:.2g} worse", -scale), ("0", 0.0), (f"+{scale:.2g} better", scale))
    ):
        lx = left + k * 110
        out.append(
            f'<rect x="{lx}" y="{ly}" width="16" height="12" fill="{diverging(d, scale)}" '
            'stroke="#cbd5e0"/>'
        )
        out.append(f'<text class="legend" x="{lx + 22}" y="{ly + 10}">{_t(txt)}</text>')
    out.append(
        f'<rect x="{left + 330}" y="{ly}" width="16" height="12" fill="#e2e8f0"/>'
        f'<text class="legend" x="{left + 352}" y="{ly + 10}">n &lt; {min_n}</text>'
    )
    out.append("</svg>")
    return "".join(out)


def _short(text: str, limit: int = 13) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"
