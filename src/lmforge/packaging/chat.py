"""Chat with a running lmforge server in the terminal, and rate its answers.

``python -m lmforge.packaging.chat --url http://127.0.0.1:8000`` (``make chat``; start the server with
``make serve``). Type a message and press Enter; the whole conversation is sent each turn (the server is
stateless). After each answer, rate it: ``/rate 1``..``/rate 5``, or ``/up`` (= 5) / ``/down`` (= 1).
Ratings are stored by the server next to the request and the answer, and averaged per model version
(``python -m lmforge.packaging.serve --summary``).

Commands: ``/rate N``, ``/up``, ``/down``, ``/reset`` (forget the conversation), ``/help``, ``/quit``
(or Ctrl-D).

It says "connected" only after the server answered ``GET /health`` (else one line: start it with
``make serve``), names itself to the server (``X-Lmforge-Client: chat``: its answers are the ones the
satisfaction metric counts), and when the conversation outgrows the model's context it says so and
suggests ``/reset``.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from lmforge.errors import run_cli
from lmforge.packaging.chat_model import CONTEXT_LIMIT_CODE
from lmforge.packaging.loadtest import CHAT_CLIENT, check_health, post_json

logger = logging.getLogger(__name__)

HELP = ("commands: /rate 1-5 rates the last answer, /up = 5, /down = 1, /reset starts over, /help, /quit "
        "(Ctrl-D)")
THUMBS = {"/up": 5, "/down": 1}
RESET_HINT = "type /reset to start over"


class ContextFull(RuntimeError):
    """The conversation no longer fits the model's context: only /reset (or a shorter message) helps."""


class ChatSession:
    """A conversation with the server: the message history and the id of the last answer (what /rate rates)."""

    def __init__(self, url: str, *, system: str | None = None, max_tokens: int = 64, temperature: float = 0.0,
                 timeout: float = 120.0):
        self.url = url.rstrip("/")
        self.system = system
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.timeout = timeout
        self.messages: list[dict[str, str]] = []
        self.last_id: str | None = None
        self.reset()

    def connect(self) -> str:
        """``GET /health``: the served model version; ``UserError`` (one line) when no server answers."""
        return str(check_health(self.url, timeout=min(self.timeout, 10.0)).get("model_version", "?"))

    def reset(self) -> None:
        self.messages = [{"role": "system", "content": self.system}] if self.system else []
        self.last_id = None

    def ask(self, text: str) -> str:
        """Send ``text`` as the next user turn; returns the answer (the conversation grows only on success)."""
        payload = {"messages": [*self.messages, {"role": "user", "content": text}], "max_tokens": self.max_tokens,
                   "temperature": self.temperature}
        status, body = post_json(self.url + "/v1/chat/completions", payload, timeout=self.timeout,
                                 client=CHAT_CLIENT)
        if status != 200:
            problem = body.get("error", {})
            if problem.get("code") == CONTEXT_LIMIT_CODE:
                raise ContextFull(f"the conversation is too long for the model ({problem.get('message')}): "
                                  f"{RESET_HINT}")
            raise RuntimeError(f"HTTP {status}: {problem.get('message', body)}")
        answer = body["choices"][0]["message"]["content"]
        self.messages += [{"role": "user", "content": text}, {"role": "assistant", "content": answer}]
        self.last_id = body["id"]
        return answer

    def rate(self, rating: int) -> None:
        if self.last_id is None:
            raise RuntimeError("nothing to rate yet: ask something first")
        status, body = post_json(self.url + "/v1/feedback", {"id": self.last_id, "rating": rating},
                                 timeout=self.timeout, client=CHAT_CLIENT)
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {body.get('error', {}).get('message', body)}")


def parse_rating(line: str) -> int:
    """``/rate N`` -> N (1-5), ``/up`` -> 5, ``/down`` -> 1; ValueError with the usage otherwise."""
    word, _, rest = line.strip().partition(" ")
    if word in THUMBS and not rest.strip():
        return THUMBS[word]
    if word == "/rate" and rest.strip().isdigit() and 1 <= int(rest) <= 5:
        return int(rest)
    raise ValueError(f"cannot read a rating from {line.strip()!r}: use /rate 1..5, /up or /down")


def run_chat(session: ChatSession, lines: Iterable[str], say: Callable[[str], Any]) -> dict[str, int]:
    """Drive a chat from ``lines`` (user input), writing everything through ``say``. Returns counts."""
    counts = {"turns": 0, "ratings": 0, "errors": 0}
    version = session.connect()  # before saying "connected": a server that is down is one error line
    say(f"connected to {session.url} (model {version}); {HELP}")
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        try:
            if line in ("/quit", "/exit"):
                break
            if line == "/help":
                say(HELP)
            elif line == "/reset":
                session.reset()
                say("(conversation cleared)")
            elif line.startswith(("/rate", "/up", "/down")):
                rating = parse_rating(line)
                session.rate(rating)
                counts["ratings"] += 1
                say(f"(rated {rating}/5, thank you)")
            elif line.startswith("/"):
                say(f"unknown command {line.split()[0]!r}; {HELP}")
            else:
                say(f"assistant> {session.ask(line)}")
                counts["turns"] += 1
                say("(rate this answer: /rate 1-5, /up or /down)")
        except (RuntimeError, ValueError, OSError) as exc:
            counts["errors"] += 1
            say(f"error: {exc}")
    return counts


def _stdin_lines() -> Iterable[str]:
    while True:
        try:
            yield input("you> ")
        except EOFError:
            return


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m lmforge.packaging.chat",
        description="Chat with a running lmforge server (start it with `make serve`) and rate its answers.",
        epilog=HELP,
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="server root (default http://127.0.0.1:8000)")
    parser.add_argument("--system", default=None, help="optional system message that opens the conversation")
    parser.add_argument("--max-tokens", type=int, default=64, help="longest answer in tokens (default 64)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--verbose", action="store_true", help="show the full traceback of an error")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    session = ChatSession(args.url, system=args.system, max_tokens=args.max_tokens, temperature=args.temperature)
    # The terminal is the user interface here, so the conversation goes to stdout, not to the log.
    run_chat(session, _stdin_lines(), lambda text: print(text, flush=True))  # noqa: T201


if __name__ == "__main__":
    run_cli(main, "lmforge.packaging.chat")
