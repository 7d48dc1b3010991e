"""Decide -> queue: the one path by which every alert hands a Notice to the outbox.

A Pipeline is opened once per sweep, inside the sweep's transaction: it reads the
provider's mail settings (mail_tmplate, mail_sender, system_parameter) once, then
`queue()` renders each notice exactly once and enqueues it under its dedupe key in the
same transaction as the alert's provider state writes (or `stage()` each notice of a
batch and `flush()` them in one statement before the batch commits). In dry run it writes an .eml
file instead and the caller's unit of work rolls back (db.unit_of_work).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import outbox
from .config import Settings
from .db import Cursor
from .mail import message as mail_message
from .mail import render as mail_render
from .notice import Notice

log = logging.getLogger(__name__)

# dedupe keys a dry run has already reported (it writes nothing, so it decides them again)
_DRY_RUN_SAID: set[tuple[str, str]] = set()  # (database, dedupe key)


class Pipeline:
    def __init__(self, settings: Settings, mail_config: mail_render.MailConfig) -> None:
        self.settings = settings
        self.mail_config = mail_config
        # dedupe key -> outcome ("queued" / "duplicate" / "failed") and, in dry run, the
        # mail: keyed, so a batch redone after a rollback (dnl_ad.batches) counts once
        self._outcomes: dict[str, str] = {}
        self._mails: dict[str, mail_message.Mail] = {}
        self._staged: list[tuple[Notice, mail_message.Mail]] = []
        self._first_said: set[str] = set()

    def worth_saying(self, dedupe_key: str) -> bool:
        """Whether an alert's own line about this notice belongs at INFO: always in a real
        run (it was just decided), once per process in a dry run (decided every sweep)."""
        return not self.settings.dry_run or dedupe_key in self._first_said

    def _count(self, outcome: str) -> int:
        return sum(1 for o in self._outcomes.values() if o == outcome)

    @property
    def queued(self) -> int:
        return self._count("queued")

    @property
    def duplicates(self) -> int:
        return self._count("duplicate")

    @property
    def failed(self) -> int:
        return self._count("failed")

    @property
    def outcomes(self) -> Mapping[str, str]:
        """dedupe key -> what queue() did with it."""
        return self._outcomes

    @property
    def mails(self) -> list[mail_message.Mail]:
        """Dry run: what would be sent."""
        return list(self._mails.values())

    @classmethod
    def open(cls, cur: Cursor, settings: Settings) -> Pipeline:
        return cls(settings, mail_render.MailConfig.load(cur, settings))

    @property
    def system(self) -> Mapping[str, Any]:
        """The system_parameter row (sys_timezone, finance_email, fromemail, ...)."""
        return self.mail_config.system

    def with_common_tags(self, notice: Notice) -> Notice:
        """The notice with the tags every template may use, from system_parameter (the
        switch's name and address, the operator's NOC), unless the alert set them."""
        system = self.system
        common = {
            "switch_alias": str(system.get("switch_alias") or ""),
            "switch_ip": str(system.get("switch_ip") or ""),
            "noc_email": str(system.get("noc_email") or ""),
            "currency": "",
        }
        return dataclasses.replace(notice, context={**common, **notice.context})

    def stage(self, cur: Cursor, notice: Notice) -> None:
        """Render and build `notice` now, insert it at `flush` with the others of the
        batch (one round trip per batch). In dry run it is written at once, as `queue`."""
        if self.settings.dry_run:
            self.queue(cur, notice)
            return
        self._staged.append(self._prepare(notice))

    def flush(self, cur: Cursor) -> None:
        """Insert every staged notice in one statement, in the caller's transaction."""
        staged, self._staged = self._staged, []
        new = outbox.enqueue_many(cur, self.settings.own_schema, staged)
        for notice, mail in staged:
            self._record(notice, mail, notice.dedupe_key in new)

    def discard(self) -> None:
        """Forget the staged notices (their transaction was rolled back)."""
        self._staged = []

    def _prepare(self, notice: Notice) -> tuple[Notice, mail_message.Mail]:
        notice = self.with_common_tags(notice)
        try:
            rendered = mail_render.render_notice(notice, self.mail_config)
            bad_data = ""
        except mail_render.BadAmount as exc:
            rendered = mail_render.unrendered(notice, self.mail_config)
            bad_data = f"bad data: {exc}"
        mail = mail_message.build(notice, rendered, self.mail_config)
        if bad_data:
            mail = dataclasses.replace(mail, error=bad_data)
        return notice, mail

    def _record(self, notice: Notice, mail: mail_message.Mail, new: bool) -> None:
        who = ", ".join(mail.recipients) or "(nobody)"
        if not new:
            self._outcomes[notice.dedupe_key] = "duplicate"
            log.debug("already queued: %s", notice.dedupe_key)
        elif mail.error:
            self._outcomes[notice.dedupe_key] = "failed"
            log.error("%s client %s not sendable, recorded as failed: %s (key %s)",
                      notice.kind, notice.client_id, mail.error, notice.dedupe_key)
        else:
            self._outcomes[notice.dedupe_key] = "queued"
            log.info("queued %s for client %s to %s subject %r (key %s)", notice.kind,
                     notice.client_id, who, mail.subject, notice.dedupe_key)

    def queue(self, cur: Cursor, notice: Notice) -> bool:
        """Render and enqueue one notice. True when newly queued (or dry-run written);
        False when its dedupe key was already in the outbox.

        A notice without a valid recipient (or sender) is still recorded, as failed with
        its email_log row, so the operator sees it; it counts in `failed`. So is a notice
        whose data holds a bad amount (NaN, infinite, >= 1e15): never sent, one log line
        naming the client and the tag, once (its dedupe key is then taken).
        """
        notice, mail = self._prepare(notice)
        who = ", ".join(mail.recipients) or "(nobody)"
        if self.settings.dry_run:
            path = mail_message.write_eml(mail, Path(self.settings.dry_run_dir))
            # a dry-run daemon decides the same notices every sweep: said once each
            said = (self.settings.connection_string, notice.dedupe_key)
            first = said not in _DRY_RUN_SAID
            _DRY_RUN_SAID.add(said)
            if first:
                self._first_said.add(notice.dedupe_key)
            if mail.error:
                log.log(logging.WARNING if first else logging.DEBUG,
                        "dry run: %s client %s would be recorded as failed: %s "
                        "(written to %s)", notice.kind, notice.client_id, mail.error, path)
                self._outcomes[notice.dedupe_key] = "failed"
            else:
                log.log(logging.INFO if first else logging.DEBUG,
                        "dry run: %s client %s to %s subject %r written to %s", notice.kind,
                        notice.client_id, who, mail.subject, path)
                self._outcomes[notice.dedupe_key] = "queued"
            self._mails[notice.dedupe_key] = mail
            return True
        new = outbox.enqueue(cur, self.settings.own_schema, notice, mail)
        self._record(notice, mail, new)
        return new
