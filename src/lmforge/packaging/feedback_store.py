"""The server's request/response/rating table (SQLite) and the user-satisfaction metric read from it.

Every answered chat request is a row of ``interactions`` (``FeedbackStore``): the request, the reply,
its latency and, once the user rates it (``POST /v1/feedback``), the rating 1-5. ``summary`` gives the
mean rating per model version (the user-satisfaction metric); ``log_satisfaction`` (``python -m
lmforge.packaging.serve --summary``) logs it to MLflow and, for a version served from the Model
Registry, tags that registered model version with it (``user_satisfaction.mean_rating``, ...).
The table's path is an argument: the CLI's default is the catalog entry ``serving_feedback``.

Who sent a request matters: a load test's hundred answers, or a curl check, are not answers a user
was offered to rate, and counting them drove the rating rate from 0.75 to 0.02. Each row keeps the
client that its ``X-Lmforge-Client`` header named (``chat`` for ``python -m lmforge.packaging.chat``,
``loadtest`` for the load test, NULL for anything else, and for rows recorded before the column
existed). The metric counts as a *response* an answer given to the chat client, or one somebody rated
(a rating shows a person read it, whatever sent the request); the rest stays in the table, counted
per client by ``client_counts``.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from lmforge.packaging.loadtest import CHAT_CLIENT, log_to_mlflow

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS interactions (
    id            TEXT PRIMARY KEY,
    created_at    REAL NOT NULL,
    model_version TEXT NOT NULL,
    request       TEXT NOT NULL,   -- JSON of the messages and generation settings
    response      TEXT NOT NULL,
    latency_ms    REAL NOT NULL,
    rating        INTEGER CHECK (rating BETWEEN 1 AND 5),
    rated_at      REAL,
    client        TEXT,            -- X-Lmforge-Client of the request (chat, loadtest) or NULL
    engine        TEXT             -- what generated it: torch:f32:cpu, llama.cpp:q8_0:<gguf sha256 12>, ...
)
"""
_COUNTED = f"(client = '{CHAT_CLIENT}' OR rating IS NOT NULL)"
"""Which rows are user responses (see the module docstring)."""


class FeedbackStore:
    """SQLite table of answered requests and their ratings; safe to use from several threads."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with self._connect() as db:
            db.execute(_SCHEMA)
            columns = {row[1] for row in db.execute("PRAGMA table_info(interactions)")}
            if "client" not in columns:  # a table from before clients were told apart
                db.execute("ALTER TABLE interactions ADD COLUMN client TEXT")
            if "engine" not in columns:  # a table from before answers named their engine
                db.execute("ALTER TABLE interactions ADD COLUMN engine TEXT")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def record(self, response_id: str, model_version: str, request: dict, response: str, latency_ms: float,
               client: str | None = CHAT_CLIENT, engine: str | None = None) -> None:
        """One answered request; ``client`` is who sent it (``chat``, ``loadtest``, None when unnamed), ``engine``
        what generated the answer (the rating still belongs to ``model_version``: the engine serves that model)."""
        with self._lock, self._connect() as db:
            db.execute(
                "INSERT INTO interactions (id, created_at, model_version, request, response, latency_ms, client,"
                " engine) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (response_id, time.time(), model_version, json.dumps(request, ensure_ascii=False), response,
                 latency_ms, client, engine),
            )

    def rate(self, response_id: str, rating: int) -> bool:
        """Set (or replace) the rating of a response; False when the id is unknown."""
        if not 1 <= int(rating) <= 5:
            raise ValueError(f"rating must be an integer from 1 to 5, got {rating!r}")
        with self._lock, self._connect() as db:
            cur = db.execute("UPDATE interactions SET rating = ?, rated_at = ? WHERE id = ?",
                             (int(rating), time.time(), response_id))
            return cur.rowcount == 1

    def get(self, response_id: str) -> dict[str, Any] | None:
        with self._lock, self._connect() as db:
            db.row_factory = sqlite3.Row
            row = db.execute("SELECT * FROM interactions WHERE id = ?", (response_id,)).fetchone()
        return dict(row) if row is not None else None

    def summary(self) -> dict[str, dict[str, float]]:
        """Per model version: ``responses``, ``rated``, ``mean_rating`` (None if nothing is rated), ``rating_rate``.

        ``responses`` are the user responses of the module docstring: load-test and other unnamed traffic
        is left out (``client_counts`` counts it).
        """
        with self._lock, self._connect() as db:
            rows = db.execute(
                "SELECT model_version, COUNT(*), COUNT(rating), AVG(rating) FROM interactions"
                f" WHERE {_COUNTED} GROUP BY model_version"
            ).fetchall()
        return {
            version: {"responses": n, "rated": rated, "mean_rating": mean, "rating_rate": rated / n if n else 0.0}
            for version, n, rated, mean in rows
        }


    def client_counts(self) -> dict[str, dict[str, int]]:
        """Per model version: answered requests per client (``chat``, ``loadtest``, ``none``), all rows."""
        with self._lock, self._connect() as db:
            rows = db.execute("SELECT model_version, COALESCE(client, 'none'), COUNT(*) FROM interactions"
                              " GROUP BY model_version, client").fetchall()
        counts: dict[str, dict[str, int]] = {}
        for version, client, n in rows:
            counts.setdefault(version, {})[client] = n
        return counts


SATISFACTION_TAG_PREFIX = "user_satisfaction."
"""Prefix of the registered-model-version tags `log_satisfaction` sets (``user_satisfaction.mean_rating``, ...)."""


def parse_registry_version(model_version: str) -> tuple[str, str] | None:
    """``"<registered model name>/<version number>"`` (what `resolve_model` records) -> (name, number), else None."""
    name, sep, number = model_version.rpartition("/")
    return (name, number) if sep and name and number.isdigit() else None


def log_satisfaction(store: FeedbackStore, tracking_uri: str | None = None) -> dict[str, dict[str, float]]:
    """Log each model version's user-satisfaction metric to MLflow; put it on registered versions too.

    Every model version in the table gets a run in the ``lmforge-serving`` experiment (tag ``model_version``,
    metrics ``serving.user_satisfaction.{responses,rated,mean_rating,rating_rate}``). A version served from the
    Model Registry (``<name>/<number>``, recorded when the server loaded ``models:/<name>@<alias>`` or
    ``models:/<name>/<number>``) also gets tags on that registered model version:
    ``user_satisfaction.{mean_rating,ratings,responses,rating_rate,run_id}``, so the registry shows each
    version's rating next to its lineage. A registry version unknown to this tracking server is logged with
    a warning and skipped. Returns `FeedbackStore.summary`.
    """
    import mlflow

    summary = store.summary()
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    for version, stats in summary.items():
        metrics = {f"serving.user_satisfaction.{k}": v for k, v in stats.items() if v is not None}
        run_id = log_to_mlflow(metrics, params={}, tags={"model_version": version},
                               run_name=f"satisfaction-{version}", tracking_uri=tracking_uri)
        registered = parse_registry_version(version)
        if registered is None:
            continue
        name, number = registered
        tags = {"ratings": str(stats["rated"]), "responses": str(stats["responses"]),
                "rating_rate": f"{stats['rating_rate']:.6g}", "run_id": run_id}
        if stats["mean_rating"] is not None:
            tags["mean_rating"] = f"{stats['mean_rating']:.6g}"
        try:
            for key, value in tags.items():
                client.set_model_version_tag(name, number, SATISFACTION_TAG_PREFIX + key, value)
        except mlflow.exceptions.MlflowException as exc:
            logger.warning("model version %s is not in the registry at %s, its rating stays on run %s only: %s",
                           version, mlflow.get_tracking_uri(), run_id, exc.message)
            continue
        logger.info("registered model %s version %s: user_satisfaction.mean_rating=%s over %s rating(s)",
                    name, number, tags.get("mean_rating", "none"), tags["ratings"])
    return summary
