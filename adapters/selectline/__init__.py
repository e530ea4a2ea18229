"""SelectLine ERP (SelectLine API, on-prem REST): client, wire models, planning, simulator.

Modules: `wire` (the Swagger models somsd uses, in their spelling), `client`
(`SelectLineClient`: one LoginId session, re-login, paging, typed errors), `errors`,
`planning` (pure: stock rows -> stock reports, order events -> ERP document effects, open
items -> payments), `simulator` (`SelectLineSimulator`, a real server on loopback with seats,
documents, successors and fault knobs; `python -m adapters.selectline`).
"""

from adapters.selectline.client import DEFAULT_PAGE_SIZE, SelectLineClient, filter_eq
from adapters.selectline.errors import (
    SelectLineLoginRefused,
    SelectLineNoLicence,
    SelectLineRejected,
    SelectLineUnreachable,
)

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "SelectLineClient",
    "SelectLineLoginRefused",
    "SelectLineNoLicence",
    "SelectLineRejected",
    "SelectLineUnreachable",
    "filter_eq",
]
