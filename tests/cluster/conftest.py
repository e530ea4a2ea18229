"""The cluster tests use the same throwaway PostgreSQL as tests/postgres (one per session)."""

from __future__ import annotations

from tests.postgres.conftest import pg_cluster, pg_dsn

__all__ = ["pg_cluster", "pg_dsn"]
