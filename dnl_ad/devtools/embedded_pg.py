"""A real PostgreSQL for the tests, the demo and the benchmarks, with no system install.

The `pgserver` wheel carries PostgreSQL binaries and handles running as root (it runs
the server as a dedicated system user). Databases are built from the project's own
provider-subset SQL plus dnl_ad's migrations; tests clone a ready template database,
which costs milliseconds instead of re-running the DDL each time.

pgserver is a test/demo dependency only; the daemon never imports this module.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import quote

from psycopg2 import sql

from .. import db, migrations


class EmbeddedPostgres:
    """One pgserver instance in a data directory of our choosing."""

    def __init__(self, pgdata: Path, *, attempts: int = 3) -> None:
        import pgserver

        # On a loaded machine initdb or the first start occasionally fails (seen as
        # "initdb: failed to remove contents of data directory"); a fresh directory works.
        for attempt in range(1, attempts + 1):
            self.pgdata = Path(pgdata) if attempt == 1 else Path(f"{pgdata}-retry{attempt}")
            try:
                self.server: Any = pgserver.get_server(self.pgdata, cleanup_mode="stop")
                break
            except (subprocess.SubprocessError, OSError, RuntimeError):
                if attempt == attempts:
                    raise
        self.admin_dsn: str = self.server.get_uri()

    def dsn(self, dbname: str) -> str:
        return self.server.get_uri(dbname)

    def _pg_ctl(self, *args: str) -> None:
        from pgserver._commands import pg_ctl

        pg_ctl(["-w", *args], pgdata=self.pgdata, user=self.server.system_user)

    def restart(self) -> None:
        """Restart the server process (same socket, same data): clients see it go away."""
        self._pg_ctl("-m", "fast", "restart")

    def stop_server(self) -> None:
        self._pg_ctl("-m", "fast", "stop")

    def start_server(self) -> None:
        self.server.ensure_postgres_running()

    def cleanup(self) -> None:
        try:
            self.server.cleanup()
        except (subprocess.SubprocessError, OSError):
            pass


def dsn_for(admin_dsn: str, dbname: str) -> str:
    """The admin DSN pointed at another database (URI or key=value form)."""
    if "://" in admin_dsn:
        head, _, tail = admin_dsn.partition("?")
        base = head.rsplit("/", 1)[0]
        return f"{base}/{quote(dbname)}" + (f"?{tail}" if tail else "")
    return f"{admin_dsn} dbname={dbname}"


def create_database(admin_dsn: str, name: str, *, template: str | None = None) -> None:
    conn = db.connect(admin_dsn, autocommit=True)
    try:
        with conn.cursor() as cur:
            if template:
                cur.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(template)))
            else:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    finally:
        conn.close()


def drop_database(admin_dsn: str, name: str) -> None:
    conn = db.connect(admin_dsn, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))
    finally:
        conn.close()


def load_provider_schema(dsn: str, own_schema: str = "dnl_ad") -> None:
    """Provider subset tables, then dnl_ad's own migrations, in one transaction."""
    conn = db.connect(dsn)
    try:
        with conn.cursor() as cur:
            db.run_sql_file(cur, "provider_schema.sql")
            migrations.migrate(cur, own_schema)
        conn.commit()
    finally:
        conn.close()


def fresh_database(admin_dsn: str, name: str) -> str:
    """Database `name` created anew (dropped first when it exists); returns its DSN."""
    drop_database(admin_dsn, name)
    create_database(admin_dsn, name)
    return dsn_for(admin_dsn, name)


def build_provider_database(admin_dsn: str, name: str, own_schema: str = "dnl_ad") -> str:
    """A new database holding the provider subset and the own schema; returns its DSN."""
    dsn = fresh_database(admin_dsn, name)
    load_provider_schema(dsn, own_schema)
    return dsn


# --- the real DNL v5 schema (shared/dnl_v5), the target of every alert

V5_ENV = "DNL_AD_V5_SCHEMA"
V5_REQUIRED_TABLES = ("client", "c4_client_balance", "mail_tmplate", "system_parameter")
# The dump uses two extensions a stock PostgreSQL lacks; stubbed as text domains, their own
# CREATE TYPE/FUNCTION statements then fail harmlessly (shared/dnl_v5/README.md).
_V5_STUBS = ("prefix_range", "ip4r", "ip4")


def v5_schema_file() -> Path:
    """The gzipped v5 dump: $DNL_AD_V5_SCHEMA, else ../shared/dnl_v5 beside the checkout."""
    import os

    given = os.environ.get(V5_ENV)
    if given:
        return Path(given)
    repo = Path(__file__).resolve().parents[2]
    return repo.parent / "shared" / "dnl_v5" / "class4_v5_schema.sql.gz"


def _psql() -> str:
    """pgserver's own psql (same version as the server), else the one on PATH."""
    import shutil

    try:
        import pgserver

        bundled = Path(pgserver.__file__).parent / "pginstall" / "bin" / "psql"
        if bundled.exists():
            return str(bundled)
    except ImportError:
        pass
    found = shutil.which("psql")
    if not found:
        raise RuntimeError("psql is needed to load the v5 schema: install the pgserver wheel "
                           "or a PostgreSQL client")
    return found


def load_v5_schema(dsn: str, own_schema: str = "dnl_ad", dump: Path | None = None) -> None:
    """Load the real v5 dump as its README says, then dnl_ad's own migrations.

    Errors the dump's README expects (the stubbed extension types, pgagent, roles) are
    ignored; the load fails only when the tables dnl_ad needs did not come out of it.
    """
    import gzip

    dump = dump or v5_schema_file()
    conn = db.connect(dsn, autocommit=True)
    try:
        with conn.cursor() as cur:
            for name in _V5_STUBS:
                cur.execute(sql.SQL("CREATE DOMAIN public.{} AS text").format(
                    sql.Identifier(name)))
        text = gzip.decompress(dump.read_bytes())
        proc = subprocess.run([_psql(), "-q", "-X", "-d", dsn, "-f", "-"], input=text,
                              capture_output=True, check=False)
        with conn.cursor() as cur:
            cur.execute("SELECT array_agg(t) AS missing FROM unnest(%s::text[]) t "
                        "WHERE to_regclass('public.' || t) IS NULL", (list(V5_REQUIRED_TABLES),))
            missing = cur.fetchone()["missing"]
        if missing:
            tail = proc.stderr.decode("utf-8", "replace").splitlines()[-5:]
            raise RuntimeError(f"the v5 dump {dump} did not create {missing}: {tail}")
        conn.autocommit = False
        with conn.cursor() as cur:
            migrations.migrate(cur, own_schema)
        conn.commit()
    finally:
        conn.close()


def build_v5_database(admin_dsn: str, name: str, own_schema: str = "dnl_ad") -> str:
    """A new database holding the real v5 schema and the own schema; returns its DSN."""
    dsn = fresh_database(admin_dsn, name)
    load_v5_schema(dsn, own_schema)
    return dsn
