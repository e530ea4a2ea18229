"""Raw printing to a label printer over TCP (Zebra's port 9100, "raw" / JetDirect).

The printer takes the ZPL bytes as they are and answers nothing, so "sent" means the bytes were
written and the connection closed cleanly; nothing confirms the label came out. A refused or
timed-out connection is transient (the printer is off or out of paper and was reset), a wrong
address in the config is permanent.
"""

from __future__ import annotations

import re
from typing import Final

import msgspec
import trio

from adapters.errors import PermanentUpstreamError, TransientUpstreamError

__all__ = ["PrinterAddress", "send_raw"]

_ADDRESS: Final = re.compile(
    r"tcp://(?P<host>\[[0-9a-fA-F:.]+\]|[^:/\[\]]+)(?::(?P<port>\d{1,5}))?/?"
)
DEFAULT_PORT: Final = 9100
# Connect and write budget: a label is a few KiB and the printer is on the LAN.
SEND_TIMEOUT: Final = 10.0


class PrinterAddress(msgspec.Struct, frozen=True):
    host: str
    port: int = DEFAULT_PORT

    @classmethod
    def parse(cls, text: str) -> PrinterAddress:
        match = _ADDRESS.fullmatch(text)
        if match is None or not 0 < int(match["port"] or DEFAULT_PORT) <= 65535:
            raise ValueError(f'"{text[:80]}" is not a printer address; write "tcp://host:9100"')
        return cls(match["host"].strip("[]"), int(match["port"] or DEFAULT_PORT))

    def __str__(self) -> str:
        return f"tcp://{self.host}:{self.port}"


async def send_raw(address: PrinterAddress, data: bytes, *, system: str) -> None:
    """Write `data` to the printer and close; raises `adapters.errors` kinds."""
    try:
        with trio.fail_after(SEND_TIMEOUT):
            stream = await trio.open_tcp_stream(address.host, address.port)
            async with stream:
                await stream.send_all(data)
                await stream.send_eof()
    except TimeoutError as exc:
        raise TransientUpstreamError(
            system, f"{system}: printer {address} timed out", operation="print label"
        ) from exc
    except OSError as exc:
        if isinstance(exc, trio.socket.gaierror):
            raise PermanentUpstreamError(
                system,
                f"{system}: printer host {address.host!r} is unknown",
                operation="print label",
            ) from exc
        raise TransientUpstreamError(
            system,
            f"{system}: printer {address} unreachable ({exc.strerror or exc}); is it on?",
            operation="print label",
        ) from exc
