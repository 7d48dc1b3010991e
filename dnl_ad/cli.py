"""Command line: `dnl-ad COMMAND` (also `python -m dnl_ad`).

Every command loads the configuration first; a bad value ends it with the one-line
ConfigError text and exit status 2, before anything touches the database.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dnl-ad", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="ini file (default: DNL_AD_CONFIG, else dnl_ad.ini)")
    parser.add_argument("--dry-run", action="store_true",
                        help="render notices to .eml files; write nothing to the database")
    parser.add_argument("--version", action="version", version=f"dnl_ad {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="create or update dnl_ad's own schema").set_defaults(
        handler=_migrate)
    return parser


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
