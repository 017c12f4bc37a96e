"""Render the report: one self-contained HTML file (inline SVG, CSS and JS, no network) plus the tables a paper
needs (leaderboard.csv / .md, main_table.md, main_table_<protocol>.tex). Everything is computed from the store,
so a report can be re-rendered any time.

Both protocols are rendered into the page (a toggle shows one at a time); rows are configurations (see
report/aggregate.py); failed runs are listed as failed, never scored.
"""

from __future__ import annotations

import html
import sys
from collections.abc import Callable
from pathlib import Path

from parbench.atomic import write_text
from parbench.cards import load_card
from parbench.draws import REPORT_BOOT, REPORT_SEED
from parbench.errors import ParbenchError
from parbench.metrics import HEADLINE, PROTOCOLS
from parbench.report import sections, tables
from parbench.report.aggregate import configuration_rows, main_table
from parbench.report.stats import paired_difference, row_interval
from parbench.report.svg import curves_svg, heatmap_svg, scatter_svg
from parbench.store import Store

ZS_PAIRS = [("PETA", "PETA-ZS"), ("RAPv2", "RAP-ZS"), ("synthetic", "synthetic-zs")]


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def published_rows(dataset: str) -> list[dict]:
    try:
        card = load_card(dataset)
    except ParbenchError:
        return []
    return [p.__dict__ for p in card.published]


def _paired(draws, rows: list[dict], protocol: str) -> list[dict]:
    """The best configuration (by mean mA) against each other one, over their shared seeds."""
    out = []
    for other in rows[1:]:
        res = paired_difference(draws, rows[0], other, protocol)
        if res is not None:
            out.append({"a": rows[0]["label"], "b": other["label"], **res})
    return out


def _zs_drops(per_dataset: dict[str, list[dict]]) -> list[dict]:
    out = []
    for std, zs in ZS_PAIRS:
        if std in per_dataset and zs in per_dataset:
            zs_rows = {r["label"]: r for r in per_dataset[zs]}
            for r in per_dataset[std]:
                z = zs_rows.get(r["label"])
                if z:
                    out.append(
                        {
                            "standard": std,
                            "zs": zs,
                            "label": r["label"],
                            "ma_std": r["ma"],
                            "ma_zs": z["ma"],
                            "drop": r["ma"] - z["ma"],
                        }
                    )
    return out


def _points(rows: list[dict], x: str) -> list[dict]:
    return [
        {"x": r.get(x), "y": r["ma"], "sd": 0.0 if r["identical_seeds"] else r["ma_std"], "label": r["label"]}
        for r in rows
    ]


def _published_protocol(per_dataset: dict[str, list[dict]], protocol: str) -> list[dict]:
    """Per configuration whose runs tracked test (`track_test`): the honest (selected) numbers beside the
    references' reading of the same runs (max over epochs on test, per metric), and the difference over seeds."""
    import numpy as np

    out = []
    for ds, rows in per_dataset.items():
        for r in rows:
            runs = [x for x in r["runs"] if (x.get("published_protocol") or {}).get(protocol)]
            if not runs:
                continue
            entry = {"dataset": ds, "label": r["label"], "seeds": len(runs), "metrics": {}}
            for m in ("ma", "acc", "f1"):
                honest = np.array([x["metrics"][protocol][m] for x in runs])
                pub = np.array([x["published_protocol"][protocol][m] for x in runs])
                d = pub - honest
                entry["metrics"][m] = {
                    "honest": float(honest.mean()),
                    "published": float(pub.mean()),
                    "diff": float(d.mean()),
                    "diff_std": float(d.std(ddof=1)) if len(d) > 1 else 0.0,
                }
            out.append(entry)
    return out


def _cross_matrices(cross: list[dict], per_dataset: dict[str, list[dict]], protocol: str) -> list[dict]:
    """Per configuration (as the leaderboard labels it), the cross-domain matrix: rows trained on, columns
    evaluated on, mA over the shared attributes (mean ± std over seeds); the diagonal is the configuration's
    in-domain mA over all of its dataset's attributes. A cross record whose run is not in the report (a smoke
    run, a row left out) is left out with it."""
    import numpy as np

    row_of = {run["run_id"]: r for rows in per_dataset.values() for r in rows for run in r["runs"]}
    cells: dict[str, dict[tuple[str, str], list[dict]]] = {}
    for c in cross:
        r = row_of.get(c["run_id"])
        if r is not None:
            cells.setdefault(r["label"], {}).setdefault((c["trained_on"], c["evaluated_on"]), []).append(c)
    out = []
    for label, got in sorted(cells.items()):
        trained = sorted({a for a, _ in got})
        evaluated = trained + sorted({b for _, b in got} - set(trained))
        table = []
        for a in trained:
            row = {"trained_on": a, "cells": []}
            for b in evaluated:
                if a == b:
                    home = next((r for r in per_dataset.get(a, []) if r["label"] == label), None)
                    cell = {"ma": home["ma"], "std": home["ma_std"], "seeds": len(home["seeds"]), "home": True}
                    row["cells"].append(cell if home else None)
                    continue
                recs = got.get((a, b))
                if not recs:
                    row["cells"].append(None)
                    continue
                v = np.array([x["metrics"][protocol]["ma"] for x in recs])
                row["cells"].append(
                    {
                        "ma": float(v.mean()),
                        "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                        "seeds": len(v),
                        "shared": len(recs[0]["mapping"]["pairs"]),
                        "test_selected": any(x.get("selected_on_test") for x in recs),
                    }
                )
            table.append(row)
        out.append({"label": label, "evaluated": evaluated, "rows": table})
    return out


def _robustness(robust: list[dict], per_dataset: dict[str, list[dict]], protocol: str) -> list[dict]:
    """Per dataset: one row per configuration (clean, mean corrupted mA, relative robustness, mCE against the
    suite's baseline method, robust mA per attack; seed means), mA against severity per corruption (one line per
    configuration), and the per-attribute mA drop under the corruption that costs the most."""
    import numpy as np

    from parbench.report.svg import drop_heatmap_svg, severity_svg
    from parbench.robust.evaluate import mce

    row_of = {run["run_id"]: r for rows in per_dataset.values() for r in rows for run in r["runs"]}
    by: dict[str, dict[str, list[dict]]] = {}
    for rec in robust:
        r = row_of.get(rec["run_id"])
        if r is not None:
            by.setdefault(r["dataset"], {}).setdefault(r["label"], []).append(rec)
        elif rec.get("reference"):  # a reference checkpoint: its own row, labelled by its file
            label = f"{rec['method']} (reference: {Path(rec['reference']).name})"
            by.setdefault(rec["dataset"], {}).setdefault(label, []).append(rec)
    out = []
    mean = lambda xs: float(np.mean(xs)) if xs else None
    for ds, labels in sorted(by.items()):
        baseline = next(
            (x.get("mce_baseline") for recs in labels.values() for x in recs if x.get("mce_baseline")), None
        )
        base_label = next((lbl for lbl, recs in labels.items() if baseline and recs[0]["method"] == baseline), None)
        mces = mce(labels, base_label, protocol) if base_label else {}
        attacks = sorted(
            {_attack_name(x) for recs in labels.values() for x in recs if x["perturbation"]["kind"] == "attack"}
        )
        corrs = sorted(
            {
                x["perturbation"]["name"]
                for recs in labels.values()
                for x in recs
                if x["perturbation"]["kind"] == "corruption"
            }
        )
        rows, curves, worst = [], [], None
        for label, recs in sorted(labels.items()):
            clean = {x["run_id"]: x["clean"][protocol]["ma"] for x in recs}
            corrupted = [
                x["metrics"][protocol]["ma"]
                for x in recs
                if x["perturbation"]["kind"] == "corruption" and x["perturbation"]["severity"] > 0
            ]
            c_mean, clean_mean = mean(corrupted), mean(list(clean.values()))
            rows.append(
                {
                    "label": label,
                    "seeds": len(clean),
                    "clean": clean_mean,
                    "corrupted": c_mean,
                    "relative": c_mean / clean_mean if c_mean is not None and clean_mean else None,
                    "mce": mces.get(label),
                    "attacks": {
                        a: mean([x["metrics"][protocol]["ma"] for x in recs if _attack_name(x) == a]) for a in attacks
                    },
                    "test_selected": any(x.get("selected_on_test") for x in recs),
                }
            )
        for c in corrs:
            series = {}
            for label, recs in sorted(labels.items()):
                clean = mean([x["clean"][protocol]["ma"] for x in recs])
                sev = {}
                for x in recs:
                    p = x["perturbation"]
                    if p["kind"] == "corruption" and p["name"] == c and p["severity"] > 0:
                        sev.setdefault(p["severity"], []).append(x["metrics"][protocol]["ma"])
                series[label] = [(0, clean)] + [(s, float(np.mean(v))) for s, v in sorted(sev.items())]
            curves.append(severity_svg(c, series))
            drop = np.mean([sr[0][1] - v for sr in series.values() for _, v in sr[1:]]) if series else 0.0
            if worst is None or drop > worst[1]:
                worst = (c, drop)
        heat = ""
        if worst is not None:
            c = worst[0]
            names, drops = [], []
            for label, recs in sorted(labels.items()):
                hit = [
                    x
                    for x in recs
                    if x["perturbation"]["kind"] == "corruption"
                    and x["perturbation"]["name"] == c
                    and x["perturbation"]["severity"] > 0
                ]
                if not hit:
                    continue
                attrs = hit[0]["attributes"]
                clean_attr = np.mean([x["clean"][protocol]["label_ma"] for x in hit], axis=0)
                corr_attr = np.mean([x["metrics"][protocol]["label_ma"] for x in hit], axis=0)
                names.append(label)
                drops.append((clean_attr - corr_attr).tolist())
            if names:
                heat = drop_heatmap_svg(names, attrs, drops, f"per-attribute mA drop under {c} (mean over severities)")
        out.append(
            {
                "dataset": ds,
                "rows": rows,
                "attacks": attacks,
                "corruptions": corrs,
                "baseline": base_label,
                "curves": curves,
                "heatmap": heat,
                "worst": worst[0] if worst else None,
            }
        )
    return out


def _attack_name(rec: dict) -> str:
    p = rec["perturbation"]
    return f"{p['name'].upper()} {p['eps_255']:g}/255" if p["kind"] == "attack" else ""


def _robust_md(sections: list[dict], protocol: str) -> str:
    lines = [f"## Robustness ({protocol} protocol)", ""]
    fmt = lambda v: "–" if v is None else f"{100 * v:.2f}"
    for sec in sections:
        head = ["configuration", "clean mA", "corrupted mA", "relative", "mCE"] + sec["attacks"]
        lines += [f"### {sec['dataset']}", "", "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
        for r in sec["rows"]:
            cells = [
                r["label"],
                fmt(r["clean"]),
                fmt(r["corrupted"]),
                "–" if r["relative"] is None else f"{r['relative']:.3f}",
                "–" if r["mce"] is None else f"{r['mce']:.1f}",
            ]
            cells += [fmt(r["attacks"][a]) for a in sec["attacks"]]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _robust_tex(sections: list[dict]) -> str:
    out = []
    fmt = lambda v: "--" if v is None else f"{100 * v:.1f}"
    for sec in sections:
        cols = "l" + "r" * (4 + len(sec["attacks"]))
        head = ["Configuration", "Clean", "Corrupted", "Rel.", "mCE"] + [a.replace("/", "/") for a in sec["attacks"]]
        out += [
            f"% {sec['dataset']}",
            f"\\begin{{tabular}}{{{cols}}}",
            "\\toprule",
            " & ".join(head) + " \\\\",
            "\\midrule",
        ]
        for r in sec["rows"]:
            cells = [
                r["label"].replace("_", "\\_").replace("&", "\\&"),
                fmt(r["clean"]),
                fmt(r["corrupted"]),
                "--" if r["relative"] is None else f"{r['relative']:.3f}",
                "--" if r["mce"] is None else f"{r['mce']:.1f}",
            ]
            cells += [fmt(r["attacks"][a]) for a in sec["attacks"]]
            out.append(" & ".join(cells) + " \\\\")
        out += ["\\bottomrule", "\\end{tabular}", ""]
    return "\n".join(out)


def _cross_md(matrices: list[dict], protocol: str) -> str:
    """The cross-domain matrices as Markdown: mA (mean ± std over seeds) per (trained on, evaluated on)."""
    lines = [f"## Cross-domain mA ({protocol} protocol)", ""]
    for m in matrices:
        lines += [f"### {m['label']}", "", "| trained on \\ evaluated on | " + " | ".join(m["evaluated"]) + " |"]
        lines.append("|---" * (len(m["evaluated"]) + 1) + "|")
        for row in m["rows"]:
            cells = []
            for c in row["cells"]:
                if c is None:
                    cells.append("–")
                    continue
                text = f"{100 * c['ma']:.2f}" + (f" ± {100 * c['std']:.2f}" if c["seeds"] > 1 else "")
                text += " (in domain)" if c.get("home") else f" ({c['shared']} shared)"
                cells.append(text + (" †" if c.get("test_selected") else ""))
            lines.append(f"| {row['trained_on']} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _protocol_view(
    draws, records: list[dict], protocol: str, cross: list[dict] | None = None, robust: list[dict] | None = None
) -> dict:
    per_dataset = configuration_rows(records, protocol)
    datasets = []
    for ds, rows in per_dataset.items():
        for r in rows:
            r["ci"] = row_interval(draws, r, protocol)
        datasets.append(
            {
                "name": ds,
                "rows": rows,
                "paired": _paired(draws, rows, protocol),
                "heatmap": heatmap_svg(rows),
                "scatter_params": scatter_svg(_points(rows, "trainable_params"), "trainable parameters"),
                "scatter_flops": scatter_svg(_points(rows, "flops"), "forward FLOPs per image", zero_label=""),
            }
        )
    return {
        "name": protocol,
        "protocol": PROTOCOLS[protocol],
        "datasets": datasets,
        "per_dataset": per_dataset,
        "main": main_table(per_dataset, protocol),
        "zs": _zs_drops(per_dataset),
        "published_protocol": _published_protocol(per_dataset, protocol),
        "cross": _cross_matrices(cross or [], per_dataset, protocol),
        "prompts": sections.prompt_sensitivity(per_dataset),
        "foundation": sections.foundation(per_dataset),
        "open_vocab": sections.open_vocabulary(per_dataset),
        "robust": _robustness(robust or [], per_dataset, protocol),
    }


def render_report(
    store_path: str | Path,
    out_dir: str | Path,
    protocol: str = "promptpar",
    include_smoke: bool = False,
    title: str = "parbench report",
    warn: Callable[[str], None] | None = None,
) -> Path:
    """Render the report folder from a store. Rows the store holds but parbench cannot use (written by another
    tool or an older version) are left out, each named to `warn` and in the page."""
    if protocol not in PROTOCOLS:
        raise ParbenchError("--protocol", f"one of {', '.join(PROTOCOLS)}", repr(protocol))
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ParbenchError(out, "a folder for the report (--out)", "a file")
    store_path = Path(store_path)
    if not store_path.is_file():
        raise ParbenchError(store_path, "a results store (run `parbench run ... --store FILE` first)", "no such file")
    store = Store(store_path, create=False)
    records, bad = store.read_records(include_smoke=include_smoke)
    failed, bad_failed = store.read_records(include_smoke=include_smoke, status="failed")
    skipped = [f"run {run_id}: {problem}" for run_id, problem in bad + bad_failed]
    for line in skipped:
        (warn or _stderr)(f"warning: {store_path}: skipped {line}")
    if not records and not failed:
        found = "none" + ("" if include_smoke else " (smoke runs, --set limit/max_steps, left out)")
        if skipped:
            found = f"none readable ({len(skipped)} skipped, e.g. {skipped[0]})"
        raise ParbenchError(store_path, "at least one finished run", found)
    cross, robust = store.derived("cross"), store.derived("robust")
    ids = store.run_ids()
    for d in (d for d in cross + robust if d["run_id"] not in ids):  # its training run is gone: named, left out
        line = f"{d['kind']} record {d['id']}: its run {d['run_id']} is not in the store"
        (warn or _stderr)(f"warning: {store_path}: skipped {line}")
        skipped.append(line)
    cross, robust = [c for c in cross if c["run_id"] in ids], [r for r in robust if r["run_id"] in ids]
    # every run's bootstrap draws in one query; a run from before draws existed gets them computed once, here
    draws = store.ensure_draws([r["run_id"] for r in records], REPORT_BOOT, REPORT_SEED)
    views = [_protocol_view(draws, records, p, cross, robust) for p in PROTOCOLS]
    per_dataset = views[0]["per_dataset"]
    curves = {
        ds: [(r["label"], curves_svg(r["history"], r["label"])) for r in rows] for ds, rows in per_dataset.items()
    }
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=select_autoescape())
    env.filters["pct"] = lambda v: "–" if v is None else f"{100 * v:.2f}"
    env.filters["mb"] = lambda v: "–" if not v else f"{v:,.0f}"
    env.filters["mbytes"] = lambda v: "–" if not v else f"{v / 2**20:,.3g}" if v < 10 * 2**20 else f"{v / 2**20:,.0f}"
    env.filters["num"] = lambda v: "–" if v is None else f"{v:,.0f}"
    env.filters["giga"] = lambda v: "–" if v is None else f"{v / 1e9:,.2f}"
    env.filters["value"] = tables._value
    env.filters["seeds"] = tables._seeds
    page = env.get_template("report.html.j2").render(
        title=title,
        views=views,
        default=protocol,
        metrics=HEADLINE,
        names=tables.NAMES,
        curves=curves,
        n_runs=len(records),
        failed=failed,
        published=published_rows,
        test_mark=tables.TEST_MARK,
        unspecified=sorted({r.get("unspecified", "negative") for r in records}),
        partitions=sorted({r.get("partition", 0) for r in records}),
        any_test_selected=any(r.get("selected_on_test") for r in records),
        escape=html.escape,
        skipped=skipped,
    )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ParbenchError(out, "a writable folder for the report (--out)", e.strerror or str(e)) from None
    write_text(out / "index.html", page)
    write_text(
        out / "leaderboard.md",
        "\n".join(tables.leaderboard_md(v["per_dataset"], v["name"], published_rows) for v in views),
    )
    write_text(out / "leaderboard.csv", tables.leaderboard_csv({v["name"]: v["per_dataset"] for v in views}))
    write_text(out / "main_table.md", "\n".join(tables.main_table_md(v["main"]) for v in views))
    for v in views:
        write_text(out / f"main_table_{v['name']}.tex", tables.main_table_tex(v["main"]))
    if cross:
        write_text(out / "cross_domain.md", "\n".join(_cross_md(v["cross"], v["name"]) for v in views))
    if any(v["robust"] for v in views):
        write_text(out / "robustness.md", "\n".join(_robust_md(v["robust"], v["name"]) for v in views))
        for v in views:
            write_text(out / f"robustness_{v['name']}.tex", _robust_tex(v["robust"]))
    return out / "index.html"
