"""The interactive tester: press 1-9 (0 for 10) to run alert N now and see what it would
send.

Dry run unless started with --send: the sweep runs its real query and renders every
notice, but its transaction is rolled back (db.unit_of_work) and the messages are only
written as .eml files under DRY_RUN_DIR. With --send the notices are queued for real and
delivered at once. On a terminal a single key press is enough; with piped input each
line is read as keys, so `printf '1\\n2\\nq\\n' | dnl-ad harness` drives it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sys
from collections.abc import Iterator
from typing import TextIO

from . import db, migrations
from .alerts import ALERTS, AlertSpec, SweepResult
from .config import Settings

SHOW_MAILS = 5      # mails shown per run (all are written to DRY_RUN_DIR)
SHOW_LINES = 4      # lines of text shown per mail


def key_for(number: int) -> str:
    """The keys that run alert `number`: its number (keys() reads several digits)."""
    return str(number)


def alert_for(key: str) -> int | None:
    """The alert a key runs, or None."""
    if not key.isdigit():
        return None
    number = int(key)
    return number if number in ALERTS else None


def menu() -> str:
    lines = [f"  {key_for(n)}  {spec.title}" for n, spec in ALERTS.items()]
    return "\n".join(["Press a key:", *lines, "  q  quit"])


@contextlib.contextmanager
def _cbreak(stream: TextIO) -> Iterator[None]:
    """Single key presses on a terminal; nothing to do for a pipe."""
    import termios
    import tty

    fd = stream.fileno()
    old = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)


def keys(stream: TextIO) -> Iterator[str]:
    """Commands: an alert number (several digits when the registry has numbers above 9:
    '1' then Enter runs 1, '1' '1' runs 11), or one other key. A digit that starts no
    longer number runs at once."""
    names = {str(n) for n in ALERTS}
    pending = ""
    for ch in _raw_keys(stream):
        if ch.isdigit():
            pending += ch
            if not any(n != pending and n.startswith(pending) for n in names):
                yield pending
                pending = ""
            continue
        if pending:
            yield pending
            pending = ""
        if not ch.isspace():
            yield ch
    if pending:
        yield pending


def _raw_keys(stream: TextIO) -> Iterator[str]:
    """Key presses: one character at a time on a tty, the characters of each line (and its
    end) otherwise."""
    if stream.isatty():
        with _cbreak(stream):
            while True:
                ch = stream.read(1)
                if not ch:
                    return
                yield ch
    else:
        for line in stream:
            yield from line.rstrip("\n")
            yield "\n"


def describe(spec: AlertSpec, result: SweepResult, settings: Settings) -> str:
    """What one run did, as the operator reads it."""
    mode = "dry run" if settings.dry_run else "SENT"
    out = [f"[{spec.number}] {spec.title} ({spec.kind}) - {mode}",
           f"    {len(result.mails) if settings.dry_run else result.queued} notice(s): "
           f"queued {result.queued}, already queued {result.duplicates}, "
           f"skipped {result.skipped}, state changes {result.state_changes}"]
    for mail in result.mails[:SHOW_MAILS]:
        out.append(f"    - To: {', '.join(mail.to) or '(nobody)'}"
                   + (f"  Cc: {', '.join(mail.cc)}" if mail.cc else ""))
        out.append(f"      Subject: {mail.subject}")
        if mail.error:
            out.append(f"      NOT SENDABLE: {mail.error}")
        text = [line for line in mail.text.splitlines() if line.strip()][:SHOW_LINES]
        out.extend(f"      | {line}" for line in text)
    if len(result.mails) > SHOW_MAILS:
        out.append(f"    ... and {len(result.mails) - SHOW_MAILS} more")
    if settings.dry_run and result.mails:
        out.append(f"    all written as .eml files to {settings.dry_run_dir}")
    if settings.dry_run and not result.mails:
        out.append("    nothing is due")
    return "\n".join(out)


def run_alert(number: int, database: db.Database, settings: Settings,
              now: dt.datetime) -> str:
    spec = ALERTS[number]
    result = spec.sweep_function()(database, now, settings)
    text = describe(spec, result, settings)
    if not settings.dry_run and result.queued:
        from . import delivery

        sent = delivery.deliver(database, settings, now=now)
        text += (f"\n    delivered now: {sent.sent} sent, {sent.retry} to retry, "
                 f"{sent.failed} failed")
    return text


def main(settings: Settings, *, send: bool = False, at: dt.datetime | None = None,
         stdin: TextIO | None = None, out: TextIO | None = None) -> int:
    stdin = stdin or sys.stdin
    out = out or sys.stdout
    settings = settings.replace(dry_run=not send)
    database = migrations.open_database(settings)  # dry run: read-only, also before migrate
    if send:
        with database.transaction() as cur:
            missing = migrations.missing_line(cur, settings.own_schema)
        if missing:
            database.close()
            print(f"harness --send: {missing}; a dry run (without --send) works as is",
                  file=out)
            return 1
    when = "at " + at.isoformat() if at else "now"
    print(f"dnl_ad harness: database {database.safe_name}, "
          + ("SENDING for real" if send else f"dry run (.eml files in {settings.dry_run_dir})")
          + f", alerts run {when}", file=out)
    print(menu(), file=out, flush=True)
    try:
        for key in keys(stdin):
            if key in "qQ":
                break
            number = alert_for(key)
            if number is not None:
                now = at or dt.datetime.now(dt.timezone.utc)
                try:
                    print(run_alert(number, database, settings, now), file=out, flush=True)
                except Exception as exc:
                    print(f"[{number}] {ALERTS[number].title} failed: "
                          f"{type(exc).__name__}: {db.scrub(str(exc)).strip()}", file=out,
                          flush=True)
            elif key in "h?":
                print(menu(), file=out, flush=True)
            else:
                print(f"unknown key {key!r}; an alert number runs it, q quits", file=out,
                      flush=True)
    finally:
        database.close()
    print("bye", file=out)
    return 0
