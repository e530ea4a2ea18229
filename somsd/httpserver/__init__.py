"""A small HTTP/1.1 server for trio on llhttp (httptools), serving ASGI apps.

`_protocol` parses and encodes with no I/O; `_server` runs connections on trio. somsd uses it
through `somsd.http`; it serves the `http` ASGI scope only (no lifespan: somsd's apps have no
start-up or shutdown hooks, the daemon owns those).
"""

from somsd.httpserver._protocol import Limits, ProtocolError, RequestHead, RequestParser
from somsd.httpserver._server import SWEEP_SECONDS, ASGIApp, Server

__all__ = [
    "SWEEP_SECONDS",
    "ASGIApp",
    "Limits",
    "ProtocolError",
    "RequestHead",
    "RequestParser",
    "Server",
]
