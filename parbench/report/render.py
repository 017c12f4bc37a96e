"""Render the leaderboard: one self-contained HTML file (inline SVG plots, inline CSS/JS, no network), plus
Markdown tables and a CSV. Everything shown is computed from the store, so a report can be re-rendered any time.
"""

from __future__ import annotations

import csv
import html
import io
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from parbench.atomic import write_text
from parbench.cards import load_card
from parbench.errors import ParbenchError
from parbench.metrics import HEADLINE, PROTOCOLS, paired_bootstrap
from parbench.store import Store

ZS_PAIRS = [("PETA", "PETA-ZS"), ("RAPv2", "RAP-ZS"), ("synthetic", "synthetic-zs")]


def _mean_std(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def aggregate(records: list[dict], protocol: str) -> dict[str, list[dict]]:
    """Per dataset, one row per (method, backbone, pretrained): mean/std over seeds and mean 95% interval."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        groups[(r["dataset"], r["method"], r["backbone"], r["pretrained"])].append(r)
    out: dict[str, list[dict]] = defaultdict(list)
    for (ds, method, backbone, pretrained), runs in sorted(groups.items()):
        row = {"dataset": ds, "method": method, "backbone": backbone, "pretrained": pretrained,
               "seeds": sorted(r["seed"] for r in runs), "runs": runs}  # fmt: skip
        for k in HEADLINE:
            row[k], row[k + "_std"] = _mean_std([r["metrics"][protocol][k] for r in runs])
            ci = [r.get("intervals", {}).get(protocol, {}).get(k) for r in runs]
            ci = [c for c in ci if c]
            row[k + "_ci"] = (
                (float(np.mean([c[0] for c in ci])), float(np.mean([c[1] for c in ci]))) if ci else None
            )
        first = runs[0]
        row.update(total_params=first["total_params"], trainable_params=first["trainable_params"],
                   trainable_pct=first["trainable_pct"], fit_s=float(np.mean([r["fit_s"] for r in runs])),
                   images_per_s=float(np.mean([r["train_images_per_s"] for r in runs])),
                   peak_mem_mb=max(r["peak_mem_mb"] for r in runs),
                   selected_on=sorted({r["selected_on"] for r in runs}),
                   selected_on_test=any(r["selected_on_test"] for r in runs),
                   label_ma=np.mean([r["metrics"][protocol]["label_ma"] for r in runs], axis=0).tolist(),
                   attributes=first["attributes"], groups=first.get("groups", {}))  # fmt: skip
        out[ds].append(row)
    for rows in out.values():
        rows.sort(key=lambda r: -r["ma"])
    return out


def published_rows(dataset: str) -> list[dict]:
    try:
        card = load_card(dataset)
    except ParbenchError:
        return []
    return [p.__dict__ for p in card.published]


def _colour(v: float) -> str:
    """Red (0.5 = chance for mA) to green (1.0)."""
    t = min(max((v - 0.5) / 0.5, 0.0), 1.0)
    return f"rgb({int(220 - 170 * t)},{int(60 + 150 * t)},{int(70 + 30 * t)})"


def heatmap_svg(rows: list[dict]) -> str:
    if not rows:
        return ""
    attrs, groups = rows[0]["attributes"], rows[0]["groups"]
    order = sorted(
        range(len(attrs)),
        key=lambda i: list(dict.fromkeys(groups.values())).index(groups.get(attrs[i], "")) if groups else i,
    )
    cw, ch, left, top = 16, 18, 150, 120
    w, h = left + cw * len(attrs) + 10, top + ch * len(rows) + 10
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" aria-label="per-attribute mA">'
    ]
    for j, i in enumerate(order):
        x = left + j * cw + cw / 2
        label = html.escape(f"{attrs[i]} ({groups.get(attrs[i], '')})")
        parts.append(
            f'<text x="{x}" y="{top - 4}" font-size="9" transform="rotate(-60 {x} {top - 4})">{label}</text>'
        )
    for r_i, row in enumerate(rows):
        y = top + r_i * ch
        parts.append(f'<text x="{left - 4}" y="{y + 13}" font-size="10" text-anchor="end">'
                     f'{html.escape(row["method"] + " / " + row["backbone"])}</text>')  # fmt: skip
        for j, i in enumerate(order):
            v = row["label_ma"][i]
            parts.append(f'<rect x="{left + j * cw}" y="{y}" width="{cw - 1}" height="{ch - 1}" fill="{_colour(v)}">'
                         f'<title>{html.escape(attrs[i])}: {100 * v:.2f}</title></rect>')  # fmt: skip
    parts.append("</svg>")
    return "".join(parts)


def scatter_svg(rows: list[dict]) -> str:
    pts = [(max(r["trainable_params"], 1), r["ma"], f"{r['method']} / {r['backbone']}") for r in rows]
    if not pts:
        return ""
    W, H, pad = 420, 260, 45
    xs = [math.log10(p[0]) for p in pts]
    x0, x1 = min(xs) - 0.5, max(xs) + 0.5
    y0, y1 = min(0.5, min(p[1] for p in pts)), 1.0
    sx = lambda v: pad + (math.log10(v) - x0) / (x1 - x0) * (W - 2 * pad)
    sy = lambda v: H - pad - (v - y0) / (y1 - y0 + 1e-9) * (H - 2 * pad)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" role="img" aria-label="mA vs trainable">',
             f'<line x1="{pad}" y1="{H - pad}" x2="{W - pad}" y2="{H - pad}" stroke="#444"/>',
             f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{H - pad}" stroke="#444"/>',
             f'<text x="{W / 2}" y="{H - 8}" font-size="11" text-anchor="middle">trainable parameters (log10)</text>',
             f'<text x="12" y="{H / 2}" font-size="11" transform="rotate(-90 12 {H / 2})">mA (%)</text>']  # fmt: skip
    for e in range(math.ceil(x0), math.floor(x1) + 1):
        parts.append(
            f'<text x="{sx(10**e)}" y="{H - pad + 14}" font-size="9" text-anchor="middle">1e{e}</text>'
        )
    for v in np.linspace(y0, y1, 5):
        parts.append(
            f'<text x="{pad - 4}" y="{sy(v) + 3}" font-size="9" text-anchor="end">{100 * v:.0f}</text>'
        )
    for n, ma, label in pts:
        parts.append(f'<circle cx="{sx(n):.1f}" cy="{sy(ma):.1f}" r="5" fill="#2a6fb0"><title>{html.escape(label)}: '
                     f'{100 * ma:.2f} mA, {n:,} trainable</title></circle>'
                     f'<text x="{sx(n) + 7:.1f}" y="{sy(ma) + 3:.1f}" font-size="9">{html.escape(label)}</text>')  # fmt: skip
    parts.append("</svg>")
    return "".join(parts)


def paired_tests(store: Store, rows: list[dict], protocol: str) -> list[dict]:
    """Best method (by mean mA) against each other, on the same test images, same seed."""
    if len(rows) < 2:
        return []
    best, out = rows[0], []
    for other in rows[1:]:
        seeds = sorted(set(best["seeds"]) & set(other["seeds"]))
        if not seeds:
            continue
        ra = next(r for r in best["runs"] if r["seed"] == seeds[0])
        rb = next(r for r in other["runs"] if r["seed"] == seeds[0])
        pa, pb = store.predictions(ra["run_id"]), store.predictions(rb["run_id"])
        if pa is None or pb is None or pa[1].shape != pb[1].shape or not np.array_equal(pa[1], pb[1]):
            continue
        res = paired_bootstrap(pa[1], pa[0], pb[0], "ma", protocol, n_boot=1000, seed=0)
        out.append({"a": f'{best["method"]} / {best["backbone"]}', "b": f'{other["method"]} / {other["backbone"]}',
                    "seed": seeds[0], **res})  # fmt: skip
    return out


def zs_drops(agg: dict[str, list[dict]]) -> list[dict]:
    out = []
    for std, zs in ZS_PAIRS:
        if std in agg and zs in agg:
            zs_rows = {(r["method"], r["backbone"]): r for r in agg[zs]}
            for r in agg[std]:
                z = zs_rows.get((r["method"], r["backbone"]))
                if z:
                    out.append({"standard": std, "zs": zs, "method": r["method"], "backbone": r["backbone"],
                                "ma_std": r["ma"], "ma_zs": z["ma"], "drop": r["ma"] - z["ma"]})  # fmt: skip
    return out


def render_report(store_path: str | Path, out_dir: str | Path, protocol: str = "promptpar",
                  include_smoke: bool = False, title: str = "parbench report") -> Path:  # fmt: skip
    store_path = Path(store_path)
    if not store_path.is_file():
        raise ParbenchError(
            store_path, "a results store (run `parbench run ... --store FILE` first)", "no such file"
        )
    store = Store(store_path, create=False)
    records = store.records(include_smoke=include_smoke)
    if not records:
        raise ParbenchError(
            store_path,
            "at least one finished run",
            "none" + ("" if include_smoke else " (smoke runs left out)"),
        )
    agg = aggregate(records, protocol)
    datasets = []
    for ds, rows in agg.items():
        datasets.append({"name": ds, "rows": rows, "published": published_rows(ds), "heatmap": heatmap_svg(rows),
                         "scatter": scatter_svg(rows), "paired": paired_tests(store, rows, protocol)})  # fmt: skip
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(
        loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=select_autoescape()
    )
    env.filters["pct"] = lambda v: "–" if v is None else f"{100 * v:.2f}"
    proto = PROTOCOLS[protocol]
    page = env.get_template("report.html.j2").render(
        title=title, datasets=datasets, protocol=proto, zs=zs_drops(agg), n_runs=len(records),
        unspecified=sorted({r.get("unspecified", "negative") for r in records}),
        partitions=sorted({r.get("partition", 0) for r in records}),
        any_test_selected=any(r["selected_on_test"] for r in records), metrics=HEADLINE,
    )  # fmt: skip
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "index.html", page)
    write_text(out / "leaderboard.md", markdown(agg, protocol))
    write_text(out / "leaderboard.csv", to_csv(agg))
    return out / "index.html"


def markdown(agg: dict[str, list[dict]], protocol: str) -> str:
    lines = [
        f"Protocol: {protocol} (threshold {PROTOCOLS[protocol].threshold}). Values in %, mean ± std over seeds.",
        "",
    ]
    for ds, rows in agg.items():
        lines += [f"### {ds}", "", "| method | backbone | seeds | mA | Acc | Prec | Rec | F1 | trainable | total |",
                  "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in rows:
            vals = " | ".join(f"{100 * r[k]:.2f} ± {100 * r[k + '_std']:.2f}" for k in HEADLINE)
            lines.append(f"| {r['method']} | {r['backbone']} | {len(r['seeds'])} | {vals} | "
                         f"{r['trainable_params']:,} ({r['trainable_pct']:.2f}%) | {r['total_params']:,} |")  # fmt: skip
        for p in published_rows(ds):
            vals = " | ".join("–" if p[k] is None else f"{p[k]:.2f}" for k in HEADLINE)
            lines.append(
                f"| {p['method']} (published, {p['protocol']}) | {p['backbone']} | – | {vals} | – | – |"
            )
        lines.append("")
    return "\n".join(lines)


def to_csv(agg: dict[str, list[dict]]) -> str:
    buf = io.StringIO()
    cols = ["dataset", "method", "backbone", "pretrained", "n_seeds"] + [
        c for k in HEADLINE for c in (k, k + "_std")
    ]
    cols += ["total_params", "trainable_params", "trainable_pct", "fit_s", "images_per_s", "peak_mem_mb"]
    w = csv.writer(buf)
    w.writerow(cols)
    for rows in agg.values():
        for r in rows:
            w.writerow([r["dataset"], r["method"], r["backbone"], r["pretrained"], len(r["seeds"])]
                       + [r[c] for c in cols[5:]])  # fmt: skip
    return buf.getvalue()
