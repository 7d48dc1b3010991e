"""The demo/load generator produces the variety real carriers have."""

from __future__ import annotations

from dnl_ad import clock
from dnl_ad.devtools import demo_data

from .conftest import utc
from .factories import rows

NOW = utc(2026, 11, 22, 3, 30)


def test_generator_variety(conn) -> None:
    with conn.cursor() as cur:
        result = demo_data.generate(cur, 400, NOW)
    assert result.clients == 400
    clients = rows(conn, "SELECT * FROM client")
    assert {c["mode"] for c in clients} == {1, 2}
    zones = {c["auto_send_zone"] for c in clients}
    assert {"+08:00", "+0800", "+05:45", "-03:30", "+14:00", "Asia/Hong_Kong", "+00:00"} <= zones
    assert not any(c["low_balance_notice"] for c in clients)  # as every v5 form writes it
    assert {c["currency_id"] for c in clients} == {1, 2}
    for zone in zones - {None}:
        assert clock.parse_zone(zone) is not None
    emails = [c["billing_email"] or "" for c in clients]
    assert any(";" in e and "," in e for e in emails)  # several addresses in one field
    assert any(c["billing_email"] is None for c in clients)
    assert any(not c["company"].isascii() for c in clients if c["company"])
    assert any(c["company"] is None for c in clients)
    configs = rows(conn, "SELECT * FROM client_low_balance_config")
    assert {c["value_type"] for c in configs} == {0, 1}
    assert any(c["duplicate_days"] == 3 for c in configs)
    assert len(configs) < 400  # some clients have no config row

    # 2 % of clients under their low-balance threshold, by the documented scheme.
    under = rows(conn, """
        SELECT c.client_id FROM client c
        JOIN c4_client_balance b ON b.client_id = c.client_id::text
        JOIN client_low_balance_config l ON l.client_id = c.client_id
        WHERE c.mode = 1 AND l.value_type = 0 AND b.balance <= l.actual_notify_balance""")
    assert under and all(r["client_id"] % 50 == 10 or r["client_id"] % 100 == 1 for r in under)

    trunks = rows(conn, "SELECT * FROM resource")
    assert any("'" in t["alias"] and '"' in t["alias"] for t in trunks)
    deadlines = rows(conn, "SELECT l.download_deadline AS d, d.download_date AS dl, "
                     "l.status FROM rate_send_log_detail d JOIN rate_send_log l "
                     "ON l.id = d.log_id")
    days = {(r["d"] - NOW.date()).days for r in deadlines}
    assert {0, -1, 1, 10} <= days
    assert any(r["dl"] is not None and r["status"] == 4 for r in deadlines)
    assert rows(conn, "SELECT count(*) AS n FROM rate_download_log")[0]["n"] > 0

    span = rows(conn, "SELECT min(report_time) AS lo, max(report_time) AS hi, count(*) AS n, "
                "count(DISTINCT tableoid) AS parts FROM cdr_report_detail")[0]
    assert (NOW - span["lo"]).total_seconds() >= 48 * 3600
    assert span["hi"] < NOW and span["parts"] >= 3
    both = rows(conn, "SELECT count(*) AS n FROM client c WHERE EXISTS (SELECT 1 FROM "
                "cdr_report_detail r WHERE r.ingress_client_id = c.client_id) AND EXISTS ("
                "SELECT 1 FROM cdr_report_detail r WHERE r.egress_client_id = c.client_id)")
    assert both[0]["n"] == 400 // 5

    template = rows(conn, "SELECT * FROM mail_tmplate")
    assert len(template) == 1 and "{company_name}" in template[0]["lowbalance_subject"]
    assert template[0]["auto_summary_content"] is None  # left empty: default template
    assert "{trunk_name}" in template[0]["hour_subject_48"]  # the staged 48-hour warning
    assert rows(conn, "SELECT count(*) AS n FROM balance_history_actual")[0]["n"] > 0
    # Serial sequences continue after the generated ids.
    assert rows(conn, "SELECT nextval('client_client_id_seq') AS n")[0]["n"] == 401
