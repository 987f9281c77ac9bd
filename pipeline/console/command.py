"""``pipeline console``: serve the operator web app (uvicorn)."""

from __future__ import annotations

import argparse
import getpass
import logging
import socket
import sys
from typing import Any

from pipeline.cli_support import add_override
from pipeline.settings import Settings

log = logging.getLogger(__name__)

CONSOLE_HELP = """\
The operator console: fleet (sites -> nodes -> cameras from the retained MQTT status topics),
live alerts (Server-Sent Events from MQTT <prefix>/alerts, with crop thumbnails), alert detail,
history search with paging and per-rule counts (from the history store, history.database_url:
run `pipeline history` to fill it), and per camera its latest snapshot with a zone/line editor
whose rules go out through the config topic (like `pipeline config set`) and apply live.

Access: users from console.users ('name:role:hash;...', e.g. from PIPELINE_CONSOLE__USERS) or
console.users_file; roles viewer (read) and admin (may save); no anonymous access; every change
is a POST with a CSRF token and is logged (logger pipeline.console.audit) with the user's name.
Binds console.host (127.0.0.1 unless told otherwise) : console.port.

Make a password hash: `pipeline console --hash-password` (reads the password from the terminal or stdin).
"""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("console", help="Serve the operator web console.", description=CONSOLE_HELP,
                              formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    add_override(p, "--host", path="console.host", metavar="ADDR", help="Bind address.")
    add_override(p, "--port", path="console.port", type=int, metavar="PORT", help="HTTP port (0 = any free port).")
    add_override(p, "--users-file", path="console.users_file", metavar="FILE", help="'name:role:hash' lines.")
    add_override(p, "--database-url", path="history.database_url", metavar="URL", help="History store to search.")
    p.add_argument("--hash-password", action="store_true", help="Print a password hash for a users entry and exit.")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.console.auth import hash_password

    if args.hash_password:
        password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
        if not password:
            print("error: empty password", file=sys.stderr)
            return 2
        print(hash_password(password))
        return 0
    return serve(settings)


def serve(settings: Settings, *, sock: socket.socket | None = None) -> int:
    import uvicorn

    from pipeline.console.app import build_app
    from pipeline.console.feed import ConsoleFeed
    from pipeline.history.store import HistoryStore
    from pipeline.metrics import Registry

    metrics = Registry()
    store = HistoryStore(settings.history.database_url)
    store.migrate()
    feed = ConsoleFeed(settings, metrics, f"console-{socket.gethostname()}-{id(metrics) % 100000}")
    app = build_app(settings, feed=feed, store=store, metrics=metrics)
    c = settings.console
    if sock is None:
        sock = socket.socket(socket.AF_INET6 if ":" in c.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((c.host, c.port))
    host, port = sock.getsockname()[:2]
    feed.start()
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    print(f"console ready at http://{host}:{port}/ (history: {store.dialect} {store.where})", flush=True)
    log.info("console ready at http://%s:%d/", host, port)
    try:
        server.run(sockets=[sock])
    finally:
        feed.stop()
        store.close()
    return 0
