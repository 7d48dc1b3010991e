"""The CDR export API client against a real HTTP server on loopback, and the static link."""

from __future__ import annotations

import logging
from urllib.parse import parse_qs, urlparse

import pytest

from dnl_ad import cdr_api
from dnl_ad.config import Settings
from dnl_ad.smtp_sink import free_port

from .conftest import utc
from .daily_support import FakeCdrApi

START, END = utc(2026, 11, 19, 16), utc(2026, 11, 20, 16)


class FakeClock:
    """monotonic() and sleep() that move together, so polling never waits for real."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds


def _api(url: str, clock: FakeClock | None = None, timeout: float = 60, poll: float = 5
         ) -> cdr_api.CdrApi:
    clock = clock or FakeClock()
    return cdr_api.CdrApi(url, "ops", "pa55word", timeout=timeout, poll=poll,
                          sleep=clock.sleep, monotonic=clock.monotonic)


def test_token_request_and_poll_until_ready() -> None:
    clock = FakeClock()
    with FakeCdrApi("ok", pending_polls=2) as server:
        api = _api(server.url, clock, poll=5)
        first = api.export_link(START, END, 7, ("ANI", "DNIS"))
        second = api.export_link(START, END, 8)
    assert first == "https://cdr.carrier.example/files/req-7.csv"
    assert second == "https://cdr.carrier.example/files/req-8.csv"
    token_calls = [r for r in server.requests if r["path"] == "/api/auth/token"]
    assert len(token_calls) == 1  # one token for the session
    assert token_calls[0]["body"] == {"username": "ops", "password": "pa55word"}
    export = [r for r in server.requests if r["path"] == "/api/cdr/export"]
    assert export[0]["body"] == {"start": int(START.timestamp()), "end": int(END.timestamp()),
                                 "trunk_id": 7, "fields": ["ANI", "DNIS"], "format": "plain"}
    assert export[0]["auth"] == "Bearer sekret-token-123"
    polls = [r for r in server.requests if r["method"] == "GET"]
    assert [r["path"] for r in polls] == ["/api/cdr/export/req-7"] * 3 + \
        ["/api/cdr/export/req-8"] * 3
    assert clock.slept == [5, 5, 5, 5]  # two pending answers per request, CDR_API_POLL apart


def test_never_ready_gives_up_at_the_timeout() -> None:
    clock = FakeClock()
    with FakeCdrApi("pending") as server:
        api = _api(server.url, clock, timeout=12, poll=5)
        with pytest.raises(cdr_api.CdrApiError, match="not ready after 12 s") as err:
            api.export_link(START, END, 7)
    assert err.value.outage
    assert clock.slept == [5, 5]  # polls at 0, 5 and 10 s; none fits before 12 s


@pytest.mark.parametrize(("code", "outage"), [(500, True), (503, True), (400, False),
                                              (401, True)])
def test_error_codes(code: int, outage: bool) -> None:
    with FakeCdrApi("error", error_code=code) as server:
        with pytest.raises(cdr_api.CdrApiError, match=f"HTTP {code}") as err:
            _api(server.url).export_link(START, END, 7)
    assert err.value.outage is outage


def test_garbage_answer() -> None:
    with FakeCdrApi("garbage") as server:
        with pytest.raises(cdr_api.CdrApiError, match="not JSON"):
            _api(server.url).export_link(START, END, 7)


def test_token_answer_without_token() -> None:
    with FakeCdrApi("no_token") as server:
        with pytest.raises(cdr_api.CdrApiError, match="no token"):
            _api(server.url).export_link(START, END, 7)


def test_slow_server_times_out() -> None:
    with FakeCdrApi("slow") as server:
        api = cdr_api.CdrApi(server.url, "u", "p", timeout=1, poll=1)  # real clock: 1 s
        with pytest.raises(cdr_api.CdrApiError, match="timed out"):
            api.export_link(START, END, 7)


def test_unreachable_server() -> None:
    url = f"http://127.0.0.1:{free_port()}/api"
    with pytest.raises(cdr_api.CdrApiError, match="failed") as err:
        _api(url).export_link(START, END, 7)
    assert err.value.outage


def test_static_link_is_url_encoded() -> None:
    link = cdr_api.static_link("https://portal.example/cdr/", START, END, 42,
                               ("Start Time", "A&B"))
    parsed = urlparse(link)
    assert f"{parsed.scheme}://{parsed.netloc}{parsed.path}" == "https://portal.example/cdr/"
    assert " " not in link and "A&B" not in link
    assert parse_qs(parsed.query) == {"start": [str(int(START.timestamp()))],
                                      "end": [str(int(END.timestamp()))], "i": ["42"],
                                      "field": ["Start Time,A&B"], "format": ["plain"]}


def test_link_maker_falls_back_and_stops_asking_a_dead_api(caplog) -> None:
    caplog.set_level(logging.WARNING)
    with FakeCdrApi("error", error_code=502) as server:
        settings = Settings(cdr_api_url=server.url, cdr_api_user="ops",
                            cdr_api_password="pa55word",
                            cdr_download_url="https://portal.example/cdr")
        maker = cdr_api.LinkMaker(settings, sleep=lambda s: None)
        first = maker.link(1, 7, "t7", START, END)
        second = maker.link(1, 8, "t8", START, END)
    assert first is not None and second is not None
    assert (first.source, second.source) == ("static", "static")
    assert first.url == cdr_api.static_link("https://portal.example/cdr", START, END, 7)
    assert len([r for r in server.requests if r["path"] == "/api/cdr/export"]) == 1
    text = caplog.text
    assert "trunk 7" in text and "HTTP 502" in text and "static" in text
    assert "trunk 8" in text and "skipped for the rest of this sweep" in text
    assert "sekret-token-123" not in text and "pa55word" not in text


def test_link_maker_without_any_url_gives_none(caplog) -> None:
    caplog.set_level(logging.WARNING)
    maker = cdr_api.LinkMaker(Settings())
    assert maker.link(3, 9, "t9", START, END) is None
    assert "CDR_DOWNLOAD_URL is empty" in caplog.text and "client 3 trunk 9" in caplog.text


class _RawServer:
    """A loopback TCP server that answers every connection with fixed bytes, then closes:
    for answers that are not well-formed HTTP (a broken proxy, a truncated body)."""

    def __init__(self, answer: bytes) -> None:
        import socket
        import threading

        self.answer = answer
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/api"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(self.answer)

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize(("answer", "why"), [
    (b"HELLO FROM A PROXY\r\n\r\n", "not HTTP"),
    (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n"
     b'{"token": "abc', "truncated"),
])
def test_broken_http_answer_falls_back_to_static_link(answer: bytes, why: str, caplog) -> None:
    caplog.set_level(logging.WARNING)
    server = _RawServer(answer)
    try:
        settings = Settings(cdr_api_url=server.url, cdr_api_user="ops",
                            cdr_api_password="pa55word",
                            cdr_download_url="https://portal.example/cdr")
        maker = cdr_api.LinkMaker(settings, sleep=lambda s: None)
        link = maker.link(1, 7, "t7", START, END)
    finally:
        server.close()
    assert link is not None, why
    assert link.source == "static"
    assert "trunk 7" in caplog.text and "static" in caplog.text
