"""A label printer on loopback: a Zebra's raw port 9100, keeping every job's bytes.

What somsd's `tcp://host:9100` printing talks to in tests and benchmarks: a connection is one
job, its bytes are the ZPL, the printer answers nothing. A job above `max_job_bytes` is cut
there (a real printer has a finite buffer too) and counted in `truncated`.
"""

from __future__ import annotations

import trio

__all__ = ["ZebraSimulator"]

MAX_JOB_BYTES = 4 * 1024 * 1024


class ZebraSimulator:
    def __init__(self, *, max_job_bytes: int = MAX_JOB_BYTES) -> None:
        self.jobs: list[bytes] = []
        self.truncated = 0
        self.port = 0
        self.max_job_bytes = max_job_bytes
        self.changed = trio.Event()

    async def serve(
        self, port: int = 0, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen on 127.0.0.1:`port` (0: any; `self.port` says which) until cancelled."""
        listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        data = bytearray()
        async with stream:
            while chunk := await stream.receive_some(65536):
                room = self.max_job_bytes - len(data)
                data += chunk[:room]
                if len(chunk) > room:
                    self.truncated += 1
                    break
        self.jobs.append(bytes(data))
        self.changed.set()
        self.changed = trio.Event()
