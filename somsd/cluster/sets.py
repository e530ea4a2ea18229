"""Every member of a cluster runs the same [[location]]s and [[channel]]s.

Any member takes orders in and routes them; the router picks among the locations its own config
names, and the location actor that drives a location runs on whichever member holds its lease.
A member with a location the others lack routes orders there that nobody may drive once the
lease moves to a member without it; a member lacking a channel refuses that channel's webhooks
behind the same load balancer that sends them. So the member records the names it runs (and
their fingerprint) in `cluster_members` when it starts and at each reload, and a start or a
reload whose names differ from a live member's is refused, naming the difference. The check
and the record are one transaction under an advisory lock, so two members starting at once
with different sets cannot both pass.

A live member is one heard from (heartbeat, or a recorded set) within the lease TTL. To change
the sets of a running cluster: stop all members but one, reload (or restart) that one with the
new config, then start the others with it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import psycopg
import structlog

from somsd.cluster import postgres
from somsd.config import ClusterConfig, Config, ConfigError

__all__ = ["MemberSets", "check_and_record", "check_reload", "join_cluster", "member_sets"]

log = structlog.get_logger("somsd.cluster")

# Any constant (the other cluster locks are ..._43_4C and ..._4F_42): serialises check + record.
_SETS_LOCK = 0x50_4D_53_44_53_54


@dataclass(frozen=True)
class MemberSets:
    """The [[location]] and [[channel]] names a member runs, sorted."""

    locations: tuple[str, ...]
    channels: tuple[str, ...]

    @property
    def fingerprint(self) -> str:
        text = "\n".join(("locations", *self.locations, "channels", *self.channels))
        return hashlib.sha256(text.encode()).hexdigest()

    def difference(self, member: str, other: MemberSets) -> str:
        """What differs from `member`'s sets, e.g. "location wh-2 only here"."""
        parts = []
        for kind, mine, theirs in (
            ("location", self.locations, other.locations),
            ("channel", self.channels, other.channels),
        ):
            if here := sorted(set(mine) - set(theirs)):
                parts.append(f"{kind} {', '.join(here)} only here")
            if there := sorted(set(theirs) - set(mine)):
                parts.append(f"{kind} {', '.join(there)} only on {member!r}")
        return "; ".join(parts)


def member_sets(config: Config) -> MemberSets:
    return MemberSets(
        tuple(sorted(location.name for location in config.location)),
        tuple(sorted(channel.name for channel in config.channel)),
    )


def check_and_record(
    conn: postgres.Connection, *, member: str, sets: MemberSets, ttl: float
) -> list[str]:
    """Refuse (one problem per differing live member) or record `sets` as `member`'s."""
    postgres.ensure_schema(conn)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SETS_LOCK,))
        others = conn.execute(
            "SELECT member, locations, channels FROM cluster_members "
            "WHERE member <> %s AND config_fingerprint IS NOT NULL "
            "AND config_fingerprint <> %s AND greatest(heartbeat_at, config_at) > "
            "clock_timestamp() - make_interval(secs => %s) ORDER BY member",
            (member, sets.fingerprint, ttl),
        ).fetchall()
        if others:
            return [
                f"cluster: [[location]]s and [[channel]]s must be the same on every member "
                f"(a member routes orders to the locations its own config names): "
                f"{sets.difference(name, MemberSets(tuple(locations), tuple(channels)))}"
                for name, locations, channels in others
            ]
        # A member seen for the first time gets its row now, heard from now (it is starting;
        # the lease keeper's heartbeats follow and leave these columns alone), so a member
        # starting next compares with it even before that first heartbeat.
        conn.execute(
            "INSERT INTO cluster_members (member, holder, started_at, heartbeat_at, locations, "
            "channels, config_fingerprint, config_at) VALUES (%s, '', clock_timestamp(), "
            "clock_timestamp(), %s, %s, %s, clock_timestamp()) ON CONFLICT (member) DO UPDATE SET "
            "locations = excluded.locations, channels = excluded.channels, "
            "config_fingerprint = excluded.config_fingerprint, config_at = excluded.config_at",
            (member, list(sets.locations), list(sets.channels), sets.fingerprint),
        )
    return []


def _check(cluster: ClusterConfig, sets: MemberSets) -> list[str]:
    with postgres.connect(cluster.dsn_file.secret.reveal()) as conn:
        return check_and_record(
            conn, member=cluster.member, sets=sets, ttl=cluster.lease_ttl.seconds
        )


def join_cluster(source: str, config: Config) -> None:
    """At `somsd run`: raise `ConfigError` when the sets differ from a live member's. A
    database that does not answer does not stop the start (the store and the lease keeper
    wait for it as they always do); the sets are then recorded at the next reload."""
    if config.cluster is None:
        return
    try:
        problems = _check(config.cluster, member_sets(config))
    except psycopg.Error as exc:
        log.warning("cluster_sets_not_checked", error=str(exc))
        return
    if problems:
        raise ConfigError(source, problems)


def check_reload(source: str, old: Config, new: Config) -> None:
    """On reload (in a worker thread): raise `ConfigError` when the new sets differ from a
    live member's, or cannot be checked; unchanged sets need no check."""
    if new.cluster is None:
        return
    sets = member_sets(new)
    if sets == member_sets(old):
        return
    try:
        problems = _check(new.cluster, sets)
    except psycopg.Error as exc:
        problems = [
            "cluster: the [[location]]s or [[channel]]s changed and the other members' cannot "
            f"be checked (the cluster database does not answer: {exc}); try again"
        ]
    if problems:
        raise ConfigError(source, problems)
