"""The validator worker: `python -m somsd.documents.worker`, one long-lived process.

Reads one JSON request per line on stdin (`{"id": 1, "xml": "<base64>"}`) and answers each
with one JSON line on stdout (`{"id": 1, "report": {...}}`, or `{"id": 1, "error": "..."}`
when the check itself failed). It exits when stdin closes. Saxon may write diagnostics to
file descriptor 1, so the protocol gets its own copy of stdout and fd 1 is pointed at stderr
before saxonche is loaded.
"""

from __future__ import annotations

import os
import sys

import msgspec

from somsd.documents.validation import ValidationReport, Validator

__all__ = ["Request", "Response", "main"]


class Request(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    xml: bytes


class Response(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    id: int
    report: ValidationReport | None = None
    error: str = ""


def main() -> int:
    protocol = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    validator = Validator()
    validator.warm_up()
    encoder = msgspec.json.Encoder()
    decoder = msgspec.json.Decoder(Request)
    protocol.write(b'{"id":0}\n')  # ready: the rule sets are compiled
    for line in sys.stdin.buffer:
        if not line.strip():
            continue
        try:
            request = decoder.decode(line)
        except msgspec.DecodeError as exc:
            protocol.write(encoder.encode(Response(id=-1, error=f"bad request: {exc}")) + b"\n")
            continue
        try:
            response = Response(id=request.id, report=validator.validate(request.xml))
        except Exception as exc:  # one bad document must not stop the worker
            response = Response(id=request.id, error=f"{type(exc).__name__}: {exc}")
        protocol.write(encoder.encode(response) + b"\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
