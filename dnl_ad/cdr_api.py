"""DNL CDR export API client, and the static download link used when it cannot help.

The export API is asynchronous. With CDR_API_URL = <base>:

1. POST <base>/auth/token   {"username", "password"}            -> {"token": "..."}
2. POST <base>/cdr/export   {"start", "end", "trunk_id", "fields", "format": "plain"}
   (Authorization: Bearer <token>; start/end unix seconds, end exclusive)
                                                                  -> {"request_id": "..."}
3. GET  <base>/cdr/export/<request_id>                            -> {"status": "pending" |
   "running" | "ready" | "failed", "download_url": "https://..." when ready}

All of it, polling included, is bounded by CDR_API_TIMEOUT_SECONDS; polls are
CDR_API_POLL_SECONDS apart. Any failure (unreachable, slow, HTTP error, an answer that is
not the JSON above) raises CdrApiError whose text says why, and the caller falls back to
the static link `<CDR_DOWNLOAD_URL>/?start=&end=&i=<trunk>&field=<labels>&format=plain`.
After an outage-like failure (connection, timeout, 5xx, token) the LinkMaker stops
calling the API for the rest of its sweep, so one dead API costs one timeout, not one per
trunk. The token and password never reach a log.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlparse

from .config import Settings

log = logging.getLogger(__name__)

# Column labels of the daily CDR file (the UI's daily_cdr_fields labels where it has them).
DEFAULT_FIELDS: tuple[str, ...] = (
    "Start Time", "End Time", "ANI", "DNIS", "Trunk", "Duration", "Billed Time", "Rate",
    "Cost", "Release Cause",
)
_READY = {"ready", "done", "finished", "completed"}
_WAITING = {"pending", "running", "queued", "processing"}


class CdrApiError(Exception):
    """The API did not give a link; str() is the reason an operator reads."""

    def __init__(self, reason: str, *, outage: bool = False) -> None:
        super().__init__(reason)
        self.outage = outage  # the API as a whole looks down: stop asking this sweep


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

    def __init__(self, base_url: str, user: str, password: str, *, timeout: float,
                 poll: float, sleep: Callable[[float], None] = time.sleep,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.base = base_url.rstrip("/")
        self.user, self._password = user, password
        self.timeout, self.poll = timeout, poll
        self._sleep, self._monotonic = sleep, monotonic
        self._token: str | None = None

    def export_link(self, start: dt.datetime, end: dt.datetime, trunk_id: int,
                    fields: Sequence[str] = DEFAULT_FIELDS) -> str:
        """Request the export of one trunk's CDRs and wait until its link is ready."""
        deadline = self._monotonic() + self.timeout
        if self._token is None:
            answer = self._call("POST", "/auth/token",
                                {"username": self.user, "password": self._password}, deadline)
            token = answer.get("token")
            if not isinstance(token, str) or not token:
                raise CdrApiError("token answer has no token", outage=True)
            self._token = token
        answer = self._call("POST", "/cdr/export",
                            {"start": unix(start), "end": unix(end), "trunk_id": trunk_id,
                             "fields": list(fields), "format": "plain"}, deadline)
        request_id = answer.get("request_id")
        if not isinstance(request_id, str | int) or isinstance(request_id, bool) \
                or str(request_id) == "":
            raise CdrApiError("export answer has no request_id")
        path = "/cdr/export/" + quote(str(request_id), safe="")
        while True:
            answer = self._call("GET", path, None, deadline)
            status = str(answer.get("status", "")).lower()
            if status in _READY:
                return _checked_url(answer.get("download_url"))
            if status not in _WAITING:
                raise CdrApiError(f"export request {request_id} ended with status {status!r}")
            if deadline - self._monotonic() <= self.poll:  # no time left for another poll
                raise CdrApiError(f"export request {request_id} not ready after "
                                  f"{self.timeout:g} s (CDR_API_TIMEOUT_SECONDS)", outage=True)
            self._sleep(self.poll)

    def _call(self, method: str, path: str, body: dict[str, Any] | None,
              deadline: float) -> dict[str, Any]:
        left = deadline - self._monotonic()
        if left <= 0:
            raise CdrApiError(f"no answer within {self.timeout:g} s (CDR_API_TIMEOUT_SECONDS)",
                              outage=True)
        headers = {"Accept": "application/json", "User-Agent": "dnl_ad"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token}"
        request = urllib.request.Request(self.base + path, data=data, headers=headers,
                                         method=method)
        what = f"{method} {path}"
        try:
            with urllib.request.urlopen(request, timeout=left) as response:
                raw = response.read(1_000_000)
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                self._token = None
            raise CdrApiError(f"{method} {path} answered HTTP {exc.code}",
                              outage=exc.code >= 500 or exc.code in (401, 403)) from None
        except TimeoutError:
            raise CdrApiError(f"{method} {path} timed out (CDR_API_TIMEOUT_SECONDS="
                              f"{self.timeout:g})", outage=True) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, TimeoutError):
                raise CdrApiError(f"{method} {path} timed out (CDR_API_TIMEOUT_SECONDS="
                                  f"{self.timeout:g})", outage=True) from None
            raise CdrApiError(f"{method} {path} failed: {reason}", outage=True) from None
        except http.client.HTTPException as exc:  # not HTTP at all, or cut short (not OSError)
            raise CdrApiError(f"{method} {path}: broken HTTP answer "
                              f"({type(exc).__name__}: {str(exc)[:60]!r})", outage=True) from None
        try:
            answer = json.loads(raw)
        except ValueError:
            raise CdrApiError(f"{what}: answer is not JSON ({raw[:60]!r})") from None
        if not isinstance(answer, dict):
            raise CdrApiError(f"{what}: answer is not a JSON object")
        return answer


def _checked_url(value: Any) -> str:
    if not isinstance(value, str):
        raise CdrApiError("ready export has no download_url")
    parsed = urlparse(value)
    if parsed.scheme not in {"http", "https"} or not parsed.netloc:
        raise CdrApiError(f"ready export has an unusable download_url {value[:80]!r}")
    return value


@dataclass(frozen=True)
class Link:
    """A trunk's download link and where it came from ('api' or 'static')."""

    trunk_id: int
    url: str
    source: str


class LinkMaker:
    """Links for one sweep: the API when configured and healthy, else the static URL."""

    def __init__(self, settings: Settings, *, sleep: Callable[[float], None] = time.sleep,
                 fields: Sequence[str] = DEFAULT_FIELDS) -> None:
        self.settings = settings
        self.fields = tuple(fields)
        self.api: CdrApi | None = None
        self.api_down: str = ""
        if settings.cdr_api_url:
            self.api = CdrApi(settings.cdr_api_url, settings.cdr_api_user,
                              settings.cdr_api_password,
                              timeout=settings.cdr_api_timeout_seconds,
                              poll=settings.cdr_api_poll_seconds, sleep=sleep)

    def link(self, client_id: int, trunk_id: int, alias: str, start: dt.datetime,
             end: dt.datetime) -> Link | None:
        """The trunk's link; None (logged) when neither the API nor CDR_DOWNLOAD_URL gives one."""
        why = ""
        if self.api is not None and not self.api_down:
            try:
                return Link(trunk_id, self.api.export_link(start, end, trunk_id, self.fields),
                            "api")
            except CdrApiError as exc:
                why = str(exc)
                if exc.outage:
                    self.api_down = why
        elif self.api is not None:
            why = f"API skipped for the rest of this sweep after: {self.api_down}"
        if not self.settings.cdr_download_url:
            log.warning("cdr_delivery: client %s trunk %s %r: no link: %s and CDR_DOWNLOAD_URL "
                        "is empty", client_id, trunk_id, alias,
                        why or "CDR_API_URL is empty")
            return None
        if why:
            log.warning("cdr_delivery: client %s trunk %s %r: CDR API gave no link (%s); using "
                        "the static CDR_DOWNLOAD_URL link", client_id, trunk_id, alias, why)
        return Link(trunk_id, static_link(self.settings.cdr_download_url, start, end, trunk_id,
                                          self.fields), "static")
