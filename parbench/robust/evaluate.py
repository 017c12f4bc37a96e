"""Score a finished run on its own test split under each corruption (and severity) and each attack; one derived
record per perturbation, `kind = "robust"`, linked to the run by id and key (the store's `derived` table), never
a training run and never in the leaderboard.

The model is the run's own (restored from its folder and checked against its frozen-weights digest, or still in
memory right after training), fed through the run's own preprocessing: a corruption is applied to the decoded
image (after a person box is cut, before the resize), seeded by (corruption, severity, image) so every method
sees the same pixels; an attack perturbs the resized image in [0, 1] before the normalisation. Severity 0 is the
clean pass: its metrics equal the run's test metrics exactly (tested); its probabilities equal the run's to float
rounding, since a feature method's run is scored from cached features and severity 0 runs the whole model.
"""

from __future__ import annotations

import hashlib
import json
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from parbench.atomic import save_npz, write_text
from parbench.data.torchdata import ImageSplit, load_image
from parbench.engine.loss import positive_ratio
from parbench.errors import ParbenchError
from parbench.metrics import protocol_metrics, ranking_metrics
from parbench.robust.attacks import Attack, attack_batch
from parbench.robust.corruptions import CORRUPTIONS, corrupt, corruption_seed

DEFAULT_CORRUPTIONS = CORRUPTIONS
DEFAULT_ATTACKS = ("fgsm", "pgd")
DEFAULT_EPS = (10 / 255, 4 / 255)


def parse_eps(text: str | float) -> float:
    """'10/255' or 0.039 -> a radius in [0, 1] pixel units."""
    if isinstance(text, int | float):
        return float(text)
    num, sep, den = str(text).partition("/")
    try:
        return float(num) / float(den) if sep else float(num)
    except ValueError:
        raise ParbenchError("--eps", "radii like 10/255 or 0.039", repr(text)) from None


@dataclass
class RobustPlan:
    """What to evaluate a run under; `mce_baseline` names the method the report normalises corruption errors to."""

    corruptions: tuple[str, ...] = DEFAULT_CORRUPTIONS
    severities: tuple[int, ...] = (1, 2, 3, 4, 5)
    attacks: tuple[str, ...] = DEFAULT_ATTACKS
    eps: tuple[float, ...] = DEFAULT_EPS
    steps: int = 10
    mce_baseline: str | None = None
    limit: int = 0  # the first N test images only (a demo slice; recorded in every perturbation), 0 = all
    attack_batch_size: int = 64
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        bad = [c for c in self.corruptions if c not in CORRUPTIONS]
        if bad:
            raise ParbenchError("--corruptions", f"names among {', '.join(CORRUPTIONS)}", ", ".join(bad))
        if not all(isinstance(s, int) and 0 <= s <= 5 for s in self.severities):
            raise ParbenchError("--severities", "severities among 0..5 (0 = clean)", repr(self.severities))
        bad = [a for a in self.attacks if a not in ("fgsm", "pgd")]
        if bad:
            raise ParbenchError("--attacks", "fgsm and/or pgd", ", ".join(bad))
        if not self.corruptions and not self.attacks:
            raise ParbenchError(
                "--corruptions / --attacks", "at least one corruption or attack to evaluate", "none of either"
            )
        if not (isinstance(self.steps, int) and self.steps >= 1):
            raise ParbenchError(
                "--steps", "at least 1 PGD step (0 would score the clean images as 'pgd')", repr(self.steps)
            )
        if not all(0 < e < 1 for e in self.eps):
            raise ParbenchError("--eps", "L-inf radii in (0, 1), e.g. 10/255", repr(self.eps))

    def attack_list(self) -> list[Attack]:
        return [Attack(a, float(e), steps=self.steps) for a in self.attacks for e in self.eps]


class CorruptedSplit(ImageSplit):
    """The test images under one corruption: decoded, corrupted (seeded per image), then the run's own eval
    transform. Runs in the loader's workers like any other decoding."""

    takes_epoch = False
    __getitems__ = None  # image by image (the loader then collates)

    def __init__(self, ds, indices, transform, name: str, severity: int):
        super().__init__(ds, indices, transform)
        self.name, self.severity = name, severity

    def __getitem__(self, k):
        i = int(self.indices[int(k)])
        img = load_image(self.ds, i)
        if self.severity:
            seed = corruption_seed(self.name, self.severity, i)
            img = Image.fromarray(corrupt(np.asarray(img), self.name, self.severity, seed))
        x = self.transform.base(img)
        return self.transform.normalize(x), torch.from_numpy(self.ds.labels[i].astype(np.int64)), i


class PixelSplit(ImageSplit):
    """The test images as the model's input before normalisation: (3, H, W) float in [0, 1]."""

    takes_epoch = False
    __getitems__ = None

    def __getitem__(self, k):
        i = int(self.indices[int(k)])
        x = self.transform.base(load_image(self.ds, i))
        return x.float() / 255.0, torch.from_numpy(self.ds.labels[i].astype(np.int64)), i


# what `--set` may change when a finished run is evaluated under perturbations: where and how fast it runs, never
# a number (the run keeps the settings it trained and was scored with)
EVAL_SETTINGS = ("device", "eval_batch_size", "num_workers", "cache_images", "cache_images_gb")


def check_eval_settings(settings: dict) -> None:
    bad = sorted(k for k in settings if k.replace("-", "_") not in EVAL_SETTINGS)
    if bad:
        raise ParbenchError(
            "--set",
            f"with run folders, only settings that change no number ({', '.join(EVAL_SETTINGS)}): a finished run "
            "keeps the settings it was trained and scored with",
            ", ".join(bad),
        )


def _context(run_dir: Path, built=None, settings: dict | None = None):
    """(run record, built model, dataset, test indices, training-split positive ratios) of a finished run."""
    from parbench.cards import load_card
    from parbench.engine.restore import restore
    from parbench.engine.spec import RunSpec, load_data
    from parbench.engine.splits import choose_splits

    rec_path = run_dir / "record.json"
    if not rec_path.is_file():
        raise ParbenchError(run_dir, "a finished run folder (record.json) to evaluate under perturbations", "none")
    rec = json.loads(rec_path.read_text())
    if built is None:
        check_eval_settings(settings or {})
        built = restore(run_dir, overrides=settings).built
    built.model.eval()
    run = rec["config"]["run"]
    card = load_card(run["dataset"])
    spec = RunSpec(
        dataset=card.path or card.name,
        method=built.method.name,
        root=run.get("root"),
        partition=int(run.get("partition") or 0),
        source=run.get("source"),
        split_file=run.get("split_file"),
    )
    ds = load_data(spec, card)
    cfg = built.cfg
    train_idx, _, _ = choose_splits(card, ds, cfg, int(rec["seed"]))
    if cfg.limit:
        train_idx = train_idx[: cfg.limit]
    test_idx = ds.partition(card.test_split)
    if cfg.limit:
        test_idx = test_idx[: cfg.limit]
    pos = positive_ratio(ds.labels[train_idx], cfg.unspecified)
    return rec, built, ds, test_idx, pos


def _record(rec: dict, pert: dict, probs, labels, unspecified: str, seconds: float, n: int, plan: RobustPlan):
    key = hashlib.sha256(json.dumps(pert, sort_keys=True).encode()).hexdigest()[:10]
    name = pert["name"] + (f"-s{pert['severity']}" if pert["kind"] == "corruption" else f"-eps{pert['eps_255']:g}")
    return {
        "id": f"{rec['run_id']}@{name}-{key}",
        "kind": "robust",
        "run_id": rec["run_id"],
        "run_key": rec["key"],
        "group_key": rec.get("group_key"),
        "dataset": rec["dataset"],
        "method": rec["method"],
        "backbone": rec["backbone"],
        "pretrained": rec.get("pretrained"),
        "seed": rec["seed"],
        "smoke": rec.get("smoke", False),
        "attributes": rec["attributes"],
        "groups": rec.get("groups", {}),
        "perturbation": pert,
        "metrics": protocol_metrics(labels, probs, unspecified),
        "ranking": ranking_metrics(labels, probs, unspecified),
        "clean": {p: {k: v for k, v in m.items() if k != "threshold"} for p, m in rec["metrics"].items()},
        "clean_map": (rec.get("ranking") or {}).get("map"),
        "selected_on_test": rec.get("selected_on_test", False),
        "reference": rec.get("reference"),  # a foreign checkpoint, not a parbench run: no leaderboard row to join
        "mce_baseline": plan.mce_baseline,
        "n_test": n,
        "seconds": seconds,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def _predict(built, split, device, progress, label: str):
    from parbench.engine.train import epoch_loader, predict
    from parbench.methods import method_where

    loader = epoch_loader(split, built.cfg.eval_batch_size, 0, 0, built.cfg.num_workers, shuffle=False)
    task = progress.add_task(label, total=len(split)) if progress else None
    tick = (lambda n: progress.advance(task, n)) if progress else None
    try:
        return predict(built.model, loader, device, built.cfg, tick=tick, where=method_where(built.method))
    finally:
        if progress:
            progress.remove_task(task)


def _attack(built, ds, idx, pos, attack: Attack, device, plan: RobustPlan, progress):
    """(probabilities on the adversarial images, labels, {loss per step (first batch), bf16 vs fp32 check})."""
    from parbench.data.transforms import build_transform
    from parbench.engine.train import autocast

    cfg, pre = built.cfg, built.preprocess
    split = PixelSplit(ds, idx, build_transform(pre, False))
    loader = torch.utils.data.DataLoader(split, batch_size=plan.attack_batch_size, shuffle=False)
    mean = torch.tensor(pre.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(pre.std, device=device).view(1, 3, 1, 1)
    pos_t = torch.as_tensor(pos, device=device)
    model = built.model.to(device).eval()
    gen = torch.Generator().manual_seed(0)  # PGD's random start: the same for every method
    ac = lambda: autocast(device, cfg)
    probs, labels, info = [], [], {}
    task = progress.add_task(attack.key, total=len(idx)) if progress else None
    for b, (x, y, _) in enumerate(loader):
        x, y = x.to(device), y.to(device)
        try:
            adv, losses = attack_batch(model, x, y, pos_t, mean, std, attack, cfg.unspecified, ac, gen)
        except RuntimeError as e:
            if "graph" not in str(e) and "grad" not in str(e):
                raise
            raise ParbenchError(
                f"method {built.method.name}",
                "a model whose logits are differentiable in its input images (an attack follows their gradient)",
                f"no gradient reaches the images ({str(e).splitlines()[0]})",
            ) from None
        if b == 0:
            info["loss_per_step"] = losses
            if device.type == "cuda" and cfg.amp:  # how far bf16 autocast moves the attack: one batch in fp32
                g32 = torch.Generator().manual_seed(0)
                adv32, l32 = attack_batch(model, x, y, pos_t, mean, std, attack, cfg.unspecified, nullcontext, g32)
                info["bf16_vs_fp32"] = {
                    "final_loss_bf16": losses[-1],
                    "final_loss_fp32": l32[-1],
                    "pixels_differing": float((adv != adv32).float().mean()),
                    "max_pixel_difference": float((adv - adv32).abs().max()),
                }
        with torch.no_grad(), ac():
            out = model((adv - mean) / std)
        probs.append(torch.sigmoid(out["logits"].float()).cpu().numpy())
        labels.append(y.cpu().numpy().astype(np.uint8))
        if progress:
            progress.advance(task, len(x))
    if progress:
        progress.remove_task(task)
    return np.concatenate(probs), np.concatenate(labels), info


def plan_perturbations(plan: RobustPlan) -> list[tuple[dict, Attack | None]]:
    """(perturbation as its records describe it, the attack or None for a corruption), in evaluation order."""
    out: list[tuple[dict, Attack | None]] = [
        ({"kind": "corruption", "name": c, "severity": s}, None) for c in plan.corruptions for s in plan.severities
    ]
    out += [(a.describe(), a) for a in plan.attack_list()]
    if plan.limit:  # a slice of the test split is another perturbation set, never mixed with the full one
        out = [({**p, "limit": plan.limit}, a) for p, a in out]
    return out


def perturbations(plan: RobustPlan) -> list[str]:
    """The plan's perturbations as the records describe them (JSON, sorted keys): what a suite checks is done."""
    return [json.dumps(p, sort_keys=True) for p, _ in plan_perturbations(plan)]


def robust_evaluate(
    run_dir: str | Path, plan: RobustPlan, store=None, progress=None, built=None, settings: dict | None = None
) -> list[dict]:
    """Evaluate the run in `run_dir` under every perturbation of `plan`; write `robust/<perturbation>.json`
    (and its predictions) in the run folder and add each record to `store`. A perturbation done before for this
    run is read back, not evaluated again. `settings`: EVAL_SETTINGS only (device, batch size, workers)."""
    from parbench.data.transforms import build_transform
    from parbench.engine.train import pick_device

    run_dir = Path(run_dir)
    rec, built, ds, idx, pos = _context(run_dir, built, settings)
    device = pick_device(built.cfg)
    built.model.to(device)
    unspecified = built.cfg.unspecified
    out = []
    if plan.limit and plan.limit < len(idx):  # clean scores of the same images, or relative robustness lies
        idx = idx[: plan.limit]
        split = CorruptedSplit(ds, idx, build_transform(built.preprocess, False), "clean", 0)
        probs, labels = _predict(built, split, device, progress, "clean slice")
        rec = {**rec, "metrics": protocol_metrics(labels, probs, unspecified)}
        rec["ranking"] = ranking_metrics(labels, probs, unspecified)
    for pert, attack in plan_perturbations(plan):
        cached = _done(run_dir, rec, pert, plan)
        if cached is not None:
            out.append(cached)
            if store is not None:
                store.add_derived(cached)
            continue
        t0 = time.perf_counter()
        info = {}
        if attack is None:
            split = CorruptedSplit(ds, idx, build_transform(built.preprocess, False), pert["name"], pert["severity"])
            probs, labels = _predict(built, split, device, progress, f"{pert['name']} s{pert['severity']}")
        else:
            probs, labels, info = _attack(built, ds, idx, pos, attack, device, plan, progress)
        seconds = time.perf_counter() - t0
        r = _record(rec, pert, probs, labels, unspecified, seconds, len(idx), plan)
        if info:
            r["attack_info"] = info
            r["dtype"] = "bf16 autocast" if device.type == "cuda" and built.cfg.amp else "fp32"
        path = run_dir / "robust" / f"{r['id'].split('@', 1)[1]}.json"
        save_npz(path.with_suffix(".npz"), probs=probs.astype(np.float32), labels=labels, index=idx)
        write_text(path, json.dumps(r, indent=1, default=float))
        if store is not None:
            store.add_derived(r, probs, labels)
        out.append(r)
    return out


def _done(run_dir: Path, rec: dict, pert: dict, plan: RobustPlan) -> dict | None:
    folder = run_dir / "robust"
    if not folder.is_dir():
        return None
    key = hashlib.sha256(json.dumps(pert, sort_keys=True).encode()).hexdigest()[:10]
    for p in folder.glob(f"*-{key}.json"):
        r = json.loads(p.read_text())
        if r.get("run_key") == rec["key"] and r.get("perturbation") == pert:
            return {**r, "mce_baseline": plan.mce_baseline, "reused": True}
    return None


def reference_run(
    checkpoint: str | Path,
    dataset: str,
    out: str | Path,
    root: str | None = None,
    method: str | None = None,
    backbone: str | None = None,
    overrides: dict | None = None,
    progress=None,
):
    """A foreign checkpoint (a method's reference file, e.g. PromptPAR's released weights) as a run folder the
    robustness records can link to: imported exactly as `parbench eval` imports it, scored clean on the
    dataset's test split, `record.json` written (once per checkpoint content, dataset data and settings).
    Returns (folder, built model)."""
    from parbench.cards import load_card
    from parbench.data import load_dataset
    from parbench.engine.config import config_dict
    from parbench.engine.evaluate import predict_split
    from parbench.engine.restore import restore
    from parbench.engine.spec import data_fingerprint, identity_key
    from parbench.engine.train import pick_device
    from parbench.hashing import file_sha256

    r = restore(checkpoint, method, dataset, backbone, None, overrides)
    if r.source != "reference":
        raise ParbenchError(checkpoint, "a reference checkpoint (a parbench run: pass its folder as RUN)", "a run's")
    card = load_card(dataset)
    built = r.built
    identity = {
        "checkpoint_sha256": file_sha256(checkpoint),
        "dataset": card.name,
        "card_sha256": card.identity_sha256,
        "data_sha256": data_fingerprint(card, root),
        "method": built.method.name,
        "train": config_dict(built.cfg),
    }
    key = identity_key(identity)
    run_id = f"{card.name}-{built.method.name}-reference-{key}".replace("/", "_").replace(":", "_")
    folder = Path(out) / run_id
    if (folder / "record.json").is_file():
        return folder, built
    ds = load_dataset(card.path or card.name, root)
    idx = ds.partition(card.test_split)
    probs, labels = predict_split(built, ds, idx, pick_device(built.cfg), progress)
    rec = {
        "run_id": run_id,
        "key": key,
        "identity": identity,
        "status": "finished",
        "dataset": card.name,
        "method": built.method.name,
        "backbone": built.backbone.name,
        "pretrained": str(checkpoint),
        "seed": 0,
        "attributes": card.attribute_names,
        "groups": {a.name: a.group for a in card.attributes},
        "metrics": protocol_metrics(labels, probs, built.cfg.unspecified),
        "ranking": ranking_metrics(labels, probs, built.cfg.unspecified),
        "config": {"run": {"dataset": card.name, "root": root, "partition": 0}, "train": config_dict(built.cfg)},
        "selected_on": "reference checkpoint",
        "reference": str(checkpoint),
        "inferred": r.inferred,
        "n_test": int(len(idx)),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    write_text(folder / "record.json", json.dumps(rec, indent=1, default=float))
    return folder, built


def summary(records: list[dict], protocol: str = "promptpar") -> dict:
    """One run's robustness in a few numbers: clean mA, mean corrupted mA (over corruptions and severities >= 1),
    relative robustness (corrupted / clean), and the robust mA under each attack."""
    corr = [r for r in records if r["perturbation"]["kind"] == "corruption" and r["perturbation"]["severity"] > 0]
    clean = records[0]["clean"][protocol]["ma"] if records else None
    mean_c = float(np.mean([r["metrics"][protocol]["ma"] for r in corr])) if corr else None
    attacks = {
        f"{r['perturbation']['name']} {r['perturbation']['eps_255']:g}/255": r["metrics"][protocol]["ma"]
        for r in records
        if r["perturbation"]["kind"] == "attack"
    }
    return {
        "clean_ma": clean,
        "mean_corrupted_ma": mean_c,
        "relative": mean_c / clean if (mean_c is not None and clean) else None,
        "attacks": attacks,
    }


def mce(records: dict[str, list[dict]], baseline: str, protocol: str = "promptpar") -> dict[str, float]:
    """ImageNet-C's mean corruption error, normalised to `baseline`: per corruption c, CE_c = sum over
    severities of the method's error (1 - mA) over the baseline's; mCE = mean of CE_c over corruptions, in %
    (the baseline scores 100). `records`: configuration label -> its robust records (seed means taken first)."""

    def errors(recs):
        by = {}
        for r in recs:
            p = r["perturbation"]
            if p["kind"] == "corruption" and p["severity"] > 0:
                by.setdefault(p["name"], {}).setdefault(p["severity"], []).append(1 - r["metrics"][protocol]["ma"])
        return {c: {s: float(np.mean(v)) for s, v in sev.items()} for c, sev in by.items()}

    base = errors(records.get(baseline, []))
    out = {}
    for label, recs in records.items():
        mine = errors(recs)
        ces = []
        for c, sev in mine.items():
            if c in base and set(sev) == set(base[c]) and sum(base[c].values()) > 0:
                ces.append(sum(sev.values()) / sum(base[c].values()))
        if ces:
            out[label] = 100 * float(np.mean(ces))
    return out
