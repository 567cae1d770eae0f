"""Runs saved in SQLite, in the folder named by MRT_STUDIO_HOME (default ~/.mrt_studio)."""

from __future__ import annotations

import json
import math
import os
import sqlite3
import time
from contextlib import closing

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    model TEXT NOT NULL,
    config_json TEXT NOT NULL,
    float_top1 REAL, float_top5 REAL, quant_top1 REAL, quant_top5 REAL,
    max_precision INTEGER, num_samples INTEGER,
    seconds REAL,
    layers_json TEXT NOT NULL,
    iops INTEGER
)
"""
# columns added after the first release: (name, SQL type); old databases get them on connect
ADDED_COLUMNS = [("iops", "INTEGER")]


def home() -> str:
    path = os.path.abspath(os.path.expanduser(os.environ.get("MRT_STUDIO_HOME") or "~/.mrt_studio"))
    os.makedirs(path, exist_ok=True)
    return path


def db_path() -> str:
    return os.path.join(home(), "runs.sqlite")


def _connect() -> sqlite3.Connection:
    conn = sqlite3.connect(db_path(), timeout=10)
    conn.row_factory = sqlite3.Row
    conn.execute(SCHEMA)
    have = {r["name"] for r in conn.execute("PRAGMA table_info(runs)")}
    for name, sql_type in ADDED_COLUMNS:
        if name not in have:
            with conn:
                conn.execute(f"ALTER TABLE runs ADD COLUMN {name} {sql_type}")
    return conn


def _num(x: float):
    """SQNR may be +-inf (exact / empty signal): JSON has no inf, so store it as a string."""
    if isinstance(x, float) and math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


def _unnum(x):
    return float(x) if isinstance(x, str) and x in ("inf", "-inf") else x


def save_run(model: str, config_json: str, evaluation, seconds: float, iops: int | None = None) -> int:
    layers = [{"name": l.name, "op": l.op, "node": l.node, "precision": l.precision, "sqnr_db": _num(l.sqnr_db),
               "cosine": l.cosine, "max_abs": l.max_abs, "restored": l.restored} for l in evaluation.layers]
    with closing(_connect()) as conn, conn:
        cur = conn.execute(
            "INSERT INTO runs (created, model, config_json, float_top1, float_top5, quant_top1, quant_top5, "
            "max_precision, num_samples, seconds, layers_json, iops) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (time.time(), model, config_json, evaluation.float_top1, evaluation.float_top5, evaluation.quant_top1,
             evaluation.quant_top5, evaluation.max_precision, evaluation.num_samples, seconds, json.dumps(layers),
             None if iops is None else int(iops)))
        return int(cur.lastrowid)


def _row(r: sqlite3.Row) -> dict:
    d = dict(r)
    d["layers"] = [{k: _unnum(v) for k, v in layer.items()} for layer in json.loads(d.pop("layers_json"))]
    return d


def list_runs(model: str | None = None) -> list[dict]:
    with closing(_connect()) as conn:
        if model:
            rows = conn.execute("SELECT * FROM runs WHERE model=? ORDER BY id DESC", (model,)).fetchall()
        else:
            rows = conn.execute("SELECT * FROM runs ORDER BY id DESC").fetchall()
    return [_row(r) for r in rows]


def get_run(run_id: int) -> dict | None:
    with closing(_connect()) as conn:
        r = conn.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
    return _row(r) if r else None


def delete_run(run_id: int) -> None:
    with closing(_connect()) as conn, conn:
        conn.execute("DELETE FROM runs WHERE id=?", (run_id,))
