"""The CDR API client against a real server on loopback speaking the DNL protocol
(tests/cdr_api_server.py), the static link, and the CDR_API_* settings."""

from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from dnl_ad import cdr_api
from dnl_ad.config import ConfigError, Settings, cdr_api_host, load_settings
from dnl_ad.devtools.smtp_sink import free_port

from .cdr_api_server import CdrApiServer
from .conftest import utc

START, END = utc(2026, 11, 19, 16), utc(2026, 11, 20, 16)
FORM = {"start_time": str(int(START.timestamp())), "end_time": str(int(END.timestamp())),
        "keep_longer": "1", "non_zero": "1", "human_readable": "1"}


class FakeClock:
    """monotonic() and a Stop whose wait() moves it: polling never waits for real."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.waited: list[float] = []

    def monotonic(self) -> float:
        return self.t

    def wait(self, seconds: float) -> bool:
        if seconds > 0:
            self.waited.append(seconds)
            self.t += seconds
        return False


def _api(server: CdrApiServer, clock: FakeClock | None = None, *, timeout: float = 60,
         poll: float = 5, stop: cdr_api.Stop | None = None, **kw) -> cdr_api.CdrApi:
    clock = clock or FakeClock()
    return cdr_api.CdrApi("127.0.0.1", token_port=server.token_port,
                          export_port=server.export_port, timeout=timeout, poll=poll,
                          stop=stop or clock, monotonic=clock.monotonic, **kw)


def test_token_export_poll_with_the_exact_form() -> None:
    with CdrApiServer(counts={7: 1234, 8: 5}) as server:
        api = _api(server)
        first = api.export("ingress", 7, START, END, (3, 5, 11))
        second = api.export("egress", 8, START, END, (21, 22))
    assert first == cdr_api.Export(server.link("ingress", 7), 1234)
    assert second == cdr_api.Export(server.link("egress", 8), 5)
    tokens = server.made("token")
    assert len(tokens) == 1 and tokens[0]["method"] == "POST" and tokens[0]["path"] == "/"
    assert tokens[0]["auth"] is None  # the token request carries no token
    ingress, egress = server.exports()
    assert ingress["path"] == "/" and ingress["content_type"] == \
        "application/x-www-form-urlencoded"
    assert ingress["form"] == {**FORM, "ingress_id": "7", "field": "3,5,11"}
    assert egress["form"] == {**FORM, "egress_id": "8", "field": "21,22"}
    assert ingress["auth"] == egress["auth"] == "Token tok-1"  # one token per session
    polls = server.made("export", "GET")
    assert [p["path"] for p in polls] == ["/ingress-7", "/egress-8"]
    assert all(p["auth"] == "Token tok-1" for p in polls)


def test_old_user_and_password_go_with_the_token_request() -> None:
    with CdrApiServer() as server:
        _api(server, user="ops", password="pa55word").export("ingress", 7, START, END, (1,))
    assert server.made("token")[0]["form"] == {"username": "ops", "password": "pa55word"}


def test_slow_export_is_polled_until_ready() -> None:
    clock = FakeClock()
    with CdrApiServer(processing_polls=3, uploading_polls=2) as server:
        found = _api(server, clock, poll=5).export("ingress", 7, START, END, (1,))
    assert found.url == server.link("ingress", 7)
    assert len(server.made("export", "GET")) == 6
    assert clock.waited == [5] * 5  # Processing x3, Uploading x2, CDR_API_POLL_SECONDS apart


def test_never_ready_gives_up_at_the_timeout() -> None:
    clock = FakeClock()
    with CdrApiServer(processing_polls=1000) as server:
        with pytest.raises(cdr_api.CdrApiError, match="still Processing after 12 s") as err:
            _api(server, clock, timeout=12, poll=5).export("ingress", 7, START, END, (1,))
    assert err.value.outage
    assert clock.waited == [5, 5]  # polls at 0, 5 and 10 s; none fits before 12 s


def test_code_400_is_asked_once_more_without_keep_longer() -> None:
    with CdrApiServer() as server:
        server.code_400_first = True
        found = _api(server).export("egress", 9, START, END, (4, 6))
    assert found.url == server.link("egress", 9)
    first, second = server.exports()
    assert first["form"] == {**FORM, "egress_id": "9", "field": "4,6"}
    expected = {**FORM, "egress_id": "9", "field": "4,6"}
    del expected["keep_longer"]
    assert second["form"] == expected
    assert "keep_longer" not in second["form"]


def test_5xx_is_an_outage() -> None:
    with CdrApiServer() as server:
        server.fail_exports = 1
        with pytest.raises(cdr_api.CdrApiError, match="code 503") as err:
            _api(server).export("ingress", 7, START, END, (1,))
    assert err.value.outage
    assert len(server.exports()) == 1 and server.made("export", "GET") == []


@pytest.mark.parametrize("where", ["token", "export", "poll"])
def test_a_server_that_never_answers_times_out(where: str) -> None:
    # real clock: CDR_API_TIMEOUT_SECONDS = 1 covers token, export and polls together
    with CdrApiServer() as server:
        server.hang = where
        api = cdr_api.CdrApi("127.0.0.1", token_port=server.token_port,
                             export_port=server.export_port, timeout=1, poll=1)
        started = time.monotonic()
        with pytest.raises(cdr_api.CdrApiError, match="timed out") as err:
            api.export("ingress", 7, START, END, (1,))
        elapsed = time.monotonic() - started
    assert err.value.outage
    assert 0.8 < elapsed < 2.5


def test_an_expired_token_is_fetched_afresh_once() -> None:
    with CdrApiServer() as server:
        api = _api(server)
        api.export("ingress", 7, START, END, (1,))
        server.refuse_tokens = 1  # the session's token (the first issued) has expired
        found = api.export("ingress", 8, START, END, (1,))
    assert found.url == server.link("ingress", 8)
    assert [e["auth"] for e in server.exports()] == ["Token tok-1", "Token tok-1",
                                                     "Token tok-2"]


def test_a_refused_token_is_an_outage_after_one_fresh_token() -> None:
    with CdrApiServer() as server:
        api = _api(server)
        api.export("ingress", 1, START, END, (1,))
        server.refuse_all_tokens = True  # e.g. the API's users were changed
        with pytest.raises(cdr_api.CdrApiError, match="refused the token") as err:
            api.export("ingress", 7, START, END, (1,))
    assert err.value.outage
    assert len(server.made("token")) == 2  # the session's token, then one fresh one
    assert [e["auth"] for e in server.exports()] == ["Token tok-1", "Token tok-1",
                                                     "Token tok-2"]
    assert "tok-" not in str(err.value)


def test_a_token_answer_without_token() -> None:
    with CdrApiServer() as server:
        server.token_mode = "missing"
        with pytest.raises(cdr_api.CdrApiError, match="no token") as err:
            _api(server).export("ingress", 7, START, END, (1,))
    assert err.value.outage and server.exports() == []


def test_a_failing_token_service() -> None:
    with CdrApiServer() as server:
        server.token_mode = "error"
        with pytest.raises(cdr_api.CdrApiError, match="token request answered HTTP 500"):
            _api(server).export("ingress", 7, START, END, (1,))


def test_a_missing_token_is_refused_by_the_server() -> None:
    # the protocol server itself refuses an export without `Authorization: Token`
    with CdrApiServer() as server:
        api = _api(server)
        api.export("ingress", 7, START, END, (1,))
        api._token = "not-a-token-the-server-issued"
        found = api.export("ingress", 8, START, END, (1,))
    assert found.url == server.link("ingress", 8)
    assert [e["auth"] for e in server.exports()] == [
        "Token tok-1", "Token not-a-token-the-server-issued", "Token tok-2"]


def test_garbage_poll_answer() -> None:
    with CdrApiServer() as server:
        server.garbage_polls = True
        with pytest.raises(cdr_api.CdrApiError, match="not JSON"):
            _api(server).export("ingress", 7, START, END, (1,))


def test_unreachable_server() -> None:
    api = cdr_api.CdrApi("127.0.0.1", token_port=free_port(), export_port=free_port(),
                         timeout=5, poll=1)
    with pytest.raises(cdr_api.CdrApiError, match="failed") as err:
        api.export("ingress", 7, START, END, (1,))
    assert err.value.outage


def test_stop_mid_poll_abandons_the_export_at_once() -> None:
    stop = threading.Event()
    with CdrApiServer(processing_polls=1000) as server:
        api = cdr_api.CdrApi("127.0.0.1", token_port=server.token_port,
                             export_port=server.export_port, timeout=600, poll=30, stop=stop)
        threading.Thread(target=lambda: server.polled.wait(10) and stop.set(),
                         daemon=True).start()
        started = time.monotonic()
        with pytest.raises(cdr_api.CdrApiStopped):
            api.export("ingress", 7, START, END, (1,))
        elapsed = time.monotonic() - started
    assert elapsed < 2  # the 30 s pause between polls woke on the stop
    assert len(server.made("export", "GET")) == 1


def test_stop_while_an_answer_is_awaited() -> None:
    stop = threading.Event()
    with CdrApiServer() as server:
        server.hang = "export"
        api = cdr_api.CdrApi("127.0.0.1", token_port=server.token_port,
                             export_port=server.export_port, timeout=600, poll=5, stop=stop)

        def stop_when_the_export_arrives() -> None:
            while not server.exports():
                server.seen.wait(10)
                server.seen.clear()
            stop.set()

        threading.Thread(target=stop_when_the_export_arrives, daemon=True).start()
        started = time.monotonic()
        with pytest.raises(cdr_api.CdrApiStopped):
            api.export("ingress", 7, START, END, (1,))
        elapsed = time.monotonic() - started
    assert elapsed < 2  # not the 600 s timeout: the hanging request is abandoned


def test_static_link_is_url_encoded() -> None:
    link = cdr_api.static_link("https://portal.example/cdr/", START, END, 42,
                               ("Start Time", "A&B"))
    parsed = urlparse(link)
    assert f"{parsed.scheme}://{parsed.netloc}{parsed.path}" == "https://portal.example/cdr/"
    assert " " not in link and "A&B" not in link
    assert parse_qs(parsed.query) == {"start": [str(int(START.timestamp()))],
                                      "end": [str(int(END.timestamp()))], "i": ["42"],
                                      "field": ["Start Time,A&B"], "format": ["plain"]}


def test_field_set_from_rows() -> None:
    assert cdr_api.FieldSet.from_rows([]) == cdr_api.FieldSet((), cdr_api.DEFAULT_FIELDS)
    assert cdr_api.FieldSet.from_rows([(3, "ANI"), (9, None)]) == cdr_api.FieldSet(
        (3, 9), ("ANI", "9"))


def test_link_maker_falls_back_and_stops_asking_a_dead_api(caplog) -> None:
    caplog.set_level(logging.WARNING)
    fields = {"ingress": cdr_api.FieldSet((1, 2), ("Caller", "Callee")),
              "egress": cdr_api.FieldSet((5,), ("Cost",))}
    with CdrApiServer() as server:
        server.fail_exports = 5
        settings = server.settings(cdr_download_url="https://portal.example/cdr",
                                   cdr_api_user="ops", cdr_api_password="pa55word")
        maker = cdr_api.LinkMaker(settings, fields, stop=FakeClock())
        first = maker.link(1, 7, "ingress", "t7", START, END)
        second = maker.link(1, 8, "egress", "t8", START, END)
    assert (first.source, second.source) == ("static", "static")
    assert first.url == cdr_api.static_link("https://portal.example/cdr", START, END, 7,
                                            ("Caller", "Callee"))
    assert second.url == cdr_api.static_link("https://portal.example/cdr", START, END, 8,
                                             ("Cost",))
    assert len(server.exports()) == 1  # the second trunk did not ask the dead API
    text = caplog.text
    assert "ingress trunk 7" in text and "code 503" in text and "static" in text
    assert "egress trunk 8" in text and "skipped for the rest of this sweep" in text
    assert "tok-1" not in text and "pa55word" not in text


def test_link_maker_gives_the_api_link_and_count() -> None:
    fields = {"egress": cdr_api.FieldSet((5, 6), ("a", "b"))}
    with CdrApiServer(counts={8: 77}) as server:
        maker = cdr_api.LinkMaker(server.settings(), fields, stop=FakeClock())
        link = maker.link(1, 8, "egress", "t8", START, END)
    assert link == cdr_api.Link(8, server.link("egress", 8), "api", "egress", 77)
    assert server.exports()[0]["form"]["field"] == "5,6"


def test_link_maker_without_any_url_raises_the_reason() -> None:
    maker = cdr_api.LinkMaker(Settings())
    with pytest.raises(cdr_api.CdrApiError, match="CDR_DOWNLOAD_URL is empty"):
        maker.link(3, 9, "ingress", "t9", START, END)


class _RawServer:
    """A loopback TCP server that answers every connection with fixed bytes, then closes:
    for answers that are not well-formed HTTP (a broken proxy, a truncated body)."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

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
        settings = Settings(cdr_api_host="127.0.0.1", cdr_api_token_port=server.port,
                            cdr_api_export_port=server.port,
                            cdr_download_url="https://portal.example/cdr")
        link = cdr_api.LinkMaker(settings).link(1, 7, "ingress", "t7", START, END)
    finally:
        server.close()
    assert link.source == "static", why
    assert "trunk 7" in caplog.text and "static" in caplog.text


# --- settings -----------------------------------------------------------------------------

def _ini(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "dnl_ad.ini"
    path.write_text("[dnl_ad]\n" + body, encoding="utf-8")
    return path


def test_cdr_api_host_and_fixed_ports(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.WARNING)
    s = load_settings(_ini(tmp_path, "CDR_API_HOST = 10.0.0.5\n"), env={})
    assert (cdr_api_host(s), s.cdr_api_token_port, s.cdr_api_export_port) == (
        "10.0.0.5", 8887, 8889)
    maker = cdr_api.LinkMaker(s)
    assert maker.api is not None
    assert (maker.api.token_url, maker.api.export_url) == ("http://10.0.0.5:8887/",
                                                           "http://10.0.0.5:8889")
    assert "deprecated" not in caplog.text


def test_old_cdr_api_url_gives_its_host_with_one_note(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.WARNING)
    s = load_settings(_ini(tmp_path, "CDR_API_URL = http://cdr.switch.example:9000/api\n"
                                     "CDR_API_USER = ops\nCDR_API_PASSWORD = pw123\n"), env={})
    assert cdr_api_host(s) == "cdr.switch.example"
    for _ in range(3):  # three sweeps: the note is logged by the first only
        maker = cdr_api.LinkMaker(s)
    assert maker.api is not None and maker.api.token_url == "http://cdr.switch.example:8887/"
    notes = [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()]
    assert len(notes) == 1
    assert "CDR_API_URL, CDR_API_USER, CDR_API_PASSWORD" in notes[0]
    assert "'cdr.switch.example' is used as CDR_API_HOST" in notes[0] and "pw123" not in notes[0]
    # CDR_API_HOST wins over the old URL
    s = load_settings(_ini(tmp_path, "CDR_API_HOST = new.example\n"
                                     "CDR_API_URL = http://old.example/api\n"), env={})
    assert cdr_api_host(s) == "new.example"


@pytest.mark.parametrize("value", ["http://10.0.0.5", "10.0.0.5:8887", "host/path", "a b"])
def test_bad_cdr_api_host_names_the_key(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(_ini(tmp_path, f"CDR_API_HOST = {value}\n"), env={})
    assert "CDR_API_HOST" in str(err.value) and "host name or IP address" in str(err.value)


def test_ipv6_host(tmp_path: Path) -> None:
    s = load_settings(_ini(tmp_path, "CDR_API_HOST = ::1\n"), env={})
    assert cdr_api.LinkMaker(s).api.token_url == "http://[::1]:8887/"


def test_bad_port_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="CDR_API_EXPORT_PORT"):
        load_settings(_ini(tmp_path, "CDR_API_EXPORT_PORT = 70000\n"), env={})


# --- dnl-ad check --------------------------------------------------------------------------

def _rows(conn, settings: Settings) -> dict[str, tuple[str, str]]:
    from dnl_ad import check

    with conn.cursor() as cur:
        return {r.check: (r.status, r.detail) for r in check.check_cdr(cur, settings)}


def test_check_gets_a_token_and_counts_the_fields(conn) -> None:
    from . import factories as f

    f.insert(conn, "daily_cdr_fields", id=1, type=0, field="ani", label="ANI")
    f.insert(conn, "daily_cdr_fields", id=2, type=1, field="dnis", label="DNIS")
    f.insert(conn, "daily_cdr_fields", id=3, type=1, field="cost", label="Cost")
    with CdrApiServer() as server:
        rows = _rows(conn, server.settings())
        server.token_mode = "error"
        failing = _rows(conn, server.settings())
    assert rows["cdr api"][0] == "OK" and "token obtained" in rows["cdr api"][1]
    assert rows["cdr fields"] == ("OK", "daily_cdr_fields: 1 ingress, 2 egress")
    assert "cdr api keys" not in rows
    assert failing["cdr api"][0] == "FAIL" and "HTTP 500" in failing["cdr api"][1]
    assert len(server.made("token")) == 2


def test_check_notes_the_old_keys_and_a_missing_link_source(conn) -> None:
    rows = _rows(conn, Settings(cdr_api_user="ops"))
    assert rows["cdr api keys"][0] == "WARN" and "CDR_API_USER is deprecated" in \
        rows["cdr api keys"][1]
    assert rows["cdr api"][0] == "WARN" and "not sent" in rows["cdr api"][1]
    assert rows["cdr fields"][0] == "WARN"
