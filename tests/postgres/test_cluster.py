"""The test cluster itself: a real server that keeps what is committed and isolates databases."""

from __future__ import annotations

import psycopg


def test_each_test_database_starts_empty_and_keeps_what_it_commits(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
        assert tables == (0,)
        conn.execute("CREATE TABLE probe (n integer)")
        conn.execute("INSERT INTO probe VALUES (42)")
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT n FROM probe").fetchall() == [(42,)]
