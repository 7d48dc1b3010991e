"""Write a sweep's notices in bounded batches: one transaction per batch, no savepoints.

Why (DESIGN.md "Transactions and locks"): a sweep that opens thousands of notices in one
transaction with a savepoint each overflows PostgreSQL's subtransaction cache past 64
and slows every session of the switch; and a row the web UI holds locked stalls the
whole sweep. So each batch of at most SWEEP_BATCH items is one transaction that

1. optionally locks the rows it will write with FOR UPDATE SKIP LOCKED (`lock`): an item
   whose row another session holds is skipped this sweep, said once, and served by a
   later sweep; the others are not held up;
2. does each item's writes (`work`), then commits.

When an item fails (bad data, a lock that still timed out), its batch is rolled back and
redone one item per transaction, so that only the failing item is lost for this sweep
and logged with its traceback; a lost connection ends the sweep (one outage line, by the
Database).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from . import db

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_SIZE = 200


class Finish(Protocol):
    """What a batch's items staged, written before it commits (dnl_ad.pipeline.Pipeline)."""

    def flush(self, cur: db.Cursor) -> None: ...

    def discard(self) -> None: ...


@dataclass
class Outcome(Generic[T]):
    """What happened to a sweep's items."""

    done: list[T] = field(default_factory=list)
    failed: list[T] = field(default_factory=list)
    # one line per failed item: what it was and the error (the operator alerts show it)
    errors: list[str] = field(default_factory=list)
    locked: list[T] = field(default_factory=list)


def chunks(items: Sequence[T], size: int) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), max(size, 1)):
        yield items[start:start + size]


def run(database: db.Database, items: Sequence[T], work: Callable[[db.Cursor, T], None], *,
        dry_run: bool, describe: Callable[[T], str], size: int = DEFAULT_SIZE,
        lock: Callable[[db.Cursor, Sequence[T]], Sequence[T]] | None = None,
        finish: Finish | None = None) -> Outcome[T]:
    """Do `work(cur, item)` for every item, in batches (see the module docstring).

    `lock(cur, batch)` returns the items whose rows it could lock; the rest are reported
    in `Outcome.locked`. `describe(item)` names an item in a log line. `finish` writes
    what the batch's items staged (Pipeline.flush) before the batch commits; its
    `discard` drops them when the batch is rolled back.
    """
    outcome: Outcome[T] = Outcome()
    for batch in chunks(items, size):
        try:
            served = _in_one_transaction(database, batch, work, dry_run, lock, finish)
        except db.CONNECTION_ERRORS:
            raise
        except Exception:
            log.debug("a batch of %d failed; redone one item per transaction", len(batch))
            _one_by_one(database, batch, work, dry_run, describe, lock, outcome, finish)
            continue
        taken = {id(item) for item in served}
        outcome.locked.extend(item for item in batch if id(item) not in taken)
        outcome.done.extend(served)
    return outcome


def _in_one_transaction(database: db.Database, items: Sequence[T],
                        work: Callable[[db.Cursor, T], None], dry_run: bool,
                        lock: Callable[[db.Cursor, Sequence[T]], Sequence[T]] | None,
                        finish: Finish | None) -> list[T]:
    """Lock what can be locked, do each locked item's work, write what they staged and
    commit; on any error the transaction rolls back and the staged writes are dropped.
    Returns the items served (the locked ones)."""
    try:
        with db.unit_of_work(database, dry_run=dry_run) as cur:
            served = list(lock(cur, items)) if lock else list(items)
            for item in served:
                work(cur, item)
            if finish is not None:
                finish.flush(cur)
    except BaseException:
        if finish is not None:
            finish.discard()
        raise
    return served


def _one_by_one(database: db.Database, batch: Sequence[T],
                work: Callable[[db.Cursor, T], None], dry_run: bool,
                describe: Callable[[T], str],
                lock: Callable[[db.Cursor, Sequence[T]], Sequence[T]] | None,
                outcome: Outcome[T], finish: Finish | None) -> None:
    for item in batch:
        try:
            served = _in_one_transaction(database, [item], work, dry_run, lock, finish)
        except db.CONNECTION_ERRORS:
            raise
        except Exception as exc:
            log.exception("%s: failed and rolled back; the others go on, it is retried next "
                          "sweep", describe(item))
            outcome.failed.append(item)
            outcome.errors.append(db.scrub(f"{describe(item)}: {type(exc).__name__}: "
                                           f"{exc}").strip())
            continue
        (outcome.done if served else outcome.locked).append(item)


def lock_clients(cur: db.Cursor, client_ids: Sequence[int]) -> set[int]:
    """The ids among `client_ids` whose client row this transaction could lock now
    (FOR UPDATE SKIP LOCKED: a row the UI holds is skipped, never waited on)."""
    if not client_ids:
        return set()
    cur.execute("SELECT client_id FROM client WHERE client_id = ANY(%s) "
                "ORDER BY client_id FOR UPDATE SKIP LOCKED", (list(client_ids),))
    return {r["client_id"] for r in cur.fetchall()}
