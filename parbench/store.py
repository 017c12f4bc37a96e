"""The results store: one SQLite file (standard library), safe for several writers at once.

WAL mode, a busy timeout and `BEGIN IMMEDIATE` writes let parallel runs (suite shards, torchrun ranks, Slurm
arrays) share one file without losing rows. Each run keeps its full record (JSON), headline metrics per
protocol, per-attribute mA and its test predictions, so the report can rescore and pair-bootstrap later.
"""

from __future__ import annotations

import io
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import numpy as np

from parbench.errors import ParbenchError

SCHEMA_VERSION = 1
MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE IF NOT EXISTS runs (
        run_id TEXT PRIMARY KEY, key TEXT, dataset TEXT, method TEXT, backbone TEXT, pretrained TEXT,
        seed INTEGER, partition INTEGER, smoke INTEGER, selected_on TEXT, total_params INTEGER,
        trainable_params INTEGER, wall_s REAL, train_images_per_s REAL, peak_mem_mb REAL, finished TEXT,
        record TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS metrics (
        run_id TEXT, protocol TEXT, ma REAL, acc REAL, prec REAL, rec REAL, f1 REAL, threshold REAL,
        intervals TEXT, PRIMARY KEY (run_id, protocol));
    CREATE TABLE IF NOT EXISTS attribute_metrics (
        run_id TEXT, protocol TEXT, attribute TEXT, grp TEXT, ma REAL, PRIMARY KEY (run_id, protocol, attribute));
    CREATE TABLE IF NOT EXISTS predictions (run_id TEXT PRIMARY KEY, npz BLOB);
    CREATE INDEX IF NOT EXISTS runs_by_key ON runs(key);
    """,
}


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            self._migrate(con)

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        con.execute("PRAGMA busy_timeout = 60000")
        con.execute("PRAGMA journal_mode = WAL")
        return con

    def _migrate(self, con: sqlite3.Connection) -> None:
        con.execute("BEGIN IMMEDIATE")
        try:
            version = con.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise ParbenchError(self.path, f"a store of schema version <= {SCHEMA_VERSION}", str(version))
            for v in range(version + 1, SCHEMA_VERSION + 1):
                # statement by statement: executescript would commit the open IMMEDIATE transaction
                for stmt in MIGRATIONS[v].split(";"):
                    if stmt.strip():
                        con.execute(stmt)
            con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    def add_run(
        self, record: dict, probs: np.ndarray | None = None, labels: np.ndarray | None = None
    ) -> None:
        buf = None
        if probs is not None:
            b = io.BytesIO()
            np.savez_compressed(b, probs=probs.astype(np.float32), labels=labels)
            buf = b.getvalue()
        r = record
        for attempt in range(20):  # BEGIN IMMEDIATE may still see SQLITE_BUSY under heavy contention
            try:
                with self._connect() as con:
                    con.execute("BEGIN IMMEDIATE")
                    con.execute(
                        "INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        (r["run_id"], r.get("key"), r["dataset"], r["method"], r["backbone"], r.get("pretrained"),
                         r["seed"], r.get("partition", 0), int(bool(r.get("smoke"))), r.get("selected_on"),
                         r.get("total_params"), r.get("trainable_params"), r.get("wall_s"),
                         r.get("train_images_per_s"), r.get("peak_mem_mb"), r.get("finished"),
                         json.dumps(r, default=float)),
                    )  # fmt: skip
                    groups = r.get("groups", {})
                    for proto, m in r["metrics"].items():
                        con.execute(
                            "INSERT OR REPLACE INTO metrics VALUES (?,?,?,?,?,?,?,?,?)",
                            (r["run_id"], proto, m["ma"], m["acc"], m["prec"], m["rec"], m["f1"], m.get("threshold"),
                             json.dumps(r.get("intervals", {}).get(proto, {}))),
                        )  # fmt: skip
                        for a, v in zip(r.get("attributes", []), m.get("label_ma", []), strict=False):
                            con.execute("INSERT OR REPLACE INTO attribute_metrics VALUES (?,?,?,?,?)",
                                        (r["run_id"], proto, a, groups.get(a, ""), v))  # fmt: skip
                    if buf is not None:
                        con.execute("INSERT OR REPLACE INTO predictions VALUES (?,?)", (r["run_id"], buf))
                    con.execute("COMMIT")
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) and "busy" not in str(e):
                    raise
                time.sleep(0.05 * (attempt + 1))
        raise ParbenchError(self.path, "a writable store", "busy after 20 attempts")

    def records(self, include_smoke: bool = True) -> list[dict]:
        with self._connect() as con:
            rows = con.execute(
                "SELECT record, smoke FROM runs ORDER BY dataset, method, backbone, seed"
            ).fetchall()
        return [json.loads(rec) for rec, smoke in rows if include_smoke or not smoke]

    def keys(self) -> set[str]:
        with self._connect() as con:
            return {k for (k,) in con.execute("SELECT key FROM runs")}

    def count(self) -> int:
        with self._connect() as con:
            return con.execute("SELECT COUNT(*) FROM runs").fetchone()[0]

    def predictions(self, run_id: str) -> tuple[np.ndarray, np.ndarray] | None:
        with self._connect() as con:
            row = con.execute("SELECT npz FROM predictions WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            return None
        with np.load(io.BytesIO(row[0]), allow_pickle=False) as z:
            return z["probs"], z["labels"]

    def table(self) -> list[dict[str, Any]]:
        """One flat row per (run, protocol), for listing and export."""
        with self._connect() as con:
            con.row_factory = sqlite3.Row
            rows = con.execute(
                "SELECT r.run_id, r.dataset, r.method, r.backbone, r.pretrained, r.seed, r.smoke, r.selected_on,"
                " r.total_params, r.trainable_params, r.wall_s, r.train_images_per_s, r.peak_mem_mb, m.protocol,"
                " m.ma, m.acc, m.prec, m.rec, m.f1, m.threshold FROM runs r JOIN metrics m USING (run_id)"
                " ORDER BY r.dataset, r.method, r.seed, m.protocol"
            ).fetchall()
        return [dict(r) for r in rows]

    def merge_from(self, other: str | Path) -> int:
        """Copy every run of another store into this one (shards written to separate files)."""
        src = Store(other)
        n = 0
        for rec in src.records():
            pred = src.predictions(rec["run_id"])
            self.add_run(rec, *(pred if pred else (None, None)))
            n += 1
        return n
