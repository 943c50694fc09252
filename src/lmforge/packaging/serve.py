"""Serve a packaged model over HTTP on loopback: the command line of the chat server.

``python -m lmforge.packaging.serve --model data/07_model_output/lmforge-chat`` (``make serve``) loads the
package (``lmforge.packaging.chat_model``) and starts a uvicorn server (one worker) with the FastAPI app
of ``lmforge.packaging.app``: ``POST /v1/chat/completions`` (OpenAI-style), ``GET /health``,
``POST /v1/feedback`` and ``GET /v1/feedback/summary``. Every answered request is a row of the SQLite
table of ``lmforge.packaging.feedback_store``. ``--summary`` logs the mean rating per model version to
MLflow (``log_satisfaction``) and tags registered model versions with it.

``--model`` is a package directory or an MLflow URI (``models:/lmforge-chat-tiny@champion``, ``runs:/...``).
Without ``--model`` / ``--feedback-db`` the paths of the catalog entries ``packaged_model`` and
``serving_feedback`` (conf/base/catalog.yml) are used: the catalog owns the paths.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from lmforge.packaging.app import create_app
from lmforge.packaging.chat_model import ChatModel, resolve_model
from lmforge.packaging.feedback_store import FeedbackStore, log_satisfaction

logger = logging.getLogger(__name__)

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
MODEL_ENTRY = "packaged_model"
"""Catalog entry whose filepath is the default ``--model``."""
FEEDBACK_ENTRY = "serving_feedback"
"""Catalog entry whose filepath is the default ``--feedback-db``."""


def serve(model: str, *, feedback_db: str | Path, host: str = "127.0.0.1", port: int = 8000,
          model_version: str | None = None, max_tokens_limit: int = 256, device: str = "auto") -> None:
    """Load ``model`` and serve it until SIGINT/SIGTERM."""
    import uvicorn

    if host not in LOOPBACK_HOSTS:
        logger.warning("serving on %s: reachable from other machines; use 127.0.0.1 for local use", host)
    model_dir, registry_version = resolve_model(model)
    chat_model = ChatModel.load(model_dir, version=model_version or registry_version, device=device)
    app = create_app(chat_model, FeedbackStore(feedback_db), max_tokens_limit=max_tokens_limit)
    logger.info("serving %s (version %s) on http://%s:%d", model_dir, chat_model.version, host, port)
    uvicorn.run(app, host=host, port=port, workers=1, log_level="warning", access_log=False)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m lmforge.packaging.serve",
        description="Serve a packaged lmforge model: POST /v1/chat/completions, GET /health, POST /v1/feedback.",
    )
    parser.add_argument("--model", default=None,
                        help="package directory or MLflow URI such as models:/lmforge-chat-tiny@champion "
                             f"(default: the filepath of the catalog entry {MODEL_ENTRY})")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1, loopback only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--feedback-db", default=None, help="SQLite table of requests and ratings (default: the "
                        f"filepath of the catalog entry {FEEDBACK_ENTRY})")
    parser.add_argument("--model-version", default=None, help="version recorded with each request (default: "
                        "registry version, else <dir>@<weights sha256>)")
    parser.add_argument("--max-tokens-limit", type=int, default=256, help="largest max_tokens a request may ask")
    parser.add_argument("--device", default="auto", help="auto (GPU when present, else CPU), cpu, cuda or cuda:N")
    parser.add_argument("--summary", action="store_true",
                        help="print the mean rating per model version from --feedback-db, then exit; when "
                             "MLFLOW_TRACKING_URI is set, also log it to MLflow (experiment lmforge-serving) and "
                             "tag registry versions (models:/...) with user_satisfaction.*")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.feedback_db is None:
        args.feedback_db = _catalog_default(FEEDBACK_ENTRY)
    if args.summary:
        import os

        store = FeedbackStore(args.feedback_db)
        summary = log_satisfaction(store) if os.environ.get("MLFLOW_TRACKING_URI") else store.summary()
        logger.info("user satisfaction per model version:\n%s", json.dumps(summary, indent=2))
        return
    serve(args.model or _catalog_default(MODEL_ENTRY), feedback_db=args.feedback_db, host=args.host, port=args.port,
          model_version=args.model_version, max_tokens_limit=args.max_tokens_limit, device=args.device)


def _catalog_default(entry: str) -> str:
    """The catalog's filepath for ``entry`` (conf/ of the working directory, the project root): the CLI's default."""
    from lmforge.pipelines.catalog_paths import catalog_path

    return catalog_path(entry)


if __name__ == "__main__":
    main()
