"""A real SMTP server on loopback (aiosmtpd) for the tests, the demo and the benchmarks.

It records every message it accepts, parsed, and can be told to answer 4xx or 5xx for
chosen recipients, or to drop the connection when a given message arrives, so the
delivery code is exercised against real SMTP behaviour rather than a mock. With
`eml_dir` it also writes every accepted message as an .eml file (the demo's sink).

aiosmtpd is a test/demo dependency only; the daemon itself never imports this module.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import functools
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    peer: Any  # (host, port) of the client: one value per SMTP connection
    mail_options: list[str] = field(default_factory=list)
    tls: bool = False  # the message came over a STARTTLS/TLS session
    helo: str = ""

    @functools.cached_property
    def message(self) -> EmailMessage:
        """The message parsed (on first use: parsing every message would slow the sink)."""
        return email.message_from_bytes(self.raw, policy=email.policy.default)


@dataclass
class _Rules:
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    drop_on_message: set[int] = field(default_factory=set)
    on_message: dict[int, Callable[[], None]] = field(default_factory=dict)
    data_command_reply: str = ""
    # server-wide misbehaviour, as a rate-limiting MTA does it
    mail_limit_per_session: int = 0      # after N accepted messages in one session ...
    mail_limit_reply: str = "450 4.7.1 Error: too much mail from 127.0.0.1"  # ... answer MAIL so
    mail_421_every: int = 0              # every N-th MAIL (overall) gets 421 and a hang-up
    rset_reply: str = ""                 # answer RSET with this (421: then hang up)
    helo_reply: str = ""                 # answer EHLO and HELO with this (e.g. 504 ...)
    data_latency: float = 0.0            # seconds to wait before answering each DATA


class RecordingHandler:
    """aiosmtpd handler: records, refuses on demand, drops on demand."""

    def __init__(self, eml_dir: Path | None = None) -> None:
        self.messages: list[Received] = []
        self.rules = _Rules()
        self.data_count = 0  # DATA commands seen, including dropped ones
        self.mail_count = 0  # MAIL commands seen
        self.refusals: list[str] = []  # server-wide refusals sent (421, rate limit, RSET)
        self.eml_dir = eml_dir
        self.lock = threading.Lock()

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        rules = self.rules
        with self.lock:
            self.mail_count += 1
            n = self.mail_count
        reply = ""
        if rules.mail_421_every and n % rules.mail_421_every == 0:
            reply = "421 4.7.0 127.0.0.1 Error: too many connections, closing"
        elif rules.mail_limit_per_session and \
                getattr(session, "dnl_accepted", 0) >= rules.mail_limit_per_session:
            reply = rules.mail_limit_reply
        if reply:
            with self.lock:
                self.refusals.append(reply)
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RSET(self, server, session, envelope):
        if self.rules.rset_reply:
            with self.lock:
                self.refusals.append(self.rules.rset_reply)
            return self.rules.rset_reply
        return "250 OK"

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        if self.rules.helo_reply:
            return [self.rules.helo_reply]
        session.host_name = hostname
        return responses

    async def handle_HELO(self, server, session, envelope, hostname):
        if self.rules.helo_reply:
            return self.rules.helo_reply
        session.host_name = hostname
        return f"250 {server.hostname}"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.rules.rcpt_replies.get(address.lower())
        if reply:
            if reply.startswith("2"):  # an unusual acceptance such as 252: still a recipient
                envelope.rcpt_tos.append(address)
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.rules.data_latency:  # a real relay's round trip; other sessions go on
            await asyncio.sleep(self.rules.data_latency)
        with self.lock:
            self.data_count += 1
            n = self.data_count
        hook = self.rules.on_message.get(n)
        if hook is not None:
            hook()
        if n in self.rules.drop_on_message:
            server.transport.close()
            return "421 closing"  # never reaches the client: the transport is gone
        raw = envelope.original_content or envelope.content
        received = Received(envelope.mail_from, list(envelope.rcpt_tos), raw, session.peer,
                            list(envelope.mail_options), session.ssl is not None,
                            session.host_name or "")
        session.dnl_accepted = getattr(session, "dnl_accepted", 0) + 1
        with self.lock:
            self.messages.append(received)
            index = len(self.messages)
        if self.eml_dir is not None:
            self.eml_dir.mkdir(parents=True, exist_ok=True)
            (self.eml_dir / f"{index:05d}.eml").write_bytes(raw)
        return "250 Message accepted"


class _SinkSMTP(SMTP):
    """aiosmtpd's server, able to refuse the DATA command itself (no 354) on demand, and
    hanging up after every 421 it sends (as "closing transmission channel" means)."""

    async def push(self, status: str) -> None:
        await super().push(status)
        if status.startswith("421") and self.transport is not None:
            self.transport.close()

    async def smtp_DATA(self, arg: str) -> None:
        reply = self.event_handler.rules.data_command_reply
        if reply and self.envelope.rcpt_tos:
            await self.push(reply)
            return
        await super().smtp_DATA(arg)


class _SinkController(Controller):
    def factory(self) -> SMTP:
        return _SinkSMTP(self.handler, **self.SMTP_kwargs)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SmtpSink:
    """A started SMTP server on 127.0.0.1 with its recording handler.

    `kwargs` go to aiosmtpd's Controller (tls_context, require_starttls, authenticator,
    auth_require_tls, ssl_context ...), so TLS and AUTH tests use the same sink.
    """

    def __init__(self, eml_dir: Path | None = None, **kwargs: Any) -> None:
        self.handler = RecordingHandler(eml_dir)
        self.host = "127.0.0.1"
        self.port = free_port()
        self._kwargs = kwargs
        self.controller: Controller = _SinkController(self.handler, hostname=self.host,
                                                      port=self.port, **kwargs)
        self._started = False

    def start(self) -> SmtpSink:
        """Start (again, after stop(): a new listener on the same port; an outage ends)."""
        if self._started:
            return self
        if self.controller.loop.is_closed():
            self.controller = type(self.controller)(self.handler, hostname=self.host,
                                                    port=self.port, **self._kwargs)
        self.controller.start()
        self._started = True
        return self

    def stop(self) -> None:
        """Stop listening: connections are refused until start() (an outage begins)."""
        if self._started:
            self.controller.stop()
            self._started = False

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- what the tests look at and steer
    @property
    def messages(self) -> list[Received]:
        return self.handler.messages

    def connections(self) -> int:
        """How many distinct SMTP connections delivered accepted messages."""
        return len({m.peer for m in self.handler.messages})

    def reply_for(self, address: str, reply: str) -> None:
        """Answer RCPT TO:<address> with `reply` (for example '450 4.2.0 mailbox busy')."""
        self.handler.rules.rcpt_replies[address.lower()] = reply

    def clear_replies(self) -> None:
        self.handler.rules.rcpt_replies.clear()

    def drop_on_message(self, n: int) -> None:
        """Close the connection, unanswered, when the n-th DATA (counted from start) arrives."""
        self.handler.rules.drop_on_message.add(n)

    def refuse_data_command(self, reply: str) -> None:
        """Answer the DATA command with `reply` (for example '554 5.7.1 no') instead of 354."""
        self.handler.rules.data_command_reply = reply

    def call_on_message(self, n: int, hook: Callable[[], None]) -> None:
        """Run `hook` when the n-th DATA arrives, before the message is accepted (tests use
        it to kill the sending process at an exact point)."""
        self.handler.rules.on_message[n] = hook

    def set_latency(self, seconds: float) -> None:
        """Wait `seconds` before answering each DATA, as a relay across a network does."""
        self.handler.rules.data_latency = seconds

    def rate_limit(self, per_session: int, reply: str = "") -> None:
        """After `per_session` accepted messages in one session, answer MAIL with `reply`
        (default Postfix's '450 4.7.1 Error: too much mail from ...')."""
        self.handler.rules.mail_limit_per_session = per_session
        if reply:
            self.handler.rules.mail_limit_reply = reply

    def close_every(self, n: int) -> None:
        """Answer every n-th MAIL (counted over all sessions) with 421 and hang up."""
        self.handler.rules.mail_421_every = n

    def reply_to_rset(self, reply: str) -> None:
        self.handler.rules.rset_reply = reply

    def reply_to_helo(self, reply: str) -> None:
        """Refuse EHLO and HELO (for example '504 5.5.2 need fully-qualified hostname')."""
        self.handler.rules.helo_reply = reply

    def reset(self) -> None:
        with self.handler.lock:
            self.handler.messages.clear()
            self.handler.rules = _Rules()
