"""Requests for work another member owns: 503 naming the owner, instead of a request that waits.

With `[cluster]`, a channel poller, a location, the supplier-invoice desk (each a leased duty,
`actors/lease_keeper.py`) runs on the one member holding its lease; on every other member its
actor is configured but not running. A route that needs the running actor (a channel's
reconciliation, a 3PL's callback, a supplier invoice's approval) declares the duty in
`ApiRoute.runs_on`; `owner_gated` answers such a request on a member that does not hold the
lease at once with

    503 {"error": {"code": "owned_elsewhere", "duty": "channel/shop", "owner": "b",
                   "owner_api_url": "http://somsd-b.example:8470", "message": ...}}
    Retry-After: <seconds until that lease could change hands>

so the client (or the load balancer) sends it to the owner. A route open without the admin token
(a 3PL's signed callback: the gate answers before the signature is checked) gets the code and
Retry-After but no member or URL: the cluster's inner addresses are for operators, and the
sender's retry through the load balancer finds the owner anyway. Without an owner (a lapsed lease
not yet taken over) the code is `no_owner` and Retry-After is one renewal interval: a standby
takes the lease within it. The request never reaches the idle actor's mailbox, where it would
wait for a lease this member may never get and run, late, if it does.

A route whose duty this member is not configured for passes on (its own 404), and without
`[cluster]` nothing is wrapped.
"""

from __future__ import annotations

import math
import socket
from collections.abc import Sequence
from dataclasses import replace

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from actors.lease_keeper import LeaseKeeper
from somsd.api import ApiRoute, Handler, json_response
from somsd.cluster.client import ClusterUnavailable
from somsd.cluster.postgres import Owner
from somsd.config import ClusterConfig

__all__ = ["OwnedElsewhere", "OwnedElsewhereBody", "advertised_api_url", "owner_gated"]

_WILDCARDS = frozenset({"0.0.0.0", "::", "[::]"})  # noqa: S104  # recognised, not bound


class OwnedElsewhere(msgspec.Struct, frozen=True, omit_defaults=True):
    code: str  # owned_elsewhere | no_owner | cluster_unavailable
    message: str
    duty: str
    owner: str | None = None  # the member holding the lease
    owner_api_url: str | None = None  # where to send the request instead


class OwnedElsewhereBody(msgspec.Struct, frozen=True):
    error: OwnedElsewhere


def owner_gated(keeper: LeaseKeeper | None, routes: Sequence[ApiRoute]) -> list[ApiRoute]:
    """`routes` with each `runs_on` route answered by its duty's lease holder only."""
    if keeper is None:
        return list(routes)
    return [
        replace(route, handler=_gated(keeper, route.runs_on, route.handler, reveal=route.admin))
        if route.runs_on is not None
        else route
        for route in routes
    ]


def _gated(keeper: LeaseKeeper, template: str, handler: Handler, *, reveal: bool) -> Handler:
    async def endpoint(request: Request) -> Response:
        duty = template.format_map(request.path_params)
        if not keeper.wants(duty) or keeper.holds(duty):
            return await handler(request)
        try:
            owner = await keeper.owner(duty)
        except ClusterUnavailable as exc:
            return _answer(OwnedElsewhere("cluster_unavailable", str(exc), duty), 5.0)
        if owner is None or owner.holder == keeper.holder:
            # Free, or ours on the table but no longer in our belief (a renewal is late).
            return _answer(_no_owner(duty), keeper.rules.renew_every)
        return _answer(_elsewhere(duty, owner, reveal=reveal), owner.seconds_left)

    return endpoint


def _no_owner(duty: str) -> OwnedElsewhere:
    return OwnedElsewhere(
        "no_owner", f"{duty} runs on no member right now (its lease is being taken over)", duty
    )


def _elsewhere(duty: str, owner: Owner, *, reveal: bool) -> OwnedElsewhere:
    if not reveal:
        return OwnedElsewhere(
            "owned_elsewhere", f"{duty} runs on another member; retry later", duty
        )
    where = f" at {owner.api_url}" if owner.api_url else ""
    return OwnedElsewhere(
        "owned_elsewhere",
        f"{duty} runs on member {owner.member}; send the request to it{where}",
        duty,
        owner.member,
        owner.api_url,
    )


def _answer(problem: OwnedElsewhere, retry_after: float) -> Response:
    response = json_response(OwnedElsewhereBody(problem), 503)
    response.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return response


def advertised_api_url(cluster: ClusterConfig, bound: Sequence[str]) -> str | None:
    """`[cluster] advertise_url`, else the API listener's bound URL with a wildcard host named
    by this machine's host name; None before the listener is bound."""
    if cluster.advertise_url is not None:
        return cluster.advertise_url.rstrip("/")
    if not bound:
        return None
    scheme, _, rest = bound[0].partition("://")
    host, _, port = rest.rpartition(":")
    if host in _WILDCARDS:
        host = socket.gethostname()
    return f"{scheme}://{host}:{port}"
