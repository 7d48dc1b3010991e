"""Test rig: a real PostgreSQL and a real SMTP server on loopback; never mocks of either.

PostgreSQL: DNL_AD_TEST_DSN (an admin DSN allowed to CREATE DATABASE) when given, else
an embedded server from the pgserver wheel in a temporary directory. One template
database per session holds the provider subset and dnl_ad's migrated schema; every test
gets its own clone of it (CREATE DATABASE ... TEMPLATE), so tests never see each other.

SMTP: an aiosmtpd server on 127.0.0.1 that records every message and can be told to
refuse recipients (4xx/5xx) or drop the connection (dnl_ad.devtools.smtp_sink).
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from dnl_ad import db
from dnl_ad.config import Settings
from dnl_ad.devtools.embedded_pg import (
    EmbeddedPostgres,
    build_provider_database,
    build_v5_database,
    create_database,
    drop_database,
    dsn_for,
)
from dnl_ad.devtools.smtp_sink import SmtpSink

REPO = Path(__file__).resolve().parent.parent
_counter = itertools.count()


@pytest.fixture(scope="session")
def embedded_pg() -> Iterator[EmbeddedPostgres | None]:
    """The embedded server, or None when DNL_AD_TEST_DSN points at an external one."""
    if os.environ.get("DNL_AD_TEST_DSN"):
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="dnl_ad_pg_") as tmp:
        server = EmbeddedPostgres(Path(tmp) / "pgdata")
        try:
            yield server
        finally:
            server.cleanup()


@pytest.fixture(scope="session")
def admin_dsn(embedded_pg: EmbeddedPostgres | None) -> str:
    return os.environ.get("DNL_AD_TEST_DSN") or embedded_pg.admin_dsn  # type: ignore[union-attr]


@pytest.fixture(scope="session")
def template_db(admin_dsn: str) -> Iterator[str]:
    """Name of the session's template database (provider subset + own schema)."""
    name = f"dnl_ad_tpl_{os.getpid()}"
    build_provider_database(admin_dsn, name)
    # A template must have no open connections when cloned; build_* closed its own.
    yield name
    drop_database(admin_dsn, name)


@pytest.fixture
def dsn(admin_dsn: str, template_db: str) -> Iterator[str]:
    """DSN of a fresh database for this test, cloned from the template."""
    name = f"dnl_ad_t{os.getpid()}_{next(_counter)}"
    create_database(admin_dsn, name, template=template_db)
    yield dsn_for(admin_dsn, name)
    drop_database(admin_dsn, name)


@pytest.fixture(scope="session")
def v5_template_db(admin_dsn: str) -> Iterator[str]:
    """Name of the session's template database holding the REAL DNL v5 schema
    (../shared/dnl_v5, loaded as its README says) plus dnl_ad's migrated schema."""
    name = f"dnl_ad_v5tpl_{os.getpid()}"
    build_v5_database(admin_dsn, name)
    yield name
    drop_database(admin_dsn, name)


@pytest.fixture
def v5_dsn(admin_dsn: str, v5_template_db: str) -> Iterator[str]:
    """DSN of a fresh clone of the v5 template for this test."""
    name = f"dnl_ad_v5_{os.getpid()}_{next(_counter)}"
    create_database(admin_dsn, name, template=v5_template_db)
    yield dsn_for(admin_dsn, name)
    drop_database(admin_dsn, name)


@pytest.fixture
def v5_conn(v5_dsn: str) -> Iterator[psycopg2.extensions.connection]:
    c = db.connect(v5_dsn, autocommit=True)
    yield c
    c.close()


@pytest.fixture
def v5_database(v5_dsn: str) -> Iterator[db.Database]:
    d = db.Database(v5_dsn, min_backoff=0.05, max_backoff=0.2)
    yield d
    d.close()


@pytest.fixture
def v5_settings(settings: Settings, v5_dsn: str) -> Settings:
    """The test settings pointed at the v5 database."""
    import dataclasses

    return dataclasses.replace(settings, connection_string=v5_dsn)


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg2.extensions.connection]:
    """An autocommit connection for arranging and inspecting test data."""
    c = db.connect(dsn, autocommit=True)
    yield c
    c.close()


@pytest.fixture
def database(dsn: str) -> Iterator[db.Database]:
    d = db.Database(dsn, min_backoff=0.05, max_backoff=0.2)
    yield d
    d.close()


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    with SmtpSink() as sink:
        yield sink


@pytest.fixture
def settings(dsn: str, smtp: SmtpSink, tmp_path: Path) -> Settings:
    """Settings pointing at this test's database and SMTP sink, fast retries."""
    return Settings(
        connection_string=dsn,
        smtp_host=smtp.host,
        smtp_port=smtp.port,
        smtp_security="none",
        smtp_from="alerts@carrier.example",
        pidfile=str(tmp_path / "dnl_ad.pid"),
        logfile=str(tmp_path / "dnl_ad.log"),
        dry_run_dir=str(tmp_path / "dry-run"),
        template_dir=str(REPO / "templates"),
        retry_base_seconds=1,
        retry_max_seconds=4,
        cdr_download_url="https://portal.carrier.example/cdr",
        # the send-hour tests read exact instants; the settle delay has tests of its own
        report_settle_minutes=0,
    )


def utc(*args: int) -> dt.datetime:
    """An aware UTC datetime: tests pass `now` explicitly."""
    return dt.datetime(*args, tzinfo=dt.timezone.utc)
