"""Helpers shared by the daily-report tests (alerts 3-5): tag templates, outbox reading,
money parsing, and a real HTTP server on loopback playing the DNL CDR export API."""

from __future__ import annotations

import json
import re
import threading
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from dnl_ad.mail.render import KNOWN_TAGS

from . import factories as f

_PAIR = re.compile(r"([a-z_]+)=\[(.*?)\]", re.S)


def tag_template(kind: str) -> str:
    """An operator template printing every tag of `kind` as name=[value]."""
    return "".join(f"<p>{t}=[{{{t}}}]</p>" for t in KNOWN_TAGS[kind])


def use_tag_template(conn, prefix: str, kind: str, subject: str = "report {client_name}") -> None:
    with conn.cursor() as cur:
        cur.execute("SELECT id FROM mail_tmplate")
        tid = cur.fetchone()["id"]
    f.update(conn, "mail_tmplate", {"id": tid}, **{f"{prefix}_subject": subject,
                                                  f"{prefix}_content": tag_template(kind)})


def outbox(conn) -> list[dict[str, Any]]:
    return f.rows(conn, "SELECT dedupe_key, kind, client_id, to_addrs, subject, text_body, "
                        "html_body FROM dnl_ad.outbox ORDER BY id")


def keys(conn) -> set[str]:
    return {r["dedupe_key"] for r in outbox(conn)}


def tags_of(conn, key: str) -> dict[str, str]:
    """The name=[value] pairs rendered into the outbox row with dedupe key `key`."""
    rows = [r for r in outbox(conn) if r["dedupe_key"] == key]
    assert len(rows) == 1, f"expected one outbox row for {key}, got {len(rows)}"
    return dict(_PAIR.findall(rows[0]["html_body"]))


def money(text: str) -> Decimal:
    """'1,234.50' -> Decimal; '(12.50)' -> Decimal('-12.50') (the renderer's money)."""
    t = text.strip().replace(",", "")
    if t.startswith("(") and t.endswith(")"):
        return -Decimal(t[1:-1])
    return Decimal(t)


class FakeCdrApi:
    """A real HTTP server on 127.0.0.1 answering like the CDR export API (see cdr_api).

    mode: "ok" (pending `pending_polls` times, then ready), "slow" (holds every answer
    until released), "error" (HTTP `error_code` to the export request), "garbage" (not
    JSON), "pending" (never ready), "no_token" (token answer without a token).
    """

    def __init__(self, mode: str = "ok", *, pending_polls: int = 1, error_code: int = 500) -> None:
        self.mode = mode
        self.pending_polls = pending_polls
        self.error_code = error_code
        self.requests: list[dict[str, Any]] = []
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.polls = 0
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def _answer(self, code: int, body: Any) -> None:
                if api.mode == "slow":
                    api.release.wait(10)
                raw = body if isinstance(body, bytes) else json.dumps(body).encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(raw)))
                    self.end_headers()
                    self.wfile.write(raw)
                except OSError:
                    pass  # the client gave up (timeout): nothing to answer

            def _record(self, body: Any) -> None:
                with api.lock:
                    api.requests.append({"method": self.command, "path": self.path,
                                         "auth": self.headers.get("Authorization"),
                                         "body": body})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"null")
                self._record(body)
                if self.path == "/api/auth/token":
                    if api.mode == "no_token":
                        self._answer(200, {"error": "no"})
                    else:
                        self._answer(200, {"token": "sekret-token-123"})
                elif self.path == "/api/cdr/export":
                    if api.mode == "error":
                        self._answer(api.error_code, {"error": "boom"})
                    elif api.mode == "garbage":
                        self._answer(200, b"<html>oops</html>")
                    else:
                        self._answer(200, {"request_id": f"req-{body['trunk_id']}"})
                else:
                    self._answer(404, {"error": "no such path"})

            def do_GET(self) -> None:
                self._record(None)
                request_id = self.path.rsplit("/", 1)[-1]
                with api.lock:
                    api.polls += 1
                    polls = sum(1 for r in api.requests if r["path"] == self.path)
                if api.mode == "pending" or polls <= api.pending_polls:
                    self._answer(200, {"status": "pending"})
                else:
                    self._answer(200, {"status": "ready", "download_url":
                                       f"https://cdr.carrier.example/files/{request_id}.csv"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)

    def __enter__(self) -> FakeCdrApi:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
