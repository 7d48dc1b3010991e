"""/metrics and /healthz served over real HTTP, parsed with prometheus_client's parser;
the figures move as sweeps and deliveries happen."""

from __future__ import annotations

import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from dnl_ad import metrics
from dnl_ad.devtools import demo_data
from dnl_ad.scheduler import Loop

from .conftest import utc
from .test_scheduler import FakeClock

T0 = utc(2026, 11, 21, 9)


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        assert answer.headers["Content-Type"].startswith("text/plain")
        text = answer.read().decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def healthz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except urllib.error.URLError as exc:
        return 0, str(exc.reason)


def test_metrics_move_with_sweeps_and_deliveries(settings, database, conn, smtp) -> None:
    with conn.cursor() as cur:
        demo_data.generate(cur, 40, T0)
    m = metrics.Metrics()
    clock = FakeClock(T0)
    loop = Loop(settings, database, clock=clock, metrics=m)
    server = metrics.Server(m, lambda: metrics.health(m, settings.connection_string, 60),
                            "127.0.0.1", 0).start()
    try:
        code, why = healthz(server.port)
        assert code == 503 and "not finished a tick" in why
        before = scrape(server.port)
        assert before[("dnl_ad_active", ())] == 1
        assert ("dnl_ad_delivery_sent_total", ()) in before
        assert before[("dnl_ad_delivery_sent_total", ())] == 0

        loop.tick()  # every sweep, then delivery, then the outbox depth
        first = scrape(server.port)
        queued = first[("dnl_ad_notices_queued_total", (("alert", "low_balance"),))]
        assert queued >= 1
        assert first[("dnl_ad_sweep_last_success_timestamp_seconds",
                      (("sweep", "usage_summary"),))] > 0
        assert first[("dnl_ad_delivery_sent_total", ())] == len(smtp.messages) > 0
        assert first[("dnl_ad_outbox_pending", ())] == 0
        assert first[("dnl_ad_database_up", ())] == 1
        assert healthz(server.port) == (200, "ok\n")

        smtp.reply_for("billing2@client2.example", "451 4.3.0 try later")
        with conn.cursor() as cur:  # a new low-balance client, deferred by the server
            cur.execute("UPDATE c4_client_balance SET balance = 1 WHERE client_id = '2'")
        for step in (61, 5, 15):  # the sweep queues it, then delivery and depth come due
            clock.advance(step)
            loop.tick()
        second = scrape(server.port)
        assert second[("dnl_ad_notices_queued_total", (("alert", "low_balance"),))] > queued
        assert second[("dnl_ad_delivery_deferred_total", ())] >= 1
        assert second[("dnl_ad_outbox_pending", ())] >= 1
        assert second[("dnl_ad_outbox_oldest_pending_age_seconds", ())] >= 0
    finally:
        server.stop()


def test_healthz_says_503_when_the_database_does_not_answer(settings, database) -> None:
    m = metrics.Metrics()
    Loop(settings, database, jobs=lambda loop: [], metrics=m).tick()
    dead = "host=127.0.0.1 port=1 dbname=x user=u password=hunter2secret"
    server = metrics.Server(m, lambda: metrics.health(m, dead, 60), "127.0.0.1", 0).start()
    try:
        code, why = healthz(server.port)
        assert code == 503 and "database" in why and "hunter2secret" not in why
    finally:
        server.stop()


def test_the_daemon_serves_metrics_when_metrics_port_is_set(settings, tmp_path) -> None:
    from dnl_ad.devtools.smtp_sink import free_port

    from .test_daemon import cli, daemon_env, wait_for

    port = free_port()
    env = {**daemon_env(settings, tmp_path), "DNL_AD_METRICS_PORT": str(port)}
    assert cli(env, "start").returncode == 0
    try:
        wait_for(lambda: healthz(port)[0] == 200, 20, "a healthy /healthz")
        found = scrape(port)
        assert found[("dnl_ad_active", ())] == 1
        assert found[("dnl_ad_sweep_last_success_timestamp_seconds",
                      (("sweep", "delivery"),))] > 0
    finally:
        assert cli(env, "stop").returncode == 0


def test_the_sample_alert_rules_name_only_metrics_that_exist() -> None:
    import re

    from .test_daemon import REPO

    rules = (REPO / "contrib" / "dnl_ad.rules.yml").read_text()
    exposed = metrics.Metrics().render().decode()
    names = set(re.findall(r"\b(dnl_ad_[a-z_]+)\b", rules))
    assert names and all(f"\n{name}" in exposed or f"# TYPE {name}" in exposed
                         for name in names), names
