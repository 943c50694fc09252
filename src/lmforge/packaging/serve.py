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
import contextlib
import errno
import json
import logging
import socket
from collections.abc import Sequence
from pathlib import Path

from lmforge.errors import UserError, run_cli
from lmforge.packaging.app import DEFAULT_MAX_BODY_BYTES, create_app
from lmforge.packaging.chat_model import PRODUCE_PACKAGE, ChatModel, resolve_model
from lmforge.packaging.engine_model import EngineChatModel
from lmforge.packaging.engines import start_engine
from lmforge.packaging.feedback_store import FeedbackStore, log_satisfaction
from lmforge.packaging.loadtest import quiet_store_migrations
from lmforge.packaging.serving_config import ENGINES, FORMATS, GGUF_ENTRY, ServingConfig

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


def serve(model: str, *, feedback_db: str | Path, config: ServingConfig = ServingConfig(),
          model_version: str | None = None, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
          gguf: str | Path | None = None, gguf_dir: str | Path | None = None,
          model_next_step: str = f"{PRODUCE_PACKAGE}, or pass --model") -> None:
    """Serve ``model`` with ``config.engine`` until SIGINT/SIGTERM (``model_next_step``: what to do when it is missing).

    ``torch`` loads the package in this process; ``llama.cpp``/``vllm`` start the engine as a child
    (`lmforge.packaging.engines.start_engine`: ``gguf`` or the ``*-<format>.gguf`` of ``gguf_dir``), then
    the gateway; the engine stops when the gateway does (and dies with it when it is killed).
    """
    import uvicorn

    if config.host not in LOOPBACK_HOSTS:
        logger.warning("serving on %s: reachable from other machines; use 127.0.0.1 for local use", config.host)
    sock = bind(config.host, config.port)  # first: a busy port must not cost a model load
    try:
        model_dir, registry_version = resolve_model(model, next_step=model_next_step)
        with contextlib.ExitStack() as stack:
            if config.engine == "torch":
                chat_model = ChatModel.load(model_dir, version=model_version or registry_version, device=config.device)
            else:
                url, fingerprint = stack.enter_context(start_engine(config, model_dir, gguf=gguf, gguf_dir=gguf_dir))
                chat_model = EngineChatModel.load(model_dir, url, engine=fingerprint,
                                                  version=model_version or registry_version,
                                                  timeout=config.engine_timeout_s)
            app = create_app(chat_model, FeedbackStore(feedback_db), max_tokens_limit=config.max_tokens_limit,
                             max_body_bytes=max_body_bytes)
            # The engine batches concurrent requests: let as many reach it as a sync route can take at once.
            server = uvicorn.Server(uvicorn.Config(app, workers=1, log_level="warning", access_log=False))
            logger.info("serving %s (version %s, engine %s) on http://%s:%d", model_dir, chat_model.version,
                        chat_model.engine, config.host, config.port)
            server.run(sockets=[sock])
    finally:
        sock.close()


def build_parser() -> argparse.ArgumentParser:
    """The command line; every serving default comes from `ServingConfig` (a test holds them equal)."""
    defaults = ServingConfig()
    parser = argparse.ArgumentParser(
        prog="python -m lmforge.packaging.serve",
        description="Serve a packaged lmforge model: POST /v1/chat/completions, GET /health, POST /v1/feedback.",
    )
    parser.add_argument("--model", default=None,
                        help="package directory or MLflow URI such as models:/lmforge-chat-tiny@champion "
                             f"(default: the filepath of the catalog entry {MODEL_ENTRY})")
    parser.add_argument("--engine", choices=ENGINES, default=defaults.engine,
                        help=f"what generates (default {defaults.engine}): torch in this process, one request at a "
                             "time; llama.cpp or vllm as a child process behind this gateway")
    parser.add_argument("--format", choices=FORMATS, default=defaults.format,
                        help=f"GGUF format for --engine llama.cpp (default {defaults.format})")
    parser.add_argument("--gguf", default=None, help="GGUF file for llama.cpp (default: the *-<format>.gguf in the "
                        f"folder of the catalog entry {GGUF_ENTRY})")
    parser.add_argument("--parallel", type=int, default=defaults.parallel,
                        help=f"engine slots decoded together (default {defaults.parallel})")
    parser.add_argument("--engine-threads", type=int, default=defaults.engine_threads,
                        help="llama.cpp CPU threads (default: half the logical CPUs, at least 1)")
    parser.add_argument("--engine-startup-s", type=float, default=defaults.engine_startup_s,
                        help=f"seconds the engine may take to start (default {defaults.engine_startup_s:.0f})")
    parser.add_argument("--host", default=defaults.host, help="bind address (default 127.0.0.1, loopback only)")
    parser.add_argument("--port", type=int, default=defaults.port)
    parser.add_argument("--feedback-db", default=None, help="SQLite table of requests and ratings (default: the "
                        f"filepath of the catalog entry {FEEDBACK_ENTRY})")
    parser.add_argument("--model-version", default=None, help="version recorded with each request (default: "
                        "registry version, else <dir>@<weights sha256>)")
    parser.add_argument("--max-tokens-limit", type=int, default=defaults.max_tokens_limit,
                        help="largest max_tokens a request may ask")
    parser.add_argument("--device", default=defaults.device,
                        help="torch engine: auto (GPU when present, else CPU), cpu, cuda or cuda:N")
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES,
                        help=f"largest request body; bigger ones get 413 (default {DEFAULT_MAX_BODY_BYTES})")
    parser.add_argument("--summary", action="store_true",
                        help="print the mean rating per model version from --feedback-db, then exit; when "
                             "MLFLOW_TRACKING_URI is set, also log it to MLflow (experiment lmforge-serving) and "
                             "tag registry versions (models:/...) with user_satisfaction.*")
    parser.add_argument("--verbose", action="store_true", help="show the full traceback of an error")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
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
    config = ServingConfig(engine=args.engine, format=args.format, host=args.host, port=args.port,
                           parallel=args.parallel, engine_threads=args.engine_threads,
                           max_tokens_limit=args.max_tokens_limit, device=args.device,
                           engine_startup_s=args.engine_startup_s)
    model = args.model or _catalog_default(MODEL_ENTRY)
    gguf_dir = None
    if config.engine == "llama.cpp" and args.gguf is None:
        with contextlib.suppress(KeyError):  # no such entry: start_engine asks for --gguf
            gguf_dir = _catalog_default(GGUF_ENTRY)
    serve(model, feedback_db=args.feedback_db, config=config,
          model_version=args.model_version, max_body_bytes=args.max_body_bytes, gguf=args.gguf, gguf_dir=gguf_dir,
          model_next_step=next_step)


def _catalog_default(entry: str) -> str:
    """The catalog's filepath for ``entry`` (conf/ of the working directory, the project root): the CLI's default."""
    from lmforge.pipelines.catalog_paths import catalog_path

    if not Path("conf/base/catalog.yml").is_file():
        raise UserError(f"no conf/base/catalog.yml in {Path.cwd()} to read the default path of {entry!r} from",
                        "run from the project root, or pass --model and --feedback-db")
    return catalog_path(entry)


if __name__ == "__main__":
    run_cli(main, "lmforge.packaging.serve")
