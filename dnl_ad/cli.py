"""Command line: `dnl-ad COMMAND` (also `python -m dnl_ad`).

Every command loads the configuration first; a bad value ends it with the one-line
ConfigError text and exit status 2, before anything touches the database.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from . import __version__, db, migrations
from .config import ConfigError, Settings, load_settings

log = logging.getLogger("dnl_ad")

EXIT_CONFIG = 2


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    database = db.Database(settings.connection_string)
    try:
        with database.transaction() as cur:
            applied = migrations.migrate(cur, settings.own_schema)
    finally:
        database.close()
    if applied:
        print(f"schema {settings.own_schema}: applied {', '.join(applied)}")
    else:
        print(f"schema {settings.own_schema}: up to date")
    return 0


def _reloader(args: argparse.Namespace) -> Callable[[], Settings]:
    """How the daemon re-reads its configuration on SIGHUP (same file, same overrides)."""
    return lambda: load(args)


def _quiet_console(settings: Settings) -> None:
    """Interactive tools print their own report; only warnings and errors go to the log."""
    if settings.loglevel > logging.DEBUG:
        logging.getLogger().setLevel(logging.WARNING)


def _start(settings: Settings, args: argparse.Namespace) -> int:
    from . import daemon

    return daemon.start(settings, _reloader(args))


def _stop(settings: Settings, args: argparse.Namespace) -> int:
    from . import daemon

    return daemon.stop(settings, args.timeout)


def _restart(settings: Settings, args: argparse.Namespace) -> int:
    from . import daemon

    code = daemon.stop(settings, args.timeout)
    return code if code else daemon.start(settings, _reloader(args))


def _status(settings: Settings, args: argparse.Namespace) -> int:
    from . import daemon

    return daemon.status(settings)


def _zap(settings: Settings, args: argparse.Namespace) -> int:
    from . import daemon

    return daemon.zap(settings)


def _run(settings: Settings, args: argparse.Namespace) -> int:
    from . import daemon

    return daemon.run_foreground(settings, _reloader(args), debug=False)


def _debug(settings: Settings, args: argparse.Namespace) -> int:
    from . import daemon

    return daemon.run_foreground(settings, _reloader(args), debug=True)


def _harness(settings: Settings, args: argparse.Namespace) -> int:
    from . import harness

    if args.send and args.at is not None:
        # Queued notices carry the pretended instant (leases, retries, provider state):
        # mixing it with the running daemon's real clock could send a notice twice.
        print("harness: --send cannot be combined with --at; use --at for dry runs only",
              file=sys.stderr)
        return EXIT_CONFIG
    _quiet_console(settings)
    return harness.main(settings, send=args.send, at=args.at)


def _check(settings: Settings, args: argparse.Namespace) -> int:
    from . import check

    return check.main(settings)


def _preview(settings: Settings, args: argparse.Namespace) -> int:
    from . import preview

    _quiet_console(settings)
    return preview.main(settings, args.alert, client_id=args.client, at=args.at,
                        eml=args.eml, html=args.html)


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    from . import demo

    return demo.main(clients=args.clients, timeout=args.timeout, out_dir=args.out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dnl-ad", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="ini file (default: DNL_AD_CONFIG, else dnl_ad.ini)")
    parser.add_argument("--dry-run", action="store_true",
                        help="render notices to .eml files; write nothing to the database")
    parser.add_argument("--version", action="version", version=f"dnl_ad {__version__}")
    # The same two options after the command too (`run.sh start --config X`); SUPPRESS keeps
    # a value given before the command from being overwritten by the default.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    common.add_argument("--dry-run", action="store_true", default=argparse.SUPPRESS,
                        help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], **kwargs)

    add("migrate", help="create or update dnl_ad's own schema").set_defaults(
        handler=_migrate)
    add("start", help="start the daemon in the background").set_defaults(
        handler=_start)
    for name, handler, text in (("stop", _stop, "stop the daemon (SIGTERM, then wait)"),
                                ("restart", _restart, "stop, then start")):
        p = add(name, help=text)
        p.add_argument("--timeout", type=float, default=15.0,
                       help="seconds to wait for the daemon to exit (default 15)")
        p.set_defaults(handler=handler)
    add("status", help="exit 0 if running, 3 if not (1: stale pidfile)").set_defaults(
        handler=_status)
    add("zap", help="remove a stale pidfile").set_defaults(handler=_zap)
    add("run", help="run in the foreground (systemd), logging as configured"
                   ).set_defaults(handler=_run)
    add("debug", help="run in the foreground with DEBUG logs on the console"
                   ).set_defaults(handler=_debug)
    p = add("harness", help="interactive tester: keys 1-9 (0: 10) run alert N now")
    p.add_argument("--send", action="store_true", help="really queue and send (default: dry run)")
    p.add_argument("--at", type=_instant, help="pretend it is this instant (ISO 8601, UTC if "
                   "no offset)")
    p.set_defaults(handler=_harness)
    add("check", help="verify configuration, database, contract, SMTP, templates"
                   ).set_defaults(handler=_check)
    p = add("preview", help="the exact mail one client would get from one alert")
    p.add_argument("alert", help="alert number 1-10 or kind (low_balance, usage_limit, ...)")
    p.add_argument("--client", type=int, required=True, help="client_id")
    p.add_argument("--at", type=_instant, help="instant (ISO 8601, UTC if no offset)")
    p.add_argument("--eml", help="also write the message to this .eml file")
    p.add_argument("--html", help="also write the HTML part to this file")
    p.set_defaults(handler=_preview)
    p = add("demo", help="all seven notices on an embedded PostgreSQL and SMTP sink")
    p.add_argument("--clients", type=int, default=40, help="demo clients (default 40)")
    p.add_argument("--timeout", type=float, default=90.0, help="give up after this many s")
    p.add_argument("--out", default="demo-mail", help="where the .eml files go")
    p.set_defaults(handler=_demo)
    return parser


def _instant(text: str) -> dt.datetime:
    """--at: ISO 8601; an instant without offset is UTC."""
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected ISO 8601 such as 2026-11-21T09:00:00+00:00") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc)


def load(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config)
    if getattr(args, "dry_run", False):
        settings = settings.replace(dry_run=True)
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = load(args)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_CONFIG
    return int(args.handler(settings, args) or 0)
