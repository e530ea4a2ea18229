"""A throwaway PostgreSQL cluster for tests: Debian's server binaries, one data dir per session.

`PgCluster.start()` runs `initdb` and `pg_ctl start` on a free loopback port with a unix
socket in a fresh data dir, `fresh_database()` creates an empty database per test and returns its
DSN, and `stop()` shuts the server down fast. PostgreSQL refuses to run as root, so as root
the server runs as the `postgres` user the Debian package created.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

_START_TIMEOUT = "60"


def server_bindir() -> Path | None:
    """The newest installed PostgreSQL server's bin dir (Debian: /usr/lib/postgresql/N/bin)."""
    root = Path("/usr/lib/postgresql")
    versions = sorted(
        (p for p in root.glob("*/bin") if (p / "initdb").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    return versions[-1] if versions else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")


def _as_server_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", "postgres", "--", *argv]


@dataclass
class PgCluster:
    bindir: Path
    datadir: Path
    port: int

    @classmethod
    def start(cls, *, durable: bool = False) -> PgCluster:
        """Start a cluster; `durable` keeps fsync on (benchmarks: commits cost what they
        cost in production), tests turn it off."""
        bindir = server_bindir()
        if bindir is None:
            raise RuntimeError("no PostgreSQL server installed (Debian package postgresql)")
        # Not under pytest's tmp_path: as root that lies in a 0700 dir the server user cannot enter.
        datadir = Path(tempfile.mkdtemp(prefix="somsd-pg-"))
        if os.geteuid() == 0:
            shutil.chown(datadir, "postgres")
        cluster = cls(bindir=bindir, datadir=datadir, port=_free_port())
        _run(
            _as_server_user(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(datadir),
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "--no-sync",
                    "-E",
                    "UTF8",
                    "--locale",
                    "C",
                ]
            )
        )
        options = (
            f"-c listen_addresses=127.0.0.1 -p {cluster.port} -k {datadir} -c max_connections=200"
        )
        if not durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        _run(
            _as_server_user(
                [
                    str(bindir / "pg_ctl"),
                    "-D",
                    str(datadir),
                    "-o",
                    options,
                    "-w",
                    "-t",
                    _START_TIMEOUT,
                    "-l",
                    str(datadir / "server.log"),
                    "start",
                ]
            )
        )
        return cluster

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def fresh_database(self) -> str:
        """Create an empty database and return its DSN."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def stop(self) -> None:
        subprocess.run(
            _as_server_user(
                [str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "stop"]
            ),
            check=False,
            capture_output=True,
        )
        shutil.rmtree(self.datadir, ignore_errors=True)
