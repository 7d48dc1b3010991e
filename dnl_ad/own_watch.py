"""`dnl-ad watch add|list|remove`: dnl_ad's destination watch lists (alert 14), kept in its
schema. A prefix is digits (a leading + is dropped); a country is the name as the switch
writes it in cdr_report_detail (matched ignoring case)."""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from psycopg2 import sql

from . import db, migrations
from .config import Settings


class WatchError(ValueError):
    """An option that cannot be used; str() names it and what was expected."""


def add_entry(cur: db.Cursor, schema: str, *, list_name: str, prefix: str | None = None,
              country: str | None = None, client_id: int | None = None,
              notify_client: bool = False, note: str = "") -> int:
    if list_name not in ("black", "white"):
        raise WatchError(f"--list {list_name!r}: expected black or white")
    if (prefix is None) == (country is None):
        raise WatchError("give exactly one of --prefix and --country")
    if prefix is not None:
        kind, value = "prefix", prefix.strip().lstrip("+")
        if not value.isdigit():
            raise WatchError(f"--prefix {prefix!r}: expected digits, e.g. 53 or +5399")
    else:
        kind, value = "country", (country or "").strip()
        if not value:
            raise WatchError("--country: expected a country name")
    if notify_client and client_id is None:
        raise WatchError("--notify-client needs --client (a global entry has no client)")
    cur.execute(sql.SQL(
        "INSERT INTO {} (list, client_id, kind, value, notify_client, note) "
        "VALUES (%s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (list, coalesce(client_id, 0), kind, lower(value)) DO NOTHING "
        "RETURNING id").format(migrations.own(schema, "watch_entry")),
        (list_name, client_id, kind, value, notify_client, note))
    got = cur.fetchone()
    if got is None:
        raise WatchError(f"{list_name}list already has {kind} {value!r}"
                         + (f" for client {client_id}" if client_id else ""))
    return int(got["id"])


def list_entries(cur: db.Cursor, schema: str) -> list[dict[str, Any]]:
    cur.execute(sql.SQL("SELECT * FROM {} ORDER BY list, client_id NULLS FIRST, kind, value"
                        ).format(migrations.own(schema, "watch_entry")))
    return [dict(r) for r in cur.fetchall()]


def remove_entry(cur: db.Cursor, schema: str, entry_id: int) -> bool:
    cur.execute(sql.SQL("DELETE FROM {} WHERE id = %s RETURNING id").format(
        migrations.own(schema, "watch_entry")), (entry_id,))
    return cur.fetchone() is not None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="watch_command", required=True)
    p = sub.add_parser("add", help="add a blacklist or whitelist entry")
    p.add_argument("--list", dest="list_name", required=True, help="black or white")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--prefix", help="dialled prefix, e.g. 53")
    what.add_argument("--country", help="country as the switch names it, e.g. Cuba")
    p.add_argument("--client", type=int, help="client_id (default: every client)")
    p.add_argument("--notify-client", action="store_true",
                   help="the client's NOC gets the alert too")
    p.add_argument("--note", default="")
    sub.add_parser("list", help="list the entries")
    p = sub.add_parser("remove", help="remove an entry")
    p.add_argument("id", type=int)


def main(settings: Settings, args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout

    def work(cur: db.Cursor, schema: str) -> int:
        if args.watch_command == "add":
            entry = add_entry(cur, schema, list_name=args.list_name.lower(),
                              prefix=args.prefix, country=args.country,
                              client_id=args.client, notify_client=args.notify_client,
                              note=args.note)
            print(f"entry {entry} added", file=out)
        elif args.watch_command == "list":
            entries = list_entries(cur, schema)
            for e in entries:
                who = f"client {e['client_id']}" if e["client_id"] else "every client"
                print(f"{e['id']:>4}  {e['list']}list  {e['kind']} {e['value']}  {who}"
                      + ("  (client notified)" if e["notify_client"] else "")
                      + (f"  {e['note']}" if e["note"] else ""), file=out)
            if not entries:
                print("no entries", file=out)
        elif not remove_entry(cur, schema, args.id):
            print(f"no entry {args.id}", file=sys.stderr)
            return 1
        else:
            print(f"entry {args.id} removed", file=out)
        return 0

    return migrations.run_command(settings, work, (WatchError,))
