"""`[cluster]` in the config: validated with key paths, and nothing changes without it."""

from __future__ import annotations

from pathlib import Path

import pytest

from somsd.config import ConfigError, parse_config
from somsd.daemon import Daemon


def cluster_toml(tmp_path: Path, body: str) -> str:
    (tmp_path / "cluster.dsn").write_text("postgresql://somsd:pw-never-logged@127.0.0.1/somsd\n")
    return f'[daemon]\ndata_dir = "{tmp_path / "data"}"\n\n[cluster]\n{body}\n'


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
    ],
)
def test_a_bad_cluster_section_names_the_key(tmp_path: Path, body: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(cluster_toml(tmp_path, body), config_dir=tmp_path)
    assert any(p.startswith(problem) for p in caught.value.problems), caught.value.problems


def test_without_a_cluster_section_the_daemon_runs_every_duty_itself(tmp_path: Path) -> None:
    """Inert: no keeper, no lease child, the core children exactly as before."""
    config = parse_config(f'[daemon]\ndata_dir = "{tmp_path / "data"}"\n', config_dir=tmp_path)
    daemon = Daemon(tmp_path / "somsd.toml", config)
    assert daemon.lease_keeper is None
    names = [child.name for child in daemon.core.children()]
    assert names == ["order-desk", "inventory", "fulfilments", "router", "dispatcher", "mailer"]
