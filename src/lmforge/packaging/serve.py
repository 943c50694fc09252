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

The port is bound before the model loads and handed to uvicorn, so a busy port (a second ``make
serve``) is one line on stderr and "serving on" is only logged once the server owns its port. A
missing package or an unknown registry URI is one line too (``lmforge.errors``).
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import socket
from collections.abc import Sequence
from pathlib import Path

from lmforge.errors import UserError, run_cli
from lmforge.packaging.app import DEFAULT_MAX_BODY_BYTES, create_app
from lmforge.packaging.chat_model import PRODUCE_PACKAGE, ChatModel, resolve_model
from lmforge.packaging.feedback_store import FeedbackStore, log_satisfaction
from lmforge.packaging.loadtest import quiet_store_migrations

logger = logging.getLogger(__name__)

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
MODEL_ENTRY = "packaged_model"
"""Catalog entry whose filepath is the default ``--model``."""
FEEDBACK_ENTRY = "serving_feedback"
"""Catalog entry whose filepath is the default ``--feedback-db``."""


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (as uvicorn binds it); ``UserError`` when the port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise UserError(f"port {port} on {host} is already in use (another `make serve`?)",
                            "stop that server, or pick another port: --port N / make serve SERVE_PORT=N") from exc
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}", "pass another --host/--port") from exc
    return sock


def serve(model: str, *, feedback_db: str | Path, host: str = "127.0.0.1", port: int = 8000,
          model_version: str | None = None, max_tokens_limit: int = 256, device: str = "auto",
          max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
          model_next_step: str = f"{PRODUCE_PACKAGE}, or pass --model") -> None:
    """Load ``model`` and serve it until SIGINT/SIGTERM (``model_next_step``: what to do when it is missing)."""
    import uvicorn

    if host not in LOOPBACK_HOSTS:
        logger.warning("serving on %s: reachable from other machines; use 127.0.0.1 for local use", host)
    sock = bind(host, port)  # first: a busy port must not cost a model load
    try:
        model_dir, registry_version = resolve_model(model, next_step=model_next_step)
        chat_model = ChatModel.load(model_dir, version=model_version or registry_version, device=device)
        app = create_app(chat_model, FeedbackStore(feedback_db), max_tokens_limit=max_tokens_limit,
                         max_body_bytes=max_body_bytes)
        server = uvicorn.Server(uvicorn.Config(app, workers=1, log_level="warning", access_log=False))
        logger.info("serving %s (version %s) on http://%s:%d", model_dir, chat_model.version, host, port)
        server.run(sockets=[sock])
    finally:
        sock.close()


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
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES,
                        help=f"largest request body; bigger ones get 413 (default {DEFAULT_MAX_BODY_BYTES})")
    parser.add_argument("--summary", action="store_true",
                        help="print the mean rating per model version from --feedback-db, then exit; when "
                             "MLFLOW_TRACKING_URI is set, also log it to MLflow (experiment lmforge-serving) and "
                             "tag registry versions (models:/...) with user_satisfaction.*")
    parser.add_argument("--verbose", action="store_true", help="show the full traceback of an error")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_store_migrations()
    if args.feedback_db is None:
        args.feedback_db = _catalog_default(FEEDBACK_ENTRY)
    if args.summary:
        import os

        store = FeedbackStore(args.feedback_db)
        summary = log_satisfaction(store) if os.environ.get("MLFLOW_TRACKING_URI") else store.summary()
        logger.info("user satisfaction per model version (answers to the chat client, or rated):\n%s\n"
                    "answered requests per client: %s", json.dumps(summary, indent=2),
                    json.dumps(store.client_counts()))
        return
    if args.model:
        next_step = ("--model takes a package directory made by `kedro run --pipelines packaging`, or an MLflow "
                     "URI such as models:/lmforge-chat-tiny@champion")
    else:
        next_step = f"{PRODUCE_PACKAGE}, or pass --model <package directory or models:/<name>@<alias>>"
    serve(args.model or _catalog_default(MODEL_ENTRY), feedback_db=args.feedback_db, host=args.host, port=args.port,
          model_version=args.model_version, max_tokens_limit=args.max_tokens_limit, device=args.device,
          max_body_bytes=args.max_body_bytes, model_next_step=next_step)


def _catalog_default(entry: str) -> str:
    """The catalog's filepath for ``entry`` (conf/ of the working directory, the project root): the CLI's default."""
    from lmforge.pipelines.catalog_paths import catalog_path

    if not Path("conf/base/catalog.yml").is_file():
        raise UserError(f"no conf/base/catalog.yml in {Path.cwd()} to read the default path of {entry!r} from",
                        "run from the project root, or pass --model and --feedback-db")
    return catalog_path(entry)


if __name__ == "__main__":
    run_cli(main, "lmforge.packaging.serve")
