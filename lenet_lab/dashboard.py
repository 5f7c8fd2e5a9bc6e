"""optuna-dashboard on a study database, served read-only (`lenet-lab dashboard`).

optuna-dashboard's own WSGI app in a threaded server, as its own command serves it; the
storage is read-only (SQLite opened read-only, PostgreSQL sessions read-only), so the
page's delete and rename buttons cannot change a study.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from socketserver import ThreadingMixIn
from typing import Any, Callable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from lenet_lab.errors import LabError
from lenet_lab.store import Database, list_studies

__all__ = ["beyond_this_machine", "serve"]


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass  # no access-log line for each of the page's polls


def beyond_this_machine(host: str) -> bool:
    """Whether other machines can reach an address (not loopback)."""
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: whatever it resolves to, assume others can reach it
        return True


class _Refusals(logging.Handler):
    """optuna-dashboard logs each failed request with its traceback: one line instead."""

    def __init__(self, say: Callable[[str], None]) -> None:
        super().__init__(logging.ERROR)
        self.say = say

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if "commit" in text or "readonly" in text or "read-only" in text:
            self.say("dashboard: a change from the page was refused: lenet-lab serves the "
                     "database read-only")
        else:
            self.say(f"dashboard: {text.splitlines()[0] if text else 'a request failed'}")


def serve(db: Database, *, host: str = "127.0.0.1", port: int = 8080,
          on_ready: Callable[[str], None] | None = None,
          say: Callable[[str], None] = print) -> None:
    """Serve until Ctrl-C; `on_ready(url)` once listening; `say(line)` for each request
    that failed (a refused change). Errors are one LabError line."""
    try:
        import optuna_dashboard
    except ImportError:
        raise LabError('lenet-lab dashboard needs optuna-dashboard: pip install '
                       '"lenet-lab[dashboard]"') from None
    if not list_studies(db):
        raise LabError(f"no studies in {db.safe}: run `lenet-lab sweep pooling` first, or "
                       f"name the database with --storage")

    class Server(ThreadingMixIn, WSGIServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        daemon_threads = True

    app = optuna_dashboard.wsgi(db.optuna())
    for name in ("optuna_dashboard", "optuna_dashboard._bottle_util"):
        logger = logging.getLogger(name)
        logger.handlers, logger.propagate = [_Refusals(say)], False
    try:
        server = make_server(host, port, app, server_class=Server, handler_class=_Quiet)
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise LabError(f"cannot listen on {host}:{port} ({why}): choose another --port, or a "
                       f"--host of this machine") from None
    with server:
        if on_ready:
            on_ready(f"http://{f'[{host}]' if ':' in host else host}:{port}/")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass  # the way to stop it
