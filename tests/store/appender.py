"""Child process for test_durability: append as fast as possible until killed.

Usage: python -m tests.store.appender DB_PATH|POSTGRES_DSN RUN_ID

Prints "ready" once the store is open, then one "ack ID" line per append *after* its reply
arrives (i.e. after COMMIT). Each line goes out with one unbuffered os.write, which is atomic
on a pipe for lines this short, so a SIGKILL can not leave half a line that looks like an ack.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import msgspec
import trio

from somsd.store import EventStore, IdempotencyKey, NewEvent
from tests.store.helpers import StreamStats

# Enough concurrent producers to keep batches large (the mailbox holds 1,024), few enough that
# startup stays quick. Streams are shared between producers so versions are contended.
PRODUCERS = 128
STREAMS = 16


async def produce(store: EventStore, run_id: str, producer: int) -> None:
    stream = f"stream-{producer % STREAMS}"
    count = 0
    while True:
        ident = f"{run_id}-{producer}-{count}"
        await store.append(
            stream,
            [NewEvent("Appended", msgspec.json.encode({"id": ident}))],
            idempotency=IdempotencyKey("durability", ident),
        )
        os.write(1, f"ack {ident}\n".encode())
        count += 1


async def main(location: str, run_id: str) -> None:
    if location.startswith("postgresql://"):
        from somsd.store.postgres import PostgresEventStore

        store: EventStore = PostgresEventStore(location, [StreamStats()])
    else:
        store = EventStore(Path(location), [StreamStats()])
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        os.write(1, b"ready\n")
        for producer in range(PRODUCERS):
            nursery.start_soon(produce, store, run_id, producer)


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2])
