"""A real DNL CDR API on loopback for the tests (PROVIDER_DB.md section 5), able to misbehave.

Two threaded HTTP servers on 127.0.0.1, as the switch runs them on 8887 and 8889:

- token port:  POST /            -> {"token": "tok-<n>"}
- export port: POST /  (form)    -> {"code": 200, "request_id": "<side>-<trunk>"}
               GET /<request_id> -> {"status": "Processing"} `processing_polls` times,
                                    {"status": "Uploading"} `uploading_polls` times, then
                                    {"status": "Completed", "download_link", "count"}

Every request is recorded (port, method, path, Authorization header, form fields).
Knobs, all settable between sweeps: `token_mode` ("ok", "missing": no token field,
"error": HTTP 500), `refuse_tokens` (the first N tokens issued are refused by the export
port with HTTP 401, as an expired token would be), `refuse_all_tokens`, `code_400_first`
(an export request with keep_longer answers code 400), `refuse_trunks` (an export of
these trunk ids answers code 404, a failure of that trunk only), `fail_exports` (the next N export
requests answer HTTP 503), `hang` ("token", "export" or "poll": that answer never comes
until the server is closed), `garbage_polls` (polls answer HTML).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

from dnl_ad.config import Settings

LINK_BASE = "https://cdr.carrier.example/files/"


class CdrApiServer:
    """Use as a context manager; `settings(base)` points a Settings at it."""

    def __init__(self, *, processing_polls: int = 0, uploading_polls: int = 0,
                 counts: dict[int, int] | None = None) -> None:
        self.processing_polls = processing_polls
        self.uploading_polls = uploading_polls
        self.counts = counts or {}
        self.token_mode = "ok"
        self.refuse_tokens = 0
        self.refuse_all_tokens = False
        self.code_400_first = False
        self.fail_exports = 0
        self.hang = ""
        self.garbage_polls = False
        self.refuse_trunks: set[int] = set()
        self.requests: list[dict[str, Any]] = []
        self.seen = threading.Event()       # set at every request: tests wait on it, not on a clock
        self.polled = threading.Event()     # set at every poll
        self.release = threading.Event()    # ends every hanging answer (set on close)
        self._lock = threading.Lock()
        self._issued: list[str] = []
        self._polls: dict[str, int] = {}
        self.token_server = self._server("token")
        self.export_server = self._server("export")
        self.token_port = self.token_server.server_address[1]
        self.export_port = self.export_server.server_address[1]
        self._threads = [threading.Thread(target=s.serve_forever, args=(0.05,), daemon=True)
                         for s in (self.token_server, self.export_server)]

    # --- what the tests read

    def settings(self, base: Settings | None = None, **changes: Any) -> Settings:
        return (base or Settings()).replace(
            cdr_api_host="127.0.0.1", cdr_api_token_port=self.token_port,
            cdr_api_export_port=self.export_port, **changes)

    def made(self, port: str, method: str = "") -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self.requests
                    if r["port"] == port and (not method or r["method"] == method)]

    def exports(self) -> list[dict[str, Any]]:
        """The export requests (POST on the export port), in order."""
        return self.made("export", "POST")

    @property
    def issued(self) -> list[str]:
        with self._lock:
            return list(self._issued)

    @staticmethod
    def link(side: str, trunk_id: int) -> str:
        return f"{LINK_BASE}{side}-{trunk_id}.csv"

    # --- the protocol

    def _server(self, port_name: str) -> ThreadingHTTPServer:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def _send(self, status: int, body: Any) -> None:
                raw = body if isinstance(body, bytes) else json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(raw)))
                    self.end_headers()
                    self.wfile.write(raw)
                except OSError:
                    pass  # the client gave up (timeout, stop): nothing to answer

            def _hang(self, where: str) -> bool:
                if api.hang == where:
                    api.release.wait(30)
                    return True
                return False

            def _record(self, form: dict[str, str] | None) -> None:
                with api._lock:
                    api.requests.append({"port": port_name, "method": self.command,
                                         "path": self.path,
                                         "auth": self.headers.get("Authorization"),
                                         "content_type": self.headers.get("Content-Type"),
                                         "form": form})
                api.seen.set()

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = dict(parse_qsl(self.rfile.read(length).decode(), keep_blank_values=True))
                self._record(form)
                if port_name == "token":
                    self._token()
                else:
                    self._export(form)

            def _token(self) -> None:
                if self._hang("token"):
                    return
                if api.token_mode == "error":
                    self._send(500, {"code": 500, "msg": "token service down"})
                    return
                with api._lock:
                    token = f"tok-{len(api._issued) + 1}"
                    api._issued.append(token)
                self._send(200, {"msg": "no"} if api.token_mode == "missing"
                           else {"token": token})

            def _token_ok(self) -> bool:
                auth = self.headers.get("Authorization") or ""
                with api._lock:
                    issued = list(api._issued)
                if not auth.startswith("Token "):
                    return False
                token = auth[len("Token "):]
                if api.refuse_all_tokens or token not in issued:
                    return False
                return issued.index(token) >= api.refuse_tokens

            def _export(self, form: dict[str, str]) -> None:
                if self._hang("export"):
                    return
                if not self._token_ok():
                    self._send(401, {"code": 401, "msg": "invalid token"})
                    return
                with api._lock:
                    fail = api.fail_exports > 0
                    if fail:
                        api.fail_exports -= 1
                if fail:
                    self._send(503, {"code": 503, "msg": "export service busy"})
                    return
                if api.code_400_first and "keep_longer" in form:
                    self._send(200, {"code": 400, "msg": "keep_longer not allowed"})
                    return
                side = "ingress" if "ingress_id" in form else "egress"
                trunk = form.get(f"{side}_id", "")
                if trunk.isdigit() and int(trunk) in api.refuse_trunks:
                    self._send(200, {"code": 404, "msg": f"no CDR service for trunk {trunk}"})
                    return
                self._send(200, {"code": 200, "request_id": f"{side}-{trunk}"})

            def do_GET(self) -> None:
                self._record(None)
                if port_name != "export":
                    self._send(404, {"code": 404})
                    return
                request_id = self.path.strip("/")
                with api._lock:
                    n = api._polls[request_id] = api._polls.get(request_id, 0) + 1
                api.polled.set()
                if self._hang("poll"):
                    return
                if api.garbage_polls:
                    self._send(200, b"<html>proxy error</html>")
                elif n <= api.processing_polls:
                    self._send(200, {"code": 200, "status": "Processing"})
                elif n <= api.processing_polls + api.uploading_polls:
                    self._send(200, {"code": 200, "status": "Uploading"})
                else:
                    trunk = int(request_id.rsplit("-", 1)[-1] or 0)
                    self._send(200, {"code": 200, "status": "Completed",
                                     "download_link": f"{LINK_BASE}{request_id}.csv",
                                     "count": api.counts.get(trunk, 42)})

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        return server

    def __enter__(self) -> CdrApiServer:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        for s in (self.token_server, self.export_server):
            s.shutdown()
            s.server_close()
