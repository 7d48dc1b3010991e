"""The delivery and SMTP settings: defaults, and a bad value names the key."""

from __future__ import annotations

import pytest

from dnl_ad.config import ConfigError, Settings, load_settings


def test_defaults() -> None:
    s = Settings()
    assert (s.delivery_max_age_hours, s.smtp_backoff_max_seconds, s.max_recipients,
            s.smtp_sessions, s.smtp_max_per_session, s.smtp_rate_limit) == (72, 300, 50, 4, 0,
                                                                            0.0)
    assert (s.smtp_allow_plain_auth, s.smtp_ca_file, s.smtp_helo_name, s.reply_to) == (
        False, "", "", "")


@pytest.mark.parametrize(("key", "value"), [
    ("DELIVERY_MAX_AGE_HOURS", "0"), ("SMTP_BACKOFF_MAX_SECONDS", "x"),
    ("SMTP_ALLOW_PLAIN_AUTH", "maybe"), ("SMTP_HELO_NAME", "bad name"),
    ("MAX_RECIPIENTS", "0"), ("SMTP_SESSIONS", "0"), ("SMTP_MAX_PER_SESSION", "-1"),
    ("SMTP_RATE_LIMIT", "fast"), ("SMTP_SECURITY", "tls-please")])
def test_a_bad_value_names_the_key(tmp_path, key, value) -> None:
    ini = tmp_path / "dnl_ad.ini"
    ini.write_text(f"[dnl_ad]\n{key} = {value}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load_settings(ini, env={})
    assert key in str(raised.value) and "expected" in str(raised.value)


def test_values_are_read(tmp_path) -> None:
    ca = tmp_path / "ca.pem"
    ini = tmp_path / "dnl_ad.ini"
    ini.write_text("[dnl_ad]\nSMTP_CA_FILE = ca.pem\nSMTP_HELO_NAME = mail.carrier.example\n"
                   "SMTP_RATE_LIMIT = 2.5\nSMTP_SECURITY = auto\nREPLY_TO = noc@x.example\n",
                   encoding="utf-8")
    s = load_settings(ini, env={})
    assert s.smtp_ca_file == str(ca) and s.smtp_helo_name == "mail.carrier.example"
    assert (s.smtp_rate_limit, s.smtp_security, s.reply_to) == (2.5, "auto", "noc@x.example")
