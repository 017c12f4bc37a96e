"""The report's tables as files a paper can be written from: CSV (one row per configuration, per-attribute mA
included), Markdown, and the methods x datasets main table in Markdown and LaTeX (booktabs; best per column in
bold, second underlined, the seed standard deviation as a smaller suffix). Test-selected rows are marked in
every format."""

from __future__ import annotations

import csv
import io
import re

from parbench.metrics import HEADLINE, PROTOCOLS

NAMES = {"ma": "mA", "acc": "Acc", "prec": "Prec", "rec": "Rec", "f1": "F1"}
TEST_MARK = "†"  # selected on the test split (the references' practice): optimistic


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.2f}"


def _value(row: dict, k: str) -> str:
    """mean ± std over seeds; no ± for one seed or seeds that give identical results (deterministic)."""
    if len(row["seeds"]) > 1 and not row["identical_seeds"]:
        return f"{_pct(row[k])} ± {_pct(row[k + '_std'])}"
    return _pct(row[k])


def _seeds(row: dict) -> str:
    n = len(row["seeds"])
    return f"{n} (identical)" if row["identical_seeds"] else str(n)


def _name(row: dict) -> str:
    return row["label"] + (f" {TEST_MARK}" if row.get("selected_on_test") else "")


def leaderboard_csv(views: dict[str, dict[str, list[dict]]]) -> str:
    """One row per (protocol, dataset, configuration); `views` maps protocol -> per-dataset rows."""
    buf = io.StringIO()
    w = csv.writer(buf)
    attrs = sorted({a for pd in views.values() for rows in pd.values() for r in rows for a in r["attributes"]})
    cols = [
        "protocol",
        "dataset",
        "configuration",
        "method",
        "backbone",
        "weights",
        "activation",
        "settings",
        "n_seeds",
        "seeds",
        "selected_on",
        "selected_on_test",
        "select_protocol",
        "train_split",
    ]
    cols += [c for k in HEADLINE for c in (k, k + "_std")] + ["map", "mauc"]
    cols += [
        "total_params",
        "trainable_params",
        "image_tower_params",
        "flops_per_image",
        "fit_s",
        "eval_s",
        "train_images_per_s",
        "eval_images_per_s",
        "eval_timed",
        "peak_train_mem_mb",
        "peak_eval_mem_mb",
        "peak_mem_kind",
        "device",
        "dtype",
    ]
    cols += [f"ma[{a}]" for a in attrs]
    w.writerow(cols)
    for protocol, per_dataset in views.items():
        for ds, r in ((ds, r) for ds, rows in per_dataset.items() for r in rows):
            settings = "; ".join(f"{k}={v}" for k, v in r["distinct"].items())
            per_attr = dict(zip(r["attributes"], r["label_ma"], strict=True))
            w.writerow(
                [
                    protocol,
                    ds,
                    _name(r),
                    r["method"],
                    r["backbone"],
                    r["weights"],
                    r["activation"],
                    settings,
                    len(r["seeds"]),
                    " ".join(map(str, r["seeds"])),
                    r["selected_on"],
                    r["selected_on_test"],
                    r["select_protocol"],
                    r["train_split"],
                ]
                + [x for k in HEADLINE for x in (r[k], r[k + "_std"])]
                + [r["map"], r["mauc"]]
                + [
                    r["total_params"],
                    r["trainable_params"],
                    r["image_tower_params"],
                    r["flops"],
                    r["fit_s"],
                    r["eval_s"],
                    r["train_images_per_s"],
                    r["eval_images_per_s"],
                    r["eval_timed"],
                    r["peak_mem_mb"],
                    r["peak_eval_mem_mb"],
                    r["peak_mem_kind"],
                    r["device"],
                    r["dtype"],
                ]
                + [per_attr.get(a, "") for a in attrs]
            )
    return buf.getvalue()


def leaderboard_md(per_dataset: dict[str, list[dict]], protocol: str, published) -> str:
    p = PROTOCOLS[protocol]
    lines = [
        f"Protocol: {protocol} (threshold {p.threshold}, {p.description}). Values in %, mean ± std over seeds "
        f"(no ± where seeds agree exactly). {TEST_MARK} = selected on the test split (optimistic).",
        "",
    ]
    for ds, rows in per_dataset.items():
        lines += [
            f"### {ds}",
            "",
            "| configuration | weights | seeds | selected on | train split | "
            + " | ".join(NAMES[k] for k in HEADLINE)
            + " | mAP | trainable | total |",
            "|---|---|---|---|---|" + "---|" * len(HEADLINE) + "---|---|---|",
        ]
        for r in rows:
            vals = " | ".join(_value(r, k) for k in HEADLINE)
            lines.append(
                f"| {_name(r)} | {r['weights']} | {_seeds(r)} | {r['selected_on']} | {r['train_split']} | "
                f"{vals} | {_pct(r['map'])} | {r['trainable_params']:,} ({r['trainable_pct']:.2f}%) | "
                f"{r['total_params']:,} |"
            )
        for q in published(ds):
            vals = " | ".join("–" if q[k] is None else f"{q[k]:.2f}" for k in HEADLINE)
            lines.append(
                f"| {q['method']} (published, {q['protocol']} protocol) | {q['backbone']} | – | – | – | "
                f"{vals} | – | – | – |"
            )
        attrs = rows[0]["attributes"]
        lines += [
            "",
            f"Per-attribute mA (%) on {ds}:",
            "",
            "| attribute | group | " + " | ".join(r["label"] for r in rows) + " |",
            "|---|---|" + "---|" * len(rows),
        ]
        for i, a in enumerate(attrs):
            lines.append(
                f"| {a} | {rows[0]['groups'].get(a, '')} | " + " | ".join(_pct(r["label_ma"][i]) for r in rows) + " |"
            )
        lines.append("")
    return "\n".join(lines)


def _main_cells(row: dict, datasets: list[str]):
    """(cell or None, metric, rank: 1 best, 2 second, 0 other) for each column of a main-table row."""
    for d in datasets:
        c = row["cells"].get(d)
        for k in HEADLINE:
            yield c, k, 0 if c is None else c.get("rank", {}).get(k, 0)


def main_table_md(table: dict) -> str:
    ds = table["datasets"]
    head = "| method | " + " | ".join(f"{d} {NAMES[k]}" for d in ds for k in HEADLINE) + " |"
    lines = [
        f"Main table, protocol {table['protocol']}: mean over seeds (%); **best**, _second_ per column among "
        f"measured rows; {TEST_MARK} = selected on test.",
        "",
        head,
        "|---|" + "---|" * (len(ds) * len(HEADLINE)),
    ]
    for r in table["rows"]:
        cells = []
        for c, k, rank in _main_cells(r, ds):
            v = "–" if c is None else _pct(c[k])
            cells.append(f"**{v}**" if rank == 1 else f"_{v}_" if rank == 2 else v)
        test = any(c.get("selected_on_test") for c in r["cells"].values())
        lines.append(f"| {r['label']}{' ' + TEST_MARK if test else ''} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


_TEX = {"\\": r"\textbackslash{}", "_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#", "{": r"\{", "}": r"\}",
        "†": r"$^\dagger$", "·": r"$\cdot$", "~": r"\textasciitilde{}", "$": r"\$", "^": r"\^{}"}  # fmt: skip


def _tex(s: str) -> str:
    """Escape text for LaTeX in one pass (so an escape's own braces are never escaped again)."""
    return re.sub(r"[\\_%&#{}†·~$^]", lambda m: _TEX[m.group()], s)


def main_table_tex(table: dict) -> str:
    """booktabs: one column group per dataset; best per column \\textbf, second \\underline, ± std scriptsize."""
    ds = table["datasets"]
    k = len(HEADLINE)
    out = [
        f"% parbench main table, protocol {table['protocol']} (threshold {PROTOCOLS[table['protocol']].threshold});",
        "% needs \\usepackage{booktabs}; best per column in bold, second underlined, among measured rows.",
        "\\begin{tabular}{l" + ("r" * k) * len(ds) + "}",
        "\\toprule",
        "Method & " + " & ".join(f"\\multicolumn{{{k}}}{{c}}{{{_tex(d)}}}" for d in ds) + " \\\\",
        " ".join(f"\\cmidrule(lr){{{2 + i * k}-{1 + (i + 1) * k}}}" for i in range(len(ds))),
        " & " + " & ".join(NAMES[m] for _ in ds for m in HEADLINE) + " \\\\",
        "\\midrule",
    ]
    for r in table["rows"]:
        cells = []
        for c, m, rank in _main_cells(r, ds):
            if c is None:
                cells.append("--")
                continue
            v = f"{100 * c[m]:.2f}"
            v = f"\\textbf{{{v}}}" if rank == 1 else f"\\underline{{{v}}}" if rank == 2 else v
            if len(c["seeds"]) > 1 and not c["identical_seeds"]:
                v += f"{{\\scriptsize$\\pm${100 * c[m + '_std']:.2f}}}"
            cells.append(v)
        test = any(c.get("selected_on_test") for c in r["cells"].values())
        out.append(_tex(r["label"] + (f" {TEST_MARK}" if test else "")) + " & " + " & ".join(cells) + " \\\\")
    out += ["\\bottomrule", "\\end{tabular}", ""]
    return "\n".join(out)
