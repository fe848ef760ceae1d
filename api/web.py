"""What every page of the web UI shares: its static files (plotly.js from the ``plotly``
wheel: no CDN), the security headers (a strict Content-Security-Policy: scripts and styles
only from this server), and the Jinja environment (autoescaped) with the helpers its
templates call."""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path as FsPath
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

import prefixscope

from . import plots

HERE = FsPath(__file__).parent
STATIC_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@lru_cache(maxsize=1)
def static_files() -> dict[str, tuple[bytes, str]]:
    out = {}
    for path in (HERE / "static").iterdir():
        if path.is_file() and path.suffix in STATIC_TYPES:
            out[path.name] = (path.read_bytes(), STATIC_TYPES[path.suffix])
    plotly_js = _plotly_js()
    if plotly_js is not None:
        out["plotly.min.js"] = (plotly_js, STATIC_TYPES[".js"])
    return out


def _plotly_js() -> bytes | None:
    """plotly.js as the ``plotly`` wheel ships it (served by this server: no CDN)."""
    try:
        from importlib.resources import files

        return (files("plotly") / "package_data" / "plotly.min.js").read_bytes()
    except (ImportError, FileNotFoundError, ModuleNotFoundError):
        return None


@lru_cache(maxsize=1)
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(
        static=lambda name: f"/static/{name}?v={prefixscope.__version__}",
        fmt=fmt,
        fmtp=fmtp,
        ms=fmt_duration,
        val=fmt_value,
        bar=waterfall_bar,
    )
    return env


def fmt(value: float | None, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:+.4g}" if signed else f"{value:.4g}"


def fmtp(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.1e}" if value < 0.001 else f"{value:.3f}"


def fmt_value(value: Any) -> str:
    """Attribute values in the trace view: floats to 6 significant digits, the rest as is."""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def fmt_duration(ms: float | None) -> str:
    return "n/a" if ms is None else plots.fmt_ms(ms)


def fmt_metric(metric: str, value: float | None) -> str:
    if value is None:
        return "\u2013"
    if metric.startswith(("latency_", "ttft_")):
        return plots.fmt_ms(value)
    if metric.endswith("_rate"):
        return f"{value * 100:.1f}%"
    return f"{value:.3f}"


def waterfall_bar(offset: tuple[float, float] | None) -> Markup:
    """A tiny SVG bar: where a span sits in its trace ((start, width) as fractions)."""
    start, width = offset or (0.0, 1.0)
    x, w = 2 + 156 * start, max(2.0, 156 * width)
    return Markup(
        '<svg class="wf" width="160" height="10" viewBox="0 0 160 10" aria-hidden="true">'
        '<rect x="0" y="3" width="160" height="4" fill="#edf2f7"/>'
        f'<rect x="{x:.1f}" y="1" width="{w:.1f}" height="8" rx="2" fill="#4299e1"/></svg>'
    )
