"""Inline SVG plots for the report (no JavaScript library, no network): the per-attribute heatmap with its colour
legend and values, scatter plots of mA against a cost on a log axis, and small training curves."""

from __future__ import annotations

import html
import math

import numpy as np

_FONT = 'font-family="system-ui, sans-serif"'


def _colour(v: float) -> str:
    """Red (0.5 = chance for mA) through yellow to green (1.0)."""
    t = min(max((v - 0.5) / 0.5, 0.0), 1.0)
    r = int(215 - 160 * t) if t > 0.5 else 215
    g = int(80 + 250 * t) if t <= 0.5 else 205
    return f"rgb({r},{min(g, 205)},{int(70 + 20 * t)})"


def heatmap_svg(rows: list[dict]) -> str:
    """Attributes (grouped) down, configurations across; each cell shows the per-attribute mA (%) and its seed
    spread on hover; a legend maps colours to mA."""
    if not rows:
        return ""
    attrs, groups = rows[0]["attributes"], rows[0]["groups"]
    group_order = list(dict.fromkeys(groups.get(a, "") for a in attrs))
    order = sorted(range(len(attrs)), key=lambda i: (group_order.index(groups.get(attrs[i], "")), i))
    longest = min(30, max(len(r["label"]) for r in rows))
    cw, ch, left, top = 58, 17, 190, int(24 + 5.0 * longest)  # room for the rotated labels, no more
    w, h = max(left + cw * len(rows) + 20, left + 480), top + ch * len(attrs) + 60
    p = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" {_FONT} role="img" '
        f'aria-label="per-attribute mA">'
    ]
    for j, r in enumerate(rows):
        x = left + j * cw + cw / 2
        label = html.escape(r["label"])
        short = html.escape(r["label"] if len(r["label"]) <= 30 else r["label"][:29] + "…")
        p.append(
            f'<text x="{x}" y="{top - 6}" font-size="10" transform="rotate(-50 {x} {top - 6})">'
            f"<title>{label}</title>{short}</text>"
        )
    prev = None
    for k, i in enumerate(order):
        y = top + k * ch
        g = groups.get(attrs[i], "")
        if g != prev:
            p.append(f'<line x1="{left - 150}" x2="{left + cw * len(rows)}" y1="{y}" y2="{y}" stroke="#999"/>')
            prev = g
        p.append(
            f'<text x="{left - 6}" y="{y + 12}" font-size="10" text-anchor="end">'
            f"{html.escape(attrs[i])} <tspan fill='#888'>{html.escape(g)}</tspan></text>"
        )
        for j, r in enumerate(rows):
            v, sd = r["label_ma"][i], r["label_ma_std"][i]
            tip = f"{attrs[i]} — {r['label']}: {100 * v:.2f}" + (f" ± {100 * sd:.2f}" if sd else "")
            p.append(
                f'<rect x="{left + j * cw}" y="{y}" width="{cw - 2}" height="{ch - 2}" fill="{_colour(v)}">'
                f"<title>{html.escape(tip)}</title></rect>"
                f'<text x="{left + j * cw + cw / 2 - 1}" y="{y + 11.5}" font-size="9.5" text-anchor="middle" '
                f'fill="#111" pointer-events="none">{100 * v:.1f}</text>'
            )
    # legend: 50 (chance) .. 100
    ly, lx, lw = top + ch * len(attrs) + 18, left, 240
    for s in range(48):
        v = 0.5 + 0.5 * s / 47
        p.append(
            f'<rect x="{lx + s * lw / 48:.1f}" y="{ly}" width="{lw / 48 + 0.6:.1f}" height="10" fill="{_colour(v)}"/>'
        )
    for v in (50, 60, 70, 80, 90, 100):
        x = lx + (v - 50) / 50 * lw
        p.append(f'<text x="{x:.1f}" y="{ly + 22}" font-size="9" text-anchor="middle">{v}</text>')
    p.append(f'<text x="{lx + lw + 10}" y="{ly + 9}" font-size="10">per-attribute mA (%), 50 = chance</text>')
    p.append("</svg>")
    return "".join(p)


def _spread_labels(ys: list[float], gap: float, lo: float, hi: float) -> list[float]:
    """Label positions near the points' y, at least `gap` apart (greedy, top to bottom), inside [lo, hi]."""
    order = sorted(range(len(ys)), key=lambda i: ys[i])
    out = [0.0] * len(ys)
    last = lo - gap
    for i in order:
        out[i] = max(ys[i], last + gap)
        last = out[i]
    over = last - hi
    if over > 0:  # shift the stack up where it runs off the bottom
        for i in order:
            out[i] = max(lo, out[i] - over)
    return out


def scatter_svg(points: list[dict], xlabel: str, zero_label: str = "0 (nothing trains)") -> str:
    """mA (%) against a positive cost on a log axis; one point per configuration with its seed spread (±1 std);
    points with cost 0 sit at the axis start, marked."""
    pts = [p for p in points if p.get("x") is not None]
    if not pts:
        return ""
    W, H, left, right, top, bottom = 620, 300, 60, 210, 16, 46
    pos = [p["x"] for p in pts if p["x"] > 0]
    if pos:
        x0, x1 = math.floor(math.log10(min(pos))) - 0.3, math.ceil(math.log10(max(pos))) + 0.3
    else:
        x0, x1 = 0.0, 1.0
    has_zero = any(p["x"] <= 0 for p in pts)
    zero_px = left + 14
    plot_l = left + (34 if has_zero else 0)
    ys = [100 * p["y"] for p in pts]
    yl = [100 * (p["y"] - p.get("sd", 0.0)) for p in pts]
    yh = [100 * (p["y"] + p.get("sd", 0.0)) for p in pts]
    y0, y1 = math.floor(min(yl) - 1), math.ceil(max(yh) + 1)
    if y1 - y0 < 4:
        y0, y1 = y0 - 2, y1 + 2
    sx = lambda v: zero_px if v <= 0 else plot_l + (math.log10(v) - x0) / (x1 - x0) * (W - right - plot_l)
    sy = lambda v: top + (y1 - v) / (y1 - y0) * (H - top - bottom)
    s = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" {_FONT} role="img" '
        f'aria-label="mA against {html.escape(xlabel)}">',
        f'<line x1="{left}" y1="{H - bottom}" x2="{W - right}" y2="{H - bottom}" stroke="#444"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{H - bottom}" stroke="#444"/>',
        f'<text x="{(left + W - right) / 2}" y="{H - 8}" font-size="11" text-anchor="middle">{html.escape(xlabel)}'
        " (log scale)</text>",
        f'<text x="14" y="{(top + H - bottom) / 2}" font-size="11" text-anchor="middle" '
        f'transform="rotate(-90 14 {(top + H - bottom) / 2})">mA (%)</text>',
    ]
    if pos:
        for e in range(math.ceil(x0), math.floor(x1) + 1):
            x = sx(10.0**e)
            s.append(
                f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{H - bottom}" y2="{H - bottom + 4}" stroke="#444"/>'
                f'<text x="{x:.1f}" y="{H - bottom + 15}" font-size="9" text-anchor="middle">1e{e}</text>'
            )
    if has_zero:
        s.append(
            f'<text x="{zero_px}" y="{H - bottom + 15}" font-size="9" text-anchor="middle">0</text>'
            f'<line x1="{zero_px + 18}" x2="{zero_px + 18}" y1="{H - bottom - 4}" y2="{H - bottom + 4}" '
            'stroke="#444" stroke-dasharray="2,2"/>'
        )
    for v in np.linspace(y0, y1, 6):
        s.append(
            f'<text x="{left - 5}" y="{sy(v) + 3:.1f}" font-size="9" text-anchor="end">{v:.0f}</text>'
            f'<line x1="{left}" x2="{W - right}" y1="{sy(v):.1f}" y2="{sy(v):.1f}" stroke="#eee"/>'
        )
    label_y = _spread_labels([sy(v) for v in ys], 12, top + 6, H - bottom - 2)
    for p, y, lo, hi, ly in zip(pts, ys, yl, yh, label_y, strict=True):
        x = sx(p["x"])
        tip = f"{p['label']}: {y:.2f} mA, {xlabel} {p['x']:,.0f}" + (" (zero)" if p["x"] <= 0 else "")
        if hi > lo:
            s.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{sy(hi):.1f}" y2="{sy(lo):.1f}" stroke="#2a6fb0"/>')
        s.append(
            f'<circle cx="{x:.1f}" cy="{sy(y):.1f}" r="4.5" fill="{"#b05a2a" if p["x"] <= 0 else "#2a6fb0"}">'
            f"<title>{html.escape(tip)}</title></circle>"
        )
        name = p["label"] if len(p["label"]) <= 34 else p["label"][:33] + "…"
        s.append(
            f'<line x1="{x + 5:.1f}" y1="{sy(y):.1f}" x2="{W - right + 4}" y2="{ly:.1f}" stroke="#ccc"/>'
            f'<text x="{W - right + 7}" y="{ly + 3:.1f}" font-size="9.5"><title>{html.escape(p["label"])}</title>'
            f"{html.escape(name)}</text>"
        )
    if has_zero and zero_label:
        s.append(
            f'<text x="{zero_px - 6}" y="{H - bottom + 27}" font-size="8.5" fill="#b05a2a">{html.escape(zero_label)}</text>'
        )
    s.append("</svg>")
    return "".join(s)


def _panel(name: str, series: list[list[tuple[int, float]]], title: str) -> str:
    """One small line plot: x = epoch, one line per seed."""
    W, H, pad = 200, 110, 28
    xs = [x for sr in series for x, _ in sr]
    vs = [v for sr in series for _, v in sr]
    x0, x1 = min(xs), max(max(xs), min(xs) + 1)
    v0, v1 = min(vs), max(vs)
    v0, v1 = (v0 - 0.5, v1 + 0.5) if v1 - v0 < 1e-9 else (v0, v1)

    def sx(x: float) -> float:
        return pad + (x - x0) / (x1 - x0) * (W - pad - 8)

    def sy(v: float) -> float:
        return 14 + (v1 - v) / (v1 - v0) * (H - 14 - 20)

    p = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" {_FONT} role="img" '
        f'aria-label="{html.escape(title)}: {name}"><text x="{pad}" y="10" font-size="9.5">{name}</text>',
        f'<text x="{pad - 3}" y="{sy(v1) + 3:.1f}" font-size="8" text-anchor="end">{v1:.3g}</text>',
        f'<text x="{pad - 3}" y="{sy(v0) + 3:.1f}" font-size="8" text-anchor="end">{v0:.3g}</text>',
        f'<text x="{sx(x0):.1f}" y="{H - 6}" font-size="8">{x0}</text>',
        f'<text x="{sx(x1):.1f}" y="{H - 6}" font-size="8" text-anchor="end">epoch {x1}</text>',
        f'<rect x="{pad}" y="14" width="{W - pad - 8}" height="{H - 34}" fill="none" stroke="#ddd"/>',
    ]
    colours = ("#2a6fb0", "#b05a2a", "#3a9a4a", "#8a4ab0", "#666")
    for k, sr in enumerate(series):
        d = " ".join(f"{sx(x):.1f},{sy(v):.1f}" for x, v in sr)
        p.append(f'<polyline points="{d}" fill="none" stroke="{colours[k % 5]}" stroke-width="1.5"/>')
    p.append("</svg>")
    return "".join(p)


def curves_svg(histories: list[list[dict]], title: str) -> str:
    """Two small panels: training loss and selection-split mA (%) per epoch, one line per seed."""
    runs = [h for h in histories if h]
    panels = []
    for name, get in (
        ("train loss", lambda e: e.get("loss")),
        ("val mA (%)", lambda e: None if not e.get("select") else 100 * e["select"]["ma"]),
    ):
        series = [sr for sr in ([(e["epoch"], get(e)) for e in h if get(e) is not None] for h in runs) if sr]
        if series:
            panels.append(_panel(name, series, title))
    return "".join(panels)


_LINE_COLOURS = ("#2a6fb0", "#b05a2a", "#3a9a4a", "#8a4ab0", "#b0a02a", "#2ab0a6", "#666", "#d0508a")


def severity_svg(name: str, series: dict[str, list[tuple[int, float]]]) -> str:
    """One small multiple: mA (%) against severity (0 = clean) for one corruption, one line per configuration."""
    W, H, pad = 230, 140, 30
    pts = [v for sr in series.values() for _, v in sr]
    if not pts:
        return ""
    v0, v1 = min(pts), max(pts)
    v0, v1 = (v0 - 0.01, v1 + 0.01) if v1 - v0 < 1e-9 else (v0, v1)
    sx = lambda s: pad + s / 5 * (W - pad - 10)
    sy = lambda v: 16 + (v1 - v) / (v1 - v0) * (H - 16 - 24)
    p = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" {_FONT} role="img" '
        f'aria-label="mA against severity: {html.escape(name)}"><text x="{pad}" y="11" font-size="10">'
        f"{html.escape(name)}</text>",
        f'<rect x="{pad}" y="16" width="{W - pad - 10}" height="{H - 40}" fill="none" stroke="#ddd"/>',
        f'<text x="{pad - 3}" y="{sy(v1) + 3:.1f}" font-size="8" text-anchor="end">{100 * v1:.1f}</text>',
        f'<text x="{pad - 3}" y="{sy(v0) + 3:.1f}" font-size="8" text-anchor="end">{100 * v0:.1f}</text>',
    ]
    for s in range(6):
        p.append(f'<text x="{sx(s):.1f}" y="{H - 12}" font-size="8" text-anchor="middle">{s}</text>')
    p.append(f'<text x="{W - 10}" y="{H - 2}" font-size="8" text-anchor="end">severity</text>')
    for k, (label, sr) in enumerate(series.items()):
        colour = _LINE_COLOURS[k % len(_LINE_COLOURS)]
        d = " ".join(f"{sx(s):.1f},{sy(v):.1f}" for s, v in sr)
        tip = html.escape(f"{label}: " + ", ".join(f"s{s} {100 * v:.2f}" for s, v in sr))
        p.append(
            f'<polyline points="{d}" fill="none" stroke="{colour}" stroke-width="1.6"><title>{tip}</title></polyline>'
        )
    p.append("</svg>")
    return "".join(p)


def drop_heatmap_svg(labels: list[str], attributes: list[str], drops: list[list[float]], title: str) -> str:
    """Per-attribute mA drop (clean minus corrupted, points of %), attributes down, configurations across; white
    = no drop, red = the largest drop in the table (blue where a corruption helped)."""
    if not labels:
        return ""
    top = max(1e-9, max(abs(v) for row in drops for v in row))
    cw, ch, left, head = 58, 16, 170, 80
    w, h = left + cw * len(labels) + 20, head + ch * len(attributes) + 30
    p = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" {_FONT} role="img" '
        f'aria-label="{html.escape(title)}"><text x="4" y="12" font-size="10">{html.escape(title)}</text>'
    ]
    for j, label in enumerate(labels):
        x = left + j * cw + cw / 2
        short = html.escape(label if len(label) <= 24 else label[:23] + "…")
        p.append(f'<text x="{x}" y="{head - 6}" font-size="10" transform="rotate(-40 {x} {head - 6})">{short}</text>')
    for i, a in enumerate(attributes):
        y = head + i * ch
        p.append(f'<text x="{left - 6}" y="{y + 11}" font-size="10" text-anchor="end">{html.escape(a)}</text>')
        for j, label in enumerate(labels):
            v = drops[j][i]
            t = min(abs(v) / top, 1.0)
            fill = (
                f"rgb(255,{int(255 - 170 * t)},{int(255 - 170 * t)})"
                if v >= 0
                else f"rgb({int(255 - 170 * t)},{int(255 - 120 * t)},255)"
            )
            tip = html.escape(f"{a} — {label}: {100 * v:+.2f} points")
            p.append(
                f'<rect x="{left + j * cw}" y="{y}" width="{cw - 2}" height="{ch - 2}" fill="{fill}"><title>{tip}</title></rect>'
                f'<text x="{left + j * cw + cw / 2 - 1}" y="{y + 11}" font-size="9" text-anchor="middle">{100 * v:+.1f}</text>'
            )
    p.append("</svg>")
    return "".join(p)
