"""`[cluster]` in the config: validated with key paths, and nothing changes without it."""

from __future__ import annotations

from pathlib import Path

import pytest

from somsd.config import ConfigError, parse_config
from somsd.daemon import Daemon

DSN = "postgresql://somsd:pw-never-logged@127.0.0.1/somsd"


def cluster_toml(tmp_path: Path, body: str, *, store: str | None = None) -> str:
    """A config with `[cluster]` `body`; the store on PostgreSQL with the DSN `store` (default:
    the cluster's)."""
    (tmp_path / "cluster.dsn").write_text(DSN + "\n")
    (tmp_path / "store.dsn").write_text((store or DSN) + "\n")
    return (
        f'[daemon]\ndata_dir = "{tmp_path / "data"}"\n\n'
        '[store]\nbackend = "postgres"\ndsn_file = "store.dsn"\n\n'
        f"[cluster]\n{body}\n"
    )


def test_a_cluster_section_is_read_with_its_defaults(tmp_path: Path) -> None:
    config = parse_config(
        cluster_toml(tmp_path, 'member = "a"\ndsn_file = "cluster.dsn"'), config_dir=tmp_path
    )
    assert config.cluster is not None
    assert config.cluster.member == "a"
    assert (config.cluster.lease_ttl.seconds, config.cluster.renew_every.seconds) == (15, 5)
    # The DSN holds a password: it is a secret the log scrubs.
    assert any("pw-never-logged" in s.reveal() for s in config.secrets())


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ('dsn_file = "cluster.dsn"', "cluster: Object missing required field `member`"),
        ('member = "a b"\ndsn_file = "cluster.dsn"', 'cluster.member: "a b" is not a member'),
        ('member = "a"\ndsn_file = "missing.dsn"', "cluster.dsn_file: secret file not found"),
        (
            'member = "a"\ndsn_file = "cluster.dsn"\nlease_ttl = "5s"\nrenew_every = "5s"',
            "cluster.renew_every: must be above 0s and below cluster.lease_ttl",
        ),
        ('member = "a"\ndsn_file = "cluster.dsn"\nlease_ttl = "1h"', "cluster.lease_ttl: between"),
        (
            'member = "a"\ndsn_file = "cluster.dsn"\nadvertise_url = "somsd-a:8470"',
            'cluster.advertise_url: "somsd-a:8470" is not an http(s) URL',
        ),
    ],
)
def test_a_bad_cluster_section_names_the_key(tmp_path: Path, body: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(cluster_toml(tmp_path, body), config_dir=tmp_path)
    assert any(p.startswith(problem) for p in caught.value.problems), caught.value.problems


MEMBER = 'member = "a"\ndsn_file = "cluster.dsn"'


@pytest.mark.parametrize(
    "store",
    [
        DSN,
        "postgresql://other-role:pw2@127.0.0.1:5432/somsd?sslmode=disable",  # another role
        "host=127.0.0.1 port=5432 dbname=somsd user=somsd",  # key=value, same database
    ],
)
def test_the_cluster_and_the_store_on_one_database_pass(tmp_path: Path, store: str) -> None:
    config = parse_config(cluster_toml(tmp_path, MEMBER, store=store), config_dir=tmp_path)
    assert config.cluster is not None


@pytest.mark.parametrize(
    ("store", "named"),
    [
        ("postgresql://somsd:pw-never-logged@127.0.0.1/other", "127.0.0.1:5432/other"),
        ("postgresql://somsd:pw-never-logged@127.0.0.1:5433/somsd", "127.0.0.1:5433/somsd"),
        ("postgresql://somsd:pw-never-logged@db.example/somsd", "db.example:5432/somsd"),
    ],
)
def test_a_store_on_another_database_than_the_cluster_is_refused(
    tmp_path: Path, store: str, named: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(cluster_toml(tmp_path, MEMBER, store=store), config_dir=tmp_path)
    (problem,) = caught.value.problems
    assert problem == (
        "cluster.dsn_file: names database 127.0.0.1:5432/somsd, but store.dsn_file names "
        f"{named}; [cluster] and [store] must use the same PostgreSQL database"
    )
    assert "pw-never-logged" not in problem


def test_a_cluster_on_the_sqlite_store_is_refused(tmp_path: Path) -> None:
    text = cluster_toml(tmp_path, MEMBER).replace('backend = "postgres"', 'backend = "sqlite"')
    with pytest.raises(ConfigError) as caught:
        parse_config(text, config_dir=tmp_path)
    assert [p.split(" (")[0] for p in caught.value.problems] == [
        'cluster: needs [store] backend = "postgres"'
    ]


def test_a_dsn_that_is_no_connection_string_is_named_without_its_text(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(
            cluster_toml(tmp_path, MEMBER, store="secret-password-here"), config_dir=tmp_path
        )
    assert caught.value.problems == [
        "store.dsn_file: not a libpq connection string (URI or key=value pairs)"
    ]


def test_without_a_cluster_section_the_daemon_runs_every_duty_itself(tmp_path: Path) -> None:
    """Inert: no keeper, no lease child, the core children exactly as before."""
    config = parse_config(f'[daemon]\ndata_dir = "{tmp_path / "data"}"\n', config_dir=tmp_path)
    daemon = Daemon(tmp_path / "somsd.toml", config)
    assert daemon.lease_keeper is None
    names = [child.name for child in daemon.core.children()]
    assert names == ["order-desk", "inventory", "fulfilments", "router", "dispatcher", "mailer"]
