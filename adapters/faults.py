"""What every simulator shares: the faults it injects on purpose and how it is served.

Shared so each upstream misbehaves the same way and `python -m adapters.<name>` behaves alike.
"""

from __future__ import annotations

import trio
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["DroppedResponse", "start_simulator"]


class DroppedResponse(Response):
    """Announces a 64-byte body and ends without it: the server closes the connection
    mid-answer, so the client sees "peer closed connection without sending complete message
    body" after the upstream already acted (the lost response every retry must survive)."""

    def __init__(self, status_code: int = 200) -> None:
        super().__init__(status_code=status_code)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": self.status_code,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"64")],
            }
        )


async def start_simulator(
    nursery: trio.Nursery, app: ASGIApp, *, port: int, name: str, url_file: str | None = None
) -> str:
    """Serve `app` on 127.0.0.1:`port` (0: any) in `nursery` until it is cancelled; returns
    the URL, also written to `url_file` for a process that started us and waits for it."""
    from somsd.config import ListenAddress
    from somsd.http import serve_asgi

    never = trio.Event()
    urls: list[str] = await nursery.start(
        lambda task_status: serve_asgi(
            app,
            ListenAddress(f"127.0.0.1:{port}"),
            name=name,
            shutdown_trigger=never.wait,
            task_status=task_status,
        )
    )
    if url_file:
        await trio.Path(url_file).write_text(urls[0] + "\n")
    return urls[0]
