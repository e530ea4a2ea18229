"""Which PostgreSQL database a libpq DSN names, for comparing `[cluster]`'s with `[store]`'s.

The lease table and the outbox claims (`somsd.cluster.outbox`) work on the event store's own
tables, in one transaction with them; a cluster whose lease database is not the store's database
would fence nothing. Two DSNs name the same database when their hosts, ports and database names
agree as written (the user and password may differ: a member may log in as its own role).
Nothing here connects, and nothing returned holds the password.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import ProgrammingError
from psycopg.conninfo import conninfo_to_dict

__all__ = ["DatabaseAddress", "InvalidDsn", "database_address"]

_DEFAULT_PORT = "5432"


class InvalidDsn(ValueError):
    """Not a libpq connection string (the text is not repeated: it may hold a password)."""


@dataclass(frozen=True)
class DatabaseAddress:
    hosts: tuple[str, ...]  # as written; () is libpq's default (the local unix socket)
    ports: tuple[str, ...]
    dbname: str  # "" when not given (libpq then takes the user's name)
    user: str

    def same_database(self, other: DatabaseAddress) -> bool:
        return (self.hosts, self.ports, self.dbname) == (other.hosts, other.ports, other.dbname)

    def __str__(self) -> str:
        hosts = ",".join(self.hosts) or "(local socket)"
        return f"{hosts}:{','.join(self.ports)}/{self.dbname or '(default)'}"


def database_address(dsn: str) -> DatabaseAddress:
    """The host(s), port(s) and database a URI or `key=value` DSN names, defaults filled in."""
    try:
        params = conninfo_to_dict(dsn)
    except ProgrammingError:
        raise InvalidDsn("not a libpq connection string (URI or key=value pairs)") from None
    hosts = tuple(h for h in str(params.get("host") or "").split(",") if h)
    ports = tuple(p or _DEFAULT_PORT for p in str(params.get("port") or "").split(","))
    # One port for several hosts applies to each; none given means the default everywhere.
    ports = ports * max(1, len(hosts)) if len(ports) == 1 else ports
    user = str(params.get("user") or "")
    return DatabaseAddress(hosts, ports, str(params.get("dbname") or user), user)
