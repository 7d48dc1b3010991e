"""`dnl-ad preview ALERT --client ID [--at TIME]`: the exact mail one client would get.

It runs the alert's real sweep in dry run at `--at` (default now), so the same query,
the same rules and the same rendering decide, and nothing is written to the database;
then it picks that client's message and prints its headers and text, optionally
writing the .eml and the HTML part.

A message is matched to its client through its Message-ID, which carries the notice's
dedupe key (DESIGN.md): `<kind>:<client>:...` for balance and daily notices,
`<kind>:<resource>:...` for trunk notices, whose resources are looked up for the client.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import sys
import tempfile
from pathlib import Path
from typing import TextIO

from . import db, migrations
from .alerts import ALERTS, AlertSpec
from .config import Settings
from .mail.message import Mail

TRUNK_KINDS = {"trunk_pending", "trunk_suspended", "quality_rule", "fraud_detection"}
# where the client (or resource) id sits in a kind's dedupe key; 1 unless listed
# (quality_rule:<rule>:<resource>:..., traffic_alert:<row>:<client>:...)
KEY_POSITION = {"quality_rule": 2, "traffic_alert": 2}
SHOWN_HEADERS = ("From", "To", "Cc", "Subject", "Date", "Message-ID")


# "balance restored" has no sweep of its own: the low- and zero-balance sweeps decide it
RESTORED = AlertSpec(15, "balance_restored", "Balance restored",
                     "dnl_ad.alerts.balance_restored", "balance_check_seconds")


def find_alert(name: str) -> AlertSpec | None:
    """By harness number (1-7, 15) or kind (low_balance, ..., balance_restored)."""
    text = name.strip().lower()
    if text in ("15", RESTORED.kind):
        return RESTORED
    if text.isdigit():
        return ALERTS.get(int(text))
    return next((spec for spec in ALERTS.values() if spec.kind == text), None)


def _sweep(spec: AlertSpec, database: db.Database, now: dt.datetime,
           settings: Settings) -> list[Mail]:
    """The mails of the sweep(s) that decide `spec`'s notices."""
    specs = [ALERTS[1], ALERTS[2]] if spec is RESTORED else [spec]
    return [m for s in specs for m in s.sweep_function()(database, now, settings).mails]


def key_kind(mail: Mail) -> str:
    """The kind at the head of the Message-ID's dedupe key."""
    return mail.message_id.strip("<>").partition("@")[0].split(".")[0]


def key_subject_id(mail: Mail, position: int = 1) -> int | None:
    """The client (or resource, for trunk notices) id in the Message-ID's dedupe key."""
    readable = mail.message_id.strip("<>").partition("@")[0]
    parts = readable.split(".")
    if len(parts) > position + 1 and parts[position].isdigit():
        return int(parts[position])
    return None


def client_mails(mails: list[Mail], kind: str, client_id: int,
                 resources: set[int]) -> list[Mail]:
    wanted = resources if kind in TRUNK_KINDS else {client_id}
    return [m for m in mails if key_subject_id(m, KEY_POSITION.get(kind, 1)) in wanted
            and key_kind(m) == kind]


def _resources(database: db.Database, client_id: int) -> set[int]:
    with database.transaction() as cur:
        cur.execute("SELECT resource_id FROM resource WHERE client_id = %s", (client_id,))
        return {row["resource_id"] for row in cur.fetchall()}


def show(mail: Mail) -> str:
    """Headers and the text part, as the client's mail program would show them."""
    msg = email.message_from_bytes(mail.raw, policy=email.policy.default)
    # unfolded: a long Message-ID arrives folded onto a continuation line
    lines = [f"{name}: {' '.join(str(msg[name]).split())}" for name in SHOWN_HEADERS
             if msg[name] is not None]
    if mail.error:
        lines.append(f"(NOT SENDABLE: {mail.error}; it would be recorded as failed)")
    if mail.rejected:
        lines.append(f"(invalid addresses left out: {', '.join(mail.rejected)})")
    return "\n".join([*lines, "", mail.text.rstrip(), ""])


def main(settings: Settings, alert: str, *, client_id: int, at: dt.datetime | None = None,
         eml: str | None = None, html: str | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    spec = find_alert(alert)
    if spec is None:
        names = ", ".join(f"{n}={s.kind}" for n, s in [*ALERTS.items(), (15, RESTORED)])
        print(f"unknown alert {alert!r}; choose one of {names}", file=sys.stderr)
        return 2
    now = at or dt.datetime.now(dt.timezone.utc)
    with tempfile.TemporaryDirectory(prefix="dnl_ad_preview_") as tmp:
        dry = settings.replace(dry_run=True, dry_run_dir=tmp)
        database = migrations.open_database(dry)  # read-only, also before `migrate`
        try:
            found = _sweep(spec, database, now, dry)
            resources = _resources(database, client_id) if spec.kind in TRUNK_KINDS else set()
        finally:
            database.close()
    mails = client_mails(found, spec.kind, client_id, resources)
    if not mails:
        print(f"client {client_id} would get no {spec.kind} notice at {now.isoformat()} "
              f"({len(found)} other client(s) would)", file=out)
        return 1
    for n, mail in enumerate(mails, start=1):
        if len(mails) > 1:
            print(f"--- message {n} of {len(mails)}", file=out)
        print(show(mail), file=out)
    if eml:
        Path(eml).write_bytes(mails[0].raw)
        print(f"written {eml}", file=out)
    if html:
        Path(html).write_text(mails[0].html, encoding="utf-8")
        print(f"written {html}", file=out)
    return 0
