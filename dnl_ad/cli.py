"""Command line: `dnl-ad COMMAND` (also `python -m dnl_ad`).

Every command loads the configuration first; a bad value ends it with the one-line
ConfigError text and exit status 1, before anything touches the database. Ordinary
failures (database unreachable or refusing, a path that cannot be written) end a command
with one line saying what failed and what to do, exit status 1; only a bug shows a
traceback.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

import psycopg2

from . import __version__, db, migrations
from .config import ConfigError, Settings, load_pidfile_only, load_settings

log = logging.getLogger("dnl_ad")

EXIT_CONFIG = 1   # a bad configuration value
EXIT_USAGE = 2    # options that cannot go together
ONE_SHOT = {"migrate", "harness", "preview", "check"}
PIDFILE_ONLY = {"status", "stop", "zap"}


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    database = db.Database(settings.connection_string)
    try:
        with database.transaction() as cur:
            if settings.dry_run:
                todo = [name for _, name in migrations.pending(cur, settings.own_schema)]
                print(f"schema {settings.own_schema}: " + (
                    f"would apply {', '.join(todo)}" if todo else "up to date")
                    + " (dry run: nothing written)")
                return 0
            applied = migrations.migrate(cur, settings.own_schema)
    finally:
        database.close()
    if applied:
        print(f"schema {settings.own_schema}: applied {', '.join(applied)}")
    else:
        print(f"schema {settings.own_schema}: up to date")
    return 0


def _reloader(args: argparse.Namespace, settings: Settings) -> Callable[[], Settings]:
    """How the daemon re-reads its configuration on SIGHUP: the very file it started
    with (an absolute path: the daemon chdirs to /), which must still exist (a removed
    ini is refused, never replaced by the defaults), and the same overrides."""
    path = settings.config_path
    dry_run = bool(getattr(args, "dry_run", False))

    def reload() -> Settings:
        new = load_settings(path or None, require_file=bool(path))
        return new.replace(dry_run=True) if dry_run else new

    return reload


def _quiet_console(settings: Settings) -> None:
    """Interactive tools print their own report; only warnings and errors go to the log."""
    if settings.loglevel > logging.DEBUG:
        logging.getLogger().setLevel(logging.WARNING)


def _start(settings: Settings, args: argparse.Namespace) -> int:
    from . import daemon

    return daemon.start(settings, _reloader(args, settings))


def _stop(settings: Settings, args: argparse.Namespace) -> int:
    from . import daemon

    return daemon.stop(settings, args.timeout)


def _restart(settings: Settings, args: argparse.Namespace) -> int:
    from . import daemon

    code = daemon.stop(settings, args.timeout)
    return code if code else daemon.start(settings, _reloader(args, settings))


def _status(settings: Settings, args: argparse.Namespace) -> int:
    from . import daemon

    # with only PIDFILE known (a typo in the ini) the database is not asked for the role
    return daemon.status(settings, ask_database=not getattr(args, "pidfile_only", False))


def _zap(settings: Settings, args: argparse.Namespace) -> int:
    from . import daemon

    return daemon.zap(settings)


def _run(settings: Settings, args: argparse.Namespace) -> int:
    from . import daemon

    return daemon.run_foreground(settings, _reloader(args, settings), debug=False)


def _debug(settings: Settings, args: argparse.Namespace) -> int:
    from . import daemon

    return daemon.run_foreground(settings, _reloader(args, settings), debug=True)


def _harness(settings: Settings, args: argparse.Namespace) -> int:
    from . import harness

    if args.send and args.at is not None:
        # Queued notices carry the pretended instant (leases, retries, provider state):
        # mixing it with the running daemon's real clock could send a notice twice.
        print("harness: --send cannot be combined with --at; use --at for dry runs only",
              file=sys.stderr)
        return EXIT_USAGE
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


def _rule(settings: Settings, args: argparse.Namespace) -> int:
    from . import own_rules

    return own_rules.main(settings, args)


def _watch(settings: Settings, args: argparse.Namespace) -> int:
    from . import own_watch

    return own_watch.main(settings, args)


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    from .devtools import demo

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
    p = add("harness", help="interactive tester: press an alert number to run it now")
    p.add_argument("--send", action="store_true", help="really queue and send (default: dry run)")
    p.add_argument("--at", type=_instant, help="pretend it is this instant (ISO 8601, UTC if "
                   "no offset)")
    p.set_defaults(handler=_harness)
    add("check", help="verify configuration, database, contract, SMTP, templates"
                   ).set_defaults(handler=_check)
    p = add("preview", help="the exact mail one client would get from one alert")
    p.add_argument("alert", help="alert number or kind (low_balance, quality_rule, ...)")
    p.add_argument("--client", type=int, required=True, help="client_id")
    p.add_argument("--at", type=_instant, help="instant (ISO 8601, UTC if no offset)")
    p.add_argument("--eml", help="also write the message to this .eml file")
    p.add_argument("--html", help="also write the HTML part to this file")
    p.set_defaults(handler=_preview)
    p = add("rule", help="period-over-period rules (dnl_ad's own): add, list, remove")
    from . import own_rules

    own_rules.add_arguments(p)
    p.set_defaults(handler=_rule)
    p = add("watch", help="destination blacklist / whitelist: add, list, remove")
    from . import own_watch

    own_watch.add_arguments(p)
    p.set_defaults(handler=_watch)
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
        if args.command not in PIDFILE_ONLY:
            print(str(exc), file=sys.stderr)
            return EXIT_CONFIG
        try:  # status and stop need only the pidfile: say the error, go on
            settings = load_pidfile_only(args.config)
            args.pidfile_only = True
        except ConfigError:
            print(str(exc), file=sys.stderr)
            return EXIT_CONFIG
        print(f"{exc} (ignored by {args.command}: it needs only PIDFILE)", file=sys.stderr)
    # A one-shot command reports a database failure itself, once, with advice; the
    # outage bookkeeping of db.Database is the long-running daemon's.
    db_log = logging.getLogger("dnl_ad.db")
    db_level = db_log.level
    if args.command in ONE_SHOT:
        db_log.setLevel(logging.CRITICAL)
    try:
        return int(args.handler(settings, args) or 0)
    except psycopg2.Error as exc:
        print(f"dnl-ad {args.command}: {database_failure(settings, exc)}", file=sys.stderr)
        return 1
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        print(f"dnl-ad {args.command}: {exc.strerror or exc}:{where}; check the paths in "
              f"{settings.config_path or 'the configuration'} (PIDFILE, LOGFILE, DRY_RUN_DIR)",
              file=sys.stderr)
        return 1
    finally:
        db_log.setLevel(db_level)


def database_failure(settings: Settings, exc: BaseException) -> str:
    """One line: which database, what it said (no password), what to do."""
    lines = db.scrub(str(exc)).strip().splitlines()
    said = lines[0] if lines else type(exc).__name__
    if db.is_connection_error(exc):
        hint = "check CONNECTION_STRING and that PostgreSQL is up (`dnl-ad check` tests both)"
    else:
        hint = "`dnl-ad check` lists what is missing"
    return f"database {db.mask_dsn(settings.connection_string)}: {said}; {hint}"
