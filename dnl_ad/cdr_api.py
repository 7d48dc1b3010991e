"""DNL CDR API client (PROVIDER_DB.md section 5), and the static link used when it cannot help.

The switch's CDR API, on CDR_API_HOST:

1. Token:  POST http://HOST:8887/                                  -> {"token": "..."}
   (CDR_API_USER/CDR_API_PASSWORD, when set, go along as form fields username/password)
2. Export: POST http://HOST:8889  form-encoded start_time, end_time (epoch seconds),
   ingress_id or egress_id, field (comma-separated daily_cdr_fields ids of the direction,
   in id order), keep_longer=1, non_zero=1, human_readable=1; header
   `Authorization: Token <token>`                                  -> {"code": 200, "request_id"}
   code 400: asked once more without keep_longer. 401/403: the token is fetched afresh
   once (it may have expired), then the API is taken as refusing us.
3. Poll:   GET http://HOST:8889/<request_id> while "status" is Processing or Uploading;
   then "download_link" and "count" (the records in the file).

Token, export and polls of one trunk together are bounded by CDR_API_TIMEOUT_SECONDS;
polls are CDR_API_POLL_SECONDS apart. Every wait (an HTTP answer, the pause between
polls) wakes on a stop request: the export is then abandoned (CdrApiStopped) and the
mail is retried by the next sweep or the next start. Any other failure raises
CdrApiError saying why; the caller falls back to the static link
`<CDR_DOWNLOAD_URL>/?start=&end=&i=<trunk>&field=<labels>&format=plain`. After an
outage-like failure (connection, timeout, 5xx, refused token) the LinkMaker stops calling
the API for the rest of its sweep, so one dead API costs one timeout, not one per trunk.
The token and password never reach a log.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote, urlencode, urlparse

from .config import Settings, cdr_api_host, old_cdr_keys_note

log = logging.getLogger(__name__)

# Column labels of the daily CDR file when daily_cdr_fields has none for the direction.
DEFAULT_FIELDS: tuple[str, ...] = (
    "Start Time", "End Time", "ANI", "DNIS", "Trunk", "Duration", "Billed Time", "Rate",
    "Cost", "Release Cause",
)
SIDES = ("ingress", "egress")       # daily_cdr_fields.type 0 and 1, in this order
_WAITING = {"processing", "uploading"}
_ANSWER_SLICE = 0.05                # how often a stop request is looked at during an HTTP wait


class Stop(Protocol):
    """What can interrupt an export: scheduler.Wakeup in the daemon, threading.Event in tests."""

    def wait(self, timeout: float) -> bool:
        """Sleep up to `timeout` s, less on a stop request; True when stop is requested."""
        ...


class _Never:
    """No stop source: plain sleeping (the harness, one-off runs)."""

    def wait(self, timeout: float) -> bool:
        if timeout > 0:
            time.sleep(timeout)
        return False


NEVER: Stop = _Never()


class CdrApiError(Exception):
    """The API did not give a link; str() is the reason an operator reads."""

    def __init__(self, reason: str, *, outage: bool = False) -> None:
        super().__init__(reason)
        self.outage = outage  # the API as a whole looks down: stop asking this sweep


class CdrApiStopped(CdrApiError):
    """A stop was requested while waiting on the API: the export is abandoned."""

    def __init__(self) -> None:
        super().__init__("stop requested: export abandoned", outage=True)


@dataclass(frozen=True)
class FieldSet:
    """One direction's daily_cdr_fields: ids for the export request, labels for the file."""

    ids: tuple[int, ...] = ()
    labels: tuple[str, ...] = DEFAULT_FIELDS

    @classmethod
    def from_rows(cls, rows: Sequence[tuple[int, str | None]]) -> FieldSet:
        """(id, label) rows in id order; no rows: no ids and the default labels."""
        if not rows:
            return cls()
        return cls(tuple(int(i) for i, _ in rows),
                   tuple((label or "").strip() or str(i) for i, label in rows))


@dataclass(frozen=True)
class Export:
    """A ready export: its download link and the records it holds (None: not said)."""

    url: str
    count: int | None


def unix(instant: dt.datetime) -> int:
    return int(instant.timestamp())


def static_link(base_url: str, start: dt.datetime, end: dt.datetime, trunk_id: int,
                fields: Sequence[str] = DEFAULT_FIELDS) -> str:
    """The CDR_DOWNLOAD_URL link for one trunk and window (values URL-encoded)."""
    query = urlencode([("start", unix(start)), ("end", unix(end)), ("i", trunk_id),
                       ("field", ",".join(fields)), ("format", "plain")], quote_via=quote)
    return f"{base_url.rstrip('/')}/?{query}"


class CdrApi:
    """One API session: a token fetched once, then one export request per trunk."""

    def __init__(self, host: str, *, token_port: int = 8887, export_port: int = 8889,
                 user: str = "", password: str = "", timeout: float, poll: float,
                 stop: Stop = NEVER, monotonic: Callable[[], float] = time.monotonic) -> None:
        netloc = f"[{host}]" if ":" in host else host
        self.token_url = f"http://{netloc}:{token_port}/"
        self.export_url = f"http://{netloc}:{export_port}"
        self.user, self._password = user, password
        self.timeout, self.poll = timeout, poll
        self._stop, self._monotonic = stop, monotonic
        self._token: str | None = None

    def export(self, side: str, trunk_id: int, start: dt.datetime, end: dt.datetime,
               field_ids: Sequence[int]) -> Export:
        """Request one trunk's CDRs of [start, end) and wait until the file is ready.

        1. A token, unless this session holds one.
        2. The export request; 400: once more without keep_longer; 401/403: once more
           with a fresh token.
        3. Polls while the export is Processing or Uploading, CDR_API_POLL_SECONDS apart.
        """
        if side not in SIDES:
            raise ValueError(f"side must be one of {SIDES}, not {side!r}")
        deadline = self._monotonic() + self.timeout
        form = {"start_time": str(unix(start)), "end_time": str(unix(end)),
                f"{side}_id": str(trunk_id), "field": ",".join(str(i) for i in field_ids),
                "keep_longer": "1", "non_zero": "1", "human_readable": "1"}
        fresh_token = False
        while True:
            if self._token is None:
                self._token = self._fetch_token(deadline)
                fresh_token = True
            status, answer = self._call("POST", self.export_url, form, deadline)
            code = _code(status, answer)
            if code == 400 and "keep_longer" in form:
                del form["keep_longer"]
                log.debug("cdr_api: export of %s %s answered 400; asking without keep_longer",
                          side, trunk_id)
                continue
            if code in (401, 403):
                self._token = None
                if not fresh_token:
                    continue  # the session's token may have expired: one fresh token
                raise CdrApiError(f"export request refused the token (code {code})",
                                  outage=True)
            if code != 200:
                raise CdrApiError(f"export request answered code {code}"
                                  + _message(answer), outage=code >= 500)
            break
        request_id = answer.get("request_id")
        if isinstance(request_id, bool) or not isinstance(request_id, str | int) \
                or str(request_id).strip() == "":
            raise CdrApiError("export answer has no request_id")
        return self._wait_ready(str(request_id), deadline)

    def ping(self) -> None:
        """Fetch a token and forget it (`dnl-ad check`); CdrApiError says what failed."""
        self._fetch_token(self._monotonic() + self.timeout)

    def _fetch_token(self, deadline: float) -> str:
        form = {"username": self.user, "password": self._password} if self.user else {}
        status, answer = self._call("POST", self.token_url, form, deadline)
        if status != 200:
            raise CdrApiError(f"token request answered HTTP {status}" + _message(answer),
                              outage=True)
        token = answer.get("token")
        if not isinstance(token, str) or not token.strip():
            raise CdrApiError("token answer has no token", outage=True)
        return token.strip()

    def _wait_ready(self, request_id: str, deadline: float) -> Export:
        url = f"{self.export_url}/{quote(request_id, safe='')}"
        while True:
            status, answer = self._call("GET", url, None, deadline)
            code = _code(status, answer)
            if code != 200:
                raise CdrApiError(f"export request {request_id}: poll answered code {code}"
                                  + _message(answer), outage=code >= 500)
            state = str(answer.get("status") or "").strip()
            if state.lower() not in _WAITING:
                if answer.get("download_link") in (None, ""):
                    raise CdrApiError(f"export request {request_id} ended with status "
                                      f"{state[:40]!r} and no download_link")
                return Export(_checked_url(answer.get("download_link")),
                              _count(answer.get("count")))
            left = deadline - self._monotonic()
            if left <= self.poll:  # no time left for another poll
                raise CdrApiError(f"export request {request_id} still {state} after "
                                  f"{self.timeout:g} s (CDR_API_TIMEOUT_SECONDS)", outage=True)
            if self._stop.wait(self.poll):
                raise CdrApiStopped()

    def _call(self, method: str, url: str, form: Mapping[str, str] | None, deadline: float
              ) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON object) of one request, waited for in a worker thread so a
        stop request is seen within 50 ms; the abandoned request dies at its own timeout."""
        left = deadline - self._monotonic()
        if left <= 0:
            raise CdrApiError(f"no answer within {self.timeout:g} s (CDR_API_TIMEOUT_SECONDS)",
                              outage=True)
        if self._stop.wait(0):
            raise CdrApiStopped()
        headers = {"Accept": "application/json", "User-Agent": "dnl_ad"}
        data = None
        if form is not None:
            data = urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        if self._token is not None and url != self.token_url:
            headers["Authorization"] = f"Token {self._token}"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        what = f"{method} {urlparse(url).netloc}{urlparse(url).path}"
        box: list[tuple[int, bytes] | BaseException] = []
        done = threading.Event()

        def fetch() -> None:
            try:
                box.append(_fetch(request, left))
            except BaseException as exc:  # handed to the waiting thread
                box.append(exc)
            finally:
                done.set()

        threading.Thread(target=fetch, name="cdr-api-http", daemon=True).start()
        while not done.wait(_ANSWER_SLICE):
            if self._stop.wait(0):
                raise CdrApiStopped()
            if self._monotonic() >= deadline:  # a server trickling bytes past the socket timeout
                raise CdrApiError(f"{what} timed out (CDR_API_TIMEOUT_SECONDS="
                                  f"{self.timeout:g})", outage=True)
        outcome = box[0]
        if isinstance(outcome, BaseException):
            raise self._failure(what, outcome) from None
        status, raw = outcome
        try:
            answer = json.loads(raw) if raw.strip() else {}
        except ValueError:
            if status != 200:
                return status, {}
            raise CdrApiError(f"{what}: answer is not JSON ({raw[:60]!r})") from None
        if not isinstance(answer, dict):
            raise CdrApiError(f"{what}: answer is not a JSON object")
        return status, answer

    def _failure(self, what: str, exc: BaseException) -> CdrApiError:
        if isinstance(exc, TimeoutError) or isinstance(getattr(exc, "reason", None),
                                                       TimeoutError):
            return CdrApiError(f"{what} timed out (CDR_API_TIMEOUT_SECONDS={self.timeout:g})",
                               outage=True)
        if isinstance(exc, http.client.HTTPException):  # not HTTP, or cut short
            return CdrApiError(f"{what}: broken HTTP answer ({type(exc).__name__}: "
                               f"{str(exc)[:60]!r})", outage=True)
        if isinstance(exc, urllib.error.URLError | OSError):
            return CdrApiError(f"{what} failed: {getattr(exc, 'reason', exc)}", outage=True)
        return CdrApiError(f"{what} failed: {type(exc).__name__}: {str(exc)[:80]}",
                           outage=True)


def _fetch(request: urllib.request.Request, timeout: float) -> tuple[int, bytes]:
    """One HTTP exchange: (status, body), an HTTP error status included."""
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read(1_000_000)
    except urllib.error.HTTPError as exc:
        try:
            body = exc.read(100_000)
        except (OSError, http.client.HTTPException):
            body = b""
        return exc.code, body


def _code(status: int, answer: Mapping[str, Any]) -> int:
    """The answer's own `code` when it has one, else the HTTP status."""
    code = answer.get("code")
    if isinstance(code, int) and not isinstance(code, bool):
        return code
    if isinstance(code, str) and code.strip().isdigit():
        return int(code)
    return status


def _message(answer: Mapping[str, Any]) -> str:
    for key in ("msg", "message", "error"):
        if isinstance(answer.get(key), str) and answer[key].strip():
            return f" ({answer[key].strip()[:80]})"
    return ""


def _count(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        n = int(value)
    except (TypeError, ValueError):
        return None
    return n if n >= 0 else None


def _checked_url(value: Any) -> str:
    if not isinstance(value, str):
        raise CdrApiError("ready export has no download_link")
    parsed = urlparse(value.strip())
    if parsed.scheme not in {"http", "https"} or not parsed.netloc:
        raise CdrApiError(f"ready export has an unusable download_link {value[:80]!r}")
    return value.strip()


@dataclass(frozen=True)
class Link:
    """A trunk's download link, where it came from ('api' or 'static'), and the record
    count the API gave (None for a static link)."""

    trunk_id: int
    url: str
    source: str
    side: str = "ingress"
    count: int | None = None


_NOTED: set[str] = set()  # deprecation notes already logged by this process


class LinkMaker:
    """Links for one sweep: the API when configured and healthy, else the static URL."""

    def __init__(self, settings: Settings, fields: Mapping[str, FieldSet] | None = None, *,
                 stop: Stop = NEVER, monotonic: Callable[[], float] = time.monotonic,
                 use_api: bool = True) -> None:
        self.settings = settings
        self.fields = {side: (fields or {}).get(side, FieldSet()) for side in SIDES}
        self.api: CdrApi | None = None
        self.api_down: str = ""
        note = old_cdr_keys_note(settings)
        if note and note not in _NOTED:
            _NOTED.add(note)
            log.warning("cdr_delivery: %s", note)
        host = cdr_api_host(settings) if use_api else ""
        if host:
            self.api = CdrApi(host, token_port=settings.cdr_api_token_port,
                              export_port=settings.cdr_api_export_port,
                              user=settings.cdr_api_user, password=settings.cdr_api_password,
                              timeout=settings.cdr_api_timeout_seconds,
                              poll=settings.cdr_api_poll_seconds, stop=stop,
                              monotonic=monotonic)

    def link(self, client_id: int, trunk_id: int, side: str, alias: str, start: dt.datetime,
             end: dt.datetime) -> Link:
        """The trunk's link. Raises CdrApiStopped on a stop request, and CdrApiError (the
        reason) when neither the API nor CDR_DOWNLOAD_URL gives one."""
        fields = self.fields[side]
        why = ""
        if self.api is not None and not self.api_down:
            try:
                found = self.api.export(side, trunk_id, start, end, fields.ids)
                return Link(trunk_id, found.url, "api", side, found.count)
            except CdrApiStopped:
                raise
            except CdrApiError as exc:
                why = str(exc)
                if exc.outage:
                    self.api_down = why
        elif self.api is not None:
            why = f"API skipped for the rest of this sweep after: {self.api_down}"
        if not self.settings.cdr_download_url:
            raise CdrApiError(f"{why or 'CDR_API_HOST is empty'} and CDR_DOWNLOAD_URL is empty")
        if why:
            log.warning("cdr_delivery: client %s %s trunk %s %r: CDR API gave no link (%s); "
                        "using the static CDR_DOWNLOAD_URL link", client_id, side, trunk_id,
                        alias, why)
        return Link(trunk_id, static_link(self.settings.cdr_download_url, start, end, trunk_id,
                                          fields.labels), "static", side)
