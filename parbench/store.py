"""The results store: one SQLite file (standard library), safe for several writers on one machine.

WAL mode, a busy timeout and `BEGIN IMMEDIATE` writes let parallel runs on one machine (suite shards,
local-parallel jobs, torchrun rank 0s) share one file without losing rows. WAL needs shared memory between the
writers, which network filesystems (NFS, Lustre, most cluster home folders) do not provide: jobs on several
machines must each write their own store file and merge them (`parbench store merge`, `suite --collect`).

Each run keeps its full record (JSON), its status (finished, or failed: a diverged run is stored, never
scored), headline metrics per protocol, per-attribute mA and its test predictions, so the report can rescore
and pair-bootstrap later. Opening a path that is not a store, or a store that cannot be written, is one clear
error at open time, not a traceback after training.
"""

from __future__ import annotations

import io
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from parbench.errors import ParbenchError

SCHEMA_VERSION = 4
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
    2: """
    ALTER TABLE runs ADD COLUMN status TEXT NOT NULL DEFAULT 'finished';
    ALTER TABLE runs ADD COLUMN group_key TEXT;
    """,
    # 3: results derived from a finished run (cross-dataset scores, later robustness): linked to the run by its
    # id and key, kept out of `runs` so no leaderboard query can mix them with clean rows
    3: """
    CREATE TABLE IF NOT EXISTS derived (
        id TEXT PRIMARY KEY, kind TEXT NOT NULL, run_id TEXT NOT NULL, run_key TEXT, record TEXT NOT NULL, npz BLOB);
    CREATE INDEX IF NOT EXISTS derived_by_kind ON derived(kind);
    """,
    # 4: each run's bootstrap draws (parbench.draws): headline metrics on n_boot resamples of its test images,
    # float64 (n_boot, 5) per protocol, with the test set's identity; intervals and paired tests are made of them
    4: """
    CREATE TABLE IF NOT EXISTS draws (
        run_id TEXT NOT NULL, protocol TEXT NOT NULL, n_boot INTEGER NOT NULL, seed INTEGER NOT NULL,
        test_sha TEXT NOT NULL, draws BLOB NOT NULL, PRIMARY KEY (run_id, protocol, n_boot, seed));
    """,
}


# A derived record with the same id is the same evaluation: a copy without predictions (a merge from a store that
# kept none) never takes away the predictions already stored
_DERIVED_UPSERT = (
    " ON CONFLICT(id) DO UPDATE SET kind = excluded.kind, run_id = excluded.run_id, run_key = excluded.run_key,"
    " record = excluded.record, npz = COALESCE(excluded.npz, derived.npz)"
)

# What every stored record must hold to be listed, merged or reported (what `engine.run` writes, and more); a row
# written by another tool or an older version that lacks any of it is skipped and named, never a KeyError later.
RECORD_KEYS = ("run_id", "dataset", "method", "backbone", "seed")
FINISHED_KEYS = ("metrics", "attributes", "total_params", "trainable_params")
METRIC_KEYS = ("ma", "acc", "prec", "rec", "f1", "label_ma")


def record_problem(rec: Any, status: str = "finished") -> str | None:
    """What a stored record lacks for parbench to use it, or None when it is complete."""
    if not isinstance(rec, dict):
        return f"a record that is {type(rec).__name__}, not an object"
    need = RECORD_KEYS + (FINISHED_KEYS if status == "finished" else ())
    missing = [k for k in need if k not in rec]
    if missing:
        return f"its record lacks {', '.join(missing)}"
    if status == "finished":
        metrics = rec["metrics"]
        if not isinstance(metrics, dict) or not metrics:
            return "its record has no metrics per protocol"
        for proto, m in metrics.items():
            gone = [k for k in METRIC_KEYS if not isinstance(m, dict) or k not in m]
            if gone:
                return f"its {proto} metrics lack {', '.join(gone)}"
    return None


class Store:
    def __init__(self, path: str | Path, create: bool = True):
        """`create=False` for reading: a missing file is an error (a mistyped --store never makes an empty one)."""
        self.path = Path(path)
        if self.path.is_dir():
            raise ParbenchError(self.path, "a results store file (.sqlite)", "a folder")
        if not create and not self.path.is_file():
            raise ParbenchError(self.path, "an existing results store", "no such file")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as con:
                self._migrate(con)
        except sqlite3.DatabaseError as e:
            raise self._error(e) from None
        except OSError as e:
            raise ParbenchError(self.path, "a writable folder for the results store", e.strerror or str(e)) from None

    def _error(self, e: sqlite3.Error) -> ParbenchError:
        msg = str(e)
        if "readonly" in msg or "read-only" in msg or "unable to open" in msg:
            return ParbenchError(self.path, "a writable results store (file and folder)", msg)
        if "disk" in msg and "full" in msg:
            return ParbenchError(self.path, "free disk space for the results store", msg)
        return ParbenchError(self.path, "a parbench results store (SQLite)", msg)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection that is closed afterwards (sqlite3's own context manager only ends the transaction)."""
        con = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        try:
            con.execute("PRAGMA busy_timeout = 60000")
            con.execute("PRAGMA journal_mode = WAL")
            yield con
        finally:
            con.close()

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

    def _read(self, sql: str, args: tuple = (), rows: bool = False) -> list:
        try:
            with self._connect() as con:
                if rows:
                    con.row_factory = sqlite3.Row
                return con.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as e:
            raise self._error(e) from None

    def _write(self, write: Callable[[sqlite3.Connection], Any], attach: Path | None = None) -> None:
        """Run `write` in one IMMEDIATE transaction, retried while another writer holds the lock (BEGIN IMMEDIATE
        may still see SQLITE_BUSY under heavy contention); a failure inside rolls the transaction back. `attach`:
        another store, reachable as `src` inside the transaction."""
        for attempt in range(20):
            try:
                with self._connect() as con:
                    if attach is not None:  # outside the transaction: SQLite attaches nothing inside one
                        con.execute("ATTACH DATABASE ? AS src", (str(attach),))
                    con.execute("BEGIN IMMEDIATE")
                    try:
                        write(con)
                    except BaseException:
                        con.execute("ROLLBACK")
                        raise
                    con.execute("COMMIT")
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) and "busy" not in str(e):
                    raise self._error(e) from None
                time.sleep(0.05 * (attempt + 1))
            except sqlite3.DatabaseError as e:
                raise self._error(e) from None
        raise ParbenchError(self.path, "a writable store", "busy after 20 attempts")

    def add_run(
        self,
        record: dict,
        probs: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        draws: dict[str, np.ndarray] | None = None,
    ) -> None:
        """Insert or replace a run: a finished one with its metrics, predictions and bootstrap draws (computed
        when the run finished: `parbench.draws`), a failed one alone."""
        draw_rows = self._draw_rows(record["run_id"], labels, draws) if draws and labels is not None else []
        buf = None
        if probs is not None:
            b = io.BytesIO()
            np.savez_compressed(b, probs=probs.astype(np.float32), labels=labels)
            buf = b.getvalue()
        r = record
        status = r.get("status", "finished")

        def write(con: sqlite3.Connection) -> None:
            for table in ("metrics", "attribute_metrics", "predictions"):
                con.execute(f"DELETE FROM {table} WHERE run_id = ?", (r["run_id"],))
            con.execute(
                "INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    r["run_id"],
                    r.get("key"),
                    r["dataset"],
                    r["method"],
                    r["backbone"],
                    r.get("pretrained"),
                    r["seed"],
                    r.get("partition", 0),
                    int(bool(r.get("smoke"))),
                    r.get("selected_on"),
                    r.get("total_params"),
                    r.get("trainable_params"),
                    r.get("wall_s"),
                    r.get("train_images_per_s"),
                    r.get("peak_mem_mb"),
                    r.get("finished"),
                    json.dumps(r, default=float),
                    status,
                    r.get("group_key"),
                ),
            )
            groups = r.get("groups", {})
            for proto, m in (r.get("metrics") or {}).items():
                con.execute(
                    "INSERT OR REPLACE INTO metrics VALUES (?,?,?,?,?,?,?,?,?)",
                    (
                        r["run_id"],
                        proto,
                        m["ma"],
                        m["acc"],
                        m["prec"],
                        m["rec"],
                        m["f1"],
                        m.get("threshold"),
                        json.dumps(r.get("intervals", {}).get(proto, {})),
                    ),
                )
                for a, v in zip(r.get("attributes", []), m.get("label_ma", []), strict=False):
                    con.execute(
                        "INSERT OR REPLACE INTO attribute_metrics VALUES (?,?,?,?,?)",
                        (r["run_id"], proto, a, groups.get(a, ""), v),
                    )
            if buf is not None:
                con.execute("INSERT OR REPLACE INTO predictions VALUES (?,?)", (r["run_id"], buf))
            if draw_rows:
                con.execute("DELETE FROM draws WHERE run_id = ?", (r["run_id"],))
                con.executemany("INSERT OR REPLACE INTO draws VALUES (?,?,?,?,?,?)", draw_rows)

        self._write(write)

    @staticmethod
    def _draw_rows(run_id: str, labels: np.ndarray, draws: dict[str, np.ndarray], seed: int | None = None) -> list:
        from parbench.draws import REPORT_SEED, test_set_sha

        sha = test_set_sha(labels)
        seed = REPORT_SEED if seed is None else seed
        return [
            (run_id, proto, int(d.shape[0]), seed, sha, np.ascontiguousarray(d, dtype=np.float64).tobytes())
            for proto, d in draws.items()
        ]

    def load_draws(self, n_boot: int, seed: int) -> dict[str, tuple[str, dict[str, np.ndarray]]]:
        """Run id -> (test set identity, protocol -> (n_boot, 5) draws), for every run that has them: one query."""
        out: dict[str, tuple[str, dict[str, np.ndarray]]] = {}
        rows = self._read(
            "SELECT run_id, protocol, test_sha, draws FROM draws WHERE n_boot = ? AND seed = ?", (n_boot, seed)
        )
        for run_id, proto, sha, blob in rows:
            entry = out.setdefault(run_id, (sha, {}))
            entry[1][proto] = np.frombuffer(blob, dtype=np.float64).reshape(n_boot, -1)
        return out

    def ensure_draws(self, run_ids: list[str], n_boot: int, seed: int, progress=None) -> dict:
        """`load_draws`, after computing once (from the stored predictions) and storing the draws of any run in
        `run_ids` that lacks them: a store written before draws existed, or a run with `bootstrap = 0`. A run
        without stored predictions gets none."""
        from parbench.draws import compute_draws

        have = self.load_draws(n_boot, seed)
        missing = [r for r in run_ids if r not in have]
        for lo in range(0, len(missing), 200):  # a bounded batch of prediction blobs in memory at a time
            batch = missing[lo : lo + 200]
            marks = ",".join("?" * len(batch))
            rows = self._read(
                f"SELECT p.run_id, p.npz, r.record FROM predictions p JOIN runs r USING (run_id)"
                f" WHERE p.run_id IN ({marks})",
                tuple(batch),
            )
            new = []
            for k, (run_id, blob, text) in enumerate(rows):
                with np.load(io.BytesIO(blob), allow_pickle=False) as z:
                    probs, labels = z["probs"], z["labels"]
                unspecified = json.loads(text).get("unspecified", "negative")
                new += self._draw_rows(run_id, labels, compute_draws(labels, probs, unspecified, n_boot, seed), seed)
                if progress is not None:
                    progress(lo + k + 1, len(missing))
            if new:
                self._write(
                    lambda con, rows=new: con.executemany("INSERT OR REPLACE INTO draws VALUES (?,?,?,?,?,?)", rows)
                )
        return self.load_draws(n_boot, seed) if missing else have

    def add_derived(self, record: dict, probs: np.ndarray | None = None, labels: np.ndarray | None = None) -> None:
        """Insert or replace a derived result: `record` holds `id`, `kind` and the `run_id` / `run_key` it came
        from (an evaluation of that run on other data or under a perturbation), never a training run."""
        for k in ("id", "kind", "run_id"):
            if k not in record:
                raise ParbenchError(self.path, f"a derived record with '{k}'", f"keys {sorted(record)[:8]}")
        buf = None
        if probs is not None:
            b = io.BytesIO()
            np.savez_compressed(b, probs=probs.astype(np.float32), labels=labels)
            buf = b.getvalue()
        row = (record["id"], record["kind"], record["run_id"], record.get("run_key"), json.dumps(record, default=float))
        self._write(lambda con: con.execute("INSERT INTO derived VALUES (?,?,?,?,?,?)" + _DERIVED_UPSERT, (*row, buf)))

    def derived(self, kind: str | None = None) -> list[dict]:
        """Derived records (of one kind, or all), in a stable order; a row that is not valid JSON is left out."""
        sql, args = "SELECT record FROM derived ORDER BY kind, run_id, id", ()
        if kind is not None:
            sql, args = "SELECT record FROM derived WHERE kind = ? ORDER BY run_id, id", (kind,)
        out = []
        for (text,) in self._read(sql, args):
            try:
                out.append(json.loads(text))
            except (TypeError, ValueError):
                continue
        return out

    def derived_predictions(self, derived_id: str) -> tuple[np.ndarray, np.ndarray] | None:
        rows = self._read("SELECT npz FROM derived WHERE id = ? AND npz IS NOT NULL", (derived_id,))
        if not rows:
            return None
        with np.load(io.BytesIO(rows[0][0]), allow_pickle=False) as z:
            return z["probs"], z["labels"]

    def read_records(
        self, include_smoke: bool = True, status: str | None = "finished"
    ) -> tuple[list[dict], list[tuple[str, str]]]:
        """(complete run records in a stable order, (run id, what is wrong) for each row that cannot be used);
        `status=None` for every status."""
        rows = self._read(
            "SELECT run_id, record, smoke, status FROM runs ORDER BY dataset, method, backbone, seed, run_id"
        )
        good, bad = [], []
        for run_id, text, smoke, st in rows:
            if not (include_smoke or not smoke) or not (status is None or st == status):
                continue
            try:
                rec = json.loads(text)
            except (TypeError, ValueError):
                bad.append((str(run_id), "its record is not valid JSON"))
                continue
            problem = record_problem(rec, st)
            if problem:
                bad.append((str(run_id), problem))
            else:
                good.append(rec)
        return good, bad

    def records(self, include_smoke: bool = True, status: str | None = "finished") -> list[dict]:
        """Complete run records in a stable order (rows that cannot be used are left out: `read_records` names
        them); `status=None` for every status."""
        return self.read_records(include_smoke, status)[0]

    def speeds(self) -> list[tuple[str, str, float | None, float | None]]:
        """(method, backbone, training images/s, evaluation images/s) of every finished run that is no smoke
        run (a `limit` run times a few batches): one query, the evaluation figure read inside the record."""
        return self._read(
            "SELECT method, backbone, train_images_per_s, json_extract(record, '$.eval_images_per_s') FROM runs"
            " WHERE status = 'finished' AND smoke = 0"
        )

    def run_ids(self) -> set[str]:
        """Every run row's id, whatever its status."""
        return {r for (r,) in self._read("SELECT run_id FROM runs")}

    def keys(self) -> set[str]:
        """Identities already recorded (finished or failed): a suite does not run them again."""
        return {k for (k,) in self._read("SELECT key FROM runs")}

    def has_key(self, key: str | None) -> bool:
        return bool(self._read("SELECT 1 FROM runs WHERE key = ? LIMIT 1", (key,)))

    def count(self) -> int:
        return self._read("SELECT COUNT(*) FROM runs")[0][0]

    def predictions(self, run_id: str) -> tuple[np.ndarray, np.ndarray] | None:
        rows = self._read("SELECT npz FROM predictions WHERE run_id = ?", (run_id,))
        if not rows:
            return None
        with np.load(io.BytesIO(rows[0][0]), allow_pickle=False) as z:
            return z["probs"], z["labels"]

    def table(self) -> list[dict[str, Any]]:
        """One flat row per (finished run, protocol), for listing and export."""
        rows = self._read(
            "SELECT r.run_id, r.dataset, r.method, r.backbone, r.pretrained, r.seed, r.smoke, r.selected_on,"
            " r.total_params, r.trainable_params, r.wall_s, r.train_images_per_s, r.peak_mem_mb, m.protocol,"
            " m.ma, m.acc, m.prec, m.rec, m.f1, m.threshold FROM runs r JOIN metrics m USING (run_id)"
            " WHERE r.status = 'finished' ORDER BY r.dataset, r.method, r.seed, m.protocol",
            rows=True,
        )
        return [dict(r) for r in rows]

    def attribute_table(self) -> list[dict[str, Any]]:
        """One flat row per (finished run, protocol, attribute): the per-attribute mA."""
        rows = self._read(
            "SELECT r.run_id, r.dataset, r.method, r.backbone, r.pretrained, r.seed, r.selected_on, a.protocol,"
            " a.attribute, a.grp AS attribute_group, a.ma FROM runs r JOIN attribute_metrics a USING (run_id)"
            " WHERE r.status = 'finished' ORDER BY r.dataset, r.method, r.seed, a.protocol, a.rowid",
            rows=True,
        )
        return [dict(r) for r in rows]

    def merge_from(self, other: str | Path, warn: Callable[[str], None] | None = None) -> int:
        """Copy every run of another store into this one (shards written to separate files); idempotent; returns
        the runs copied. Rows whose records cannot be used are not copied; each is named to `warn`. Done in SQL,
        the other store attached, in one transaction: every row and blob is copied, none is decoded. A stored
        prediction or derived record's predictions are never replaced by a copy without them."""
        src = Store(other, create=False)  # brought to this schema first
        records, bad = src.read_records(status=None)
        for run_id, problem in bad:
            if warn is not None:
                warn(f"warning: {src.path}: skipped run {run_id}: {problem}")
        keep = [(r["run_id"],) for r in records]

        def write(con: sqlite3.Connection) -> None:
            con.execute("CREATE TEMP TABLE IF NOT EXISTS keep (run_id TEXT PRIMARY KEY)")
            con.execute("DELETE FROM keep")
            con.executemany("INSERT OR IGNORE INTO keep VALUES (?)", keep)
            kept = "run_id IN (SELECT run_id FROM keep)"
            con.execute(f"INSERT OR REPLACE INTO main.runs SELECT * FROM src.runs WHERE {kept}")
            for table in ("metrics", "attribute_metrics"):
                con.execute(f"DELETE FROM main.{table} WHERE {kept}")
                con.execute(f"INSERT OR REPLACE INTO main.{table} SELECT * FROM src.{table} WHERE {kept}")
            for table in ("predictions", "draws"):
                con.execute(f"INSERT OR REPLACE INTO main.{table} SELECT * FROM src.{table} WHERE {kept}")
            con.execute("INSERT INTO main.derived SELECT * FROM src.derived WHERE json_valid(record)" + _DERIVED_UPSERT)

        self._write(write, attach=src.path)
        return len(keep)
