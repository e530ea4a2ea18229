"""A member in a process of its own, for the SIGKILL test: `python -m tests.cluster.holder DSN
MEMBER DUTY TTL RENEW`. Prints `running TOKEN` when its duty runs, then keeps the lease."""

from __future__ import annotations

import sys

import trio

from actors.lease_keeper import LeaseKeeper, current_lease
from somsd.cluster.client import LeaseClient
from somsd.cluster.lease import LeaseRules


async def main(dsn: str, member: str, duty: str, ttl: float, renew: float) -> None:
    keeper = LeaseKeeper(member, LeaseClient(dsn), LeaseRules(ttl=ttl, renew_every=renew))

    async def work(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        grant = current_lease()
        assert grant is not None
        print(f"running {grant.token}", flush=True)
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(keeper.run)
        nursery.start_soon(keeper.run_while_leased(duty, work))


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5]))
