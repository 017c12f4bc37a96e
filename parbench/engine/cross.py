"""Cross-dataset evaluation: a finished run, trained and selected on dataset A, scored on dataset B's test split
over the attributes the two cards share (`parbench.harmonise`).

The model is the run's own, restored from its folder exactly as `parbench eval` restores it (the frozen weights
checked against the run's digest), so a cross score is of the model the run recorded. Each (run, B) gives one
record, `kind = "cross"`, linked to the run by id and key and stored apart from training runs (the store's
`derived` table): no leaderboard row can be averaged with it. The record says which attributes were matched
(and through which shared name), which were dropped on each side, and the selection the run used: a run that
selected on test is marked here too.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np

from parbench.atomic import save_npz, write_text
from parbench.cards import load_card
from parbench.data import load_dataset
from parbench.data.dataset import PARDataset
from parbench.errors import ParbenchError
from parbench.harmonise import AttributeMap, match_attributes
from parbench.metrics import protocol_metrics


def in_train_vocabulary(ds: PARDataset, names: list[str]) -> PARDataset:
    """The evaluated images with the trained model's attribute columns (all unspecified): what the one
    prediction path needs to run the model; the labels scored come from the evaluated card afterwards."""
    return PARDataset(
        name=ds.name,
        attributes=list(names),
        labels=np.full((len(ds), len(names)), 255, np.uint8),
        relpaths=ds.relpaths,
        root=ds.root,
        partitions=ds.partitions,
        boxes=ds.boxes,
        box_origins=ds.box_origins,
        domains=ds.domains,
    )


def score_mapped(probs: np.ndarray, labels: np.ndarray, amap: AttributeMap, train, eval, unspecified: str):
    """(probabilities, labels) over the mapped pairs in the evaluated card's terms (a negated pair scores 1 - p)."""
    tcols, ecols, neg = amap.columns(train, eval)
    p = probs[:, tcols].astype(np.float32)
    neg = np.asarray(neg, bool)
    p[:, neg] = 1.0 - p[:, neg]
    y = labels[:, ecols]
    return p, y, protocol_metrics(y, p, unspecified)


def eval_target(train_card, eval_on: str, root: str | None):
    """(evaluated card, attribute map, its root) for scoring a model of `train_card` on `eval_on`; every way this
    can fail (no such dataset, nothing shared, no root) is one error, raised before any training when a run asks
    for cross scores."""
    from parbench.data.prepared import resolve_root

    try:
        eval_card = load_card(eval_on)
    except ParbenchError as e:
        if e.where is not None:
            raise
        raise ParbenchError("--eval-on", e.expected, e.found) from None
    amap = match_attributes(train_card, eval_card)
    if not amap.pairs:
        raise ParbenchError(
            eval_card.path or eval_card.name,
            f"attributes shared with {train_card.name} (the same name, or a declared alias in either card)",
            "none",
        )
    resolve_root(eval_card, root, flag=f"--eval-root {eval_card.name}=DIR")
    return eval_card, amap


def run_card(run: dict):
    """The card a finished run trained on: by the path or name its saved config holds (a card file stays a file)."""
    return load_card(run.get("config", {}).get("run", {}).get("dataset") or run["identity"]["dataset"])


def _key(run_key: str, card, data_sha: str, amap: AttributeMap, split: str, limit: int) -> str:
    blob = json.dumps([run_key, card.identity_sha256, data_sha, amap.as_dict(), split, limit], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def cross_evaluate(
    run_dir: str | Path,
    eval_on: str,
    root: str | None = None,
    store=None,
    progress=None,
    built=None,
) -> dict:
    """Score the run in `run_dir` on `eval_on`'s test split over the shared attributes; write
    `cross/<dataset>-<key>.json` (and its predictions) in the run folder, add it to `store`; return the record.
    Done before (same run, same evaluated data and mapping): the stored record, not a second evaluation.
    `built`: the run's model still in memory (right after training); else it is restored from the folder."""
    from parbench.engine.evaluate import predict_split
    from parbench.engine.restore import restore
    from parbench.engine.spec import data_fingerprint
    from parbench.engine.train import pick_device

    run_dir = Path(run_dir)
    rec_path = run_dir / "record.json"
    if not rec_path.is_file():
        raise ParbenchError(run_dir, "a finished run folder (record.json) to evaluate on another dataset", "none")
    run = json.loads(rec_path.read_text())
    train_card = run_card(run)
    eval_card, amap = eval_target(train_card, eval_on, root)
    split = eval_card.test_split
    limit = int(run.get("config", {}).get("train", {}).get("limit", 0) or 0)
    data_sha = data_fingerprint(eval_card, root)
    key = _key(run["key"], eval_card, data_sha, amap, split, limit)
    out_path = run_dir / "cross" / f"{eval_card.name.replace('/', '_')}-{key}.json"
    if out_path.is_file():
        rec = json.loads(out_path.read_text())
        if store is not None:
            with np.load(out_path.with_suffix(".npz"), allow_pickle=False) as pred:
                store.add_derived(rec, pred["probs"], pred["labels"])
        return {**rec, "reused": True}

    if built is None:
        built = restore(run_dir).built
    built.model.eval()
    ds = load_dataset(eval_card.path or eval_card.name, root)
    idx = ds.partition(split)
    if limit:
        idx = idx[:limit]
    device = pick_device(built.cfg)
    t0 = time.perf_counter()
    probs, _ = predict_split(built, in_train_vocabulary(ds, train_card.attribute_names), idx, device, progress)
    seconds = time.perf_counter() - t0
    p, y, metrics = score_mapped(probs, ds.labels[idx], amap, train_card, eval_card, built.cfg.unspecified)
    rec = {
        "id": f"{run['run_id']}@{eval_card.name}-{key}",
        "kind": "cross",
        "run_id": run["run_id"],
        "run_key": run["key"],
        "group_key": run.get("group_key"),
        "method": run["method"],
        "backbone": run["backbone"],
        "pretrained": run.get("pretrained"),
        "seed": run["seed"],
        "smoke": run.get("smoke", False),
        "trained_on": run["dataset"],
        "evaluated_on": eval_card.name,
        "eval_split": split,
        "eval_card_sha256": eval_card.identity_sha256,
        "eval_data_sha256": data_sha,
        "eval_root": str(ds.root),
        "mapping": amap.as_dict(),
        "attributes": [pair.eval for pair in amap.pairs],
        "metrics": metrics,
        "in_domain": {k: {m: v[m] for m in ("ma", "acc", "prec", "rec", "f1")} for k, v in run["metrics"].items()},
        "selected_on": run.get("selected_on"),
        "selected_on_test": run.get("selected_on_test", False),
        "n_test": int(len(idx)),
        "eval_images_per_s": len(idx) / max(seconds, 1e-9),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if ds.domains is not None:
        from parbench.metrics import per_domain_metrics

        rec["per_domain"] = per_domain_metrics(y, p, [ds.domains[i] for i in idx.tolist()], built.cfg.unspecified)
    save_npz(out_path.with_suffix(".npz"), probs=p, labels=y, index=idx)
    write_text(out_path, json.dumps(rec, indent=1, default=float))
    if store is not None:
        store.add_derived(rec, p, y)
    return rec
