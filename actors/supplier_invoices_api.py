"""HTTP routes of the supplier invoices: intake, the queues, one invoice, its audit trail, and
the operator's approve/reject of a held invoice. All need the admin token."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from actors.supplier_invoices import (
    STATUSES,
    AuditTrail,
    InvoiceSummary,
    OverrideError,
    SupplierInvoiceActor,
    intake_problem,
)
from actors.supplier_invoices_trail import ACTOR
from somsd.api import (
    ApiError,
    ApiRoute,
    body_decoder,
    decode_body,
    json_response,
    query_int,
    read_limited_body,
)

__all__ = ["SupplierInvoiceRoutes"]

_MAX_FILENAME: Final = 200
# With [cluster], the desk is a leased duty; what needs its files or its index runs on its member.
DUTY: Final = ACTOR


class Intake(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    duplicate: bool  # the same file was received before: nothing new is processed
    status: str


class Override(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    by: str  # who decides (the admin token names no person)
    reason: str  # why; for a rejection this is what the supplier is told


class SupplierInvoiceRoutes:
    def __init__(self, actor: Callable[[], SupplierInvoiceActor | None]) -> None:
        self.actor = actor

    def _actor(self) -> SupplierInvoiceActor:
        actor = self.actor()
        if actor is None or not actor.ready.is_set():
            raise ApiError(
                404, "supplier_inbox_off", "no [[supplier_inbox]] is configured (or it is starting)"
            )
        return actor

    async def intake(self, request: Request) -> Response:
        actor = self._actor()
        inboxes = actor.inboxes()
        name = request.query_params.get("inbox", inboxes[0].name if inboxes else "")
        section = actor.inbox(name)
        if section is None:
            raise ApiError(422, "unknown_inbox", f"no supplier_inbox named {name[:60]!r}", "inbox")
        data = await read_limited_body(
            request, section.max_file_bytes, limit_name="supplier_inbox.max_file_bytes"
        )
        problem = intake_problem(data, section.max_file_bytes)
        if problem is not None:
            raise ApiError(415 if data else 422, "not_an_invoice_file", problem, "$")
        filename = request.query_params.get("filename", "upload")[:_MAX_FILENAME]
        invoice, duplicate = await actor.receive(section, data, filename, via="api")
        summary = await actor.summary(invoice)
        status = summary.status if summary is not None else "received"
        return json_response(
            Intake(id=invoice, duplicate=duplicate, status=status), 200 if duplicate else 201
        )

    async def listing(self, request: Request) -> Response:
        actor = self._actor()
        status = request.query_params.get("status")
        if status is not None and status not in STATUSES:
            raise ApiError(
                422, "invalid_query", f"status must be one of {', '.join(STATUSES)}", "status"
            )
        limit = query_int(request.query_params, "limit", 500, 1, 10_000)
        return json_response(await actor.listing(status, limit))

    async def show(self, request: Request) -> Response:
        invoice = request.path_params["id"]
        summary = await self._actor().summary(invoice)
        if summary is None:
            raise ApiError(
                404, "supplier_invoice_not_found", f"no supplier invoice {invoice[:60]!r}"
            )
        return json_response(summary)

    async def audit(self, request: Request) -> Response:
        invoice = request.path_params["id"]
        trail = await self._actor().trail(invoice)
        if trail is None:
            raise ApiError(
                404, "supplier_invoice_not_found", f"no supplier invoice {invoice[:60]!r}"
            )
        return json_response(trail)

    async def _override(
        self, request: Request, outcome: Literal["approved", "rejected", "retry"]
    ) -> Response:
        actor = self._actor()
        invoice = request.path_params["id"]
        raw = await read_limited_body(request, 16 * 1024, limit_name="16 KiB")
        body: Override = decode_body(raw, body_decoder(Override))
        for field in ("by", "reason"):
            if not getattr(body, field).strip():
                raise ApiError(422, "invalid_body", f"{field} must not be empty", f"$.{field}")
            if len(getattr(body, field)) > 500:
                raise ApiError(
                    422, "invalid_body", f"{field}: at most 500 characters", f"$.{field}"
                )
        if await actor.summary(invoice) is None:
            raise ApiError(
                404, "supplier_invoice_not_found", f"no supplier invoice {invoice[:60]!r}"
            )
        try:
            if outcome == "retry":
                summary = await actor.retry(invoice, body.by.strip(), body.reason.strip())
            else:
                summary = await actor.override(
                    invoice, outcome, body.by.strip(), body.reason.strip()
                )
        except OverrideError as exc:
            raise ApiError(exc.status, exc.code, exc.message) from None
        return json_response(summary)

    async def approve(self, request: Request) -> Response:
        return await self._override(request, "approved")

    async def reject(self, request: Request) -> Response:
        return await self._override(request, "rejected")

    async def retry(self, request: Request) -> Response:
        return await self._override(request, "retry")

    def routes(self) -> list[ApiRoute]:
        tags = ("supplier-invoices",)
        return [
            ApiRoute(
                "/v1/supplier-invoices",
                "POST",
                self.intake,
                "Take in a supplier invoice: the PDF or XML (CII, UBL) file as the body; a copy "
                "of a file received before is recognised (200, duplicate) and not processed again",
                admin=True,
                responses={201: Intake, 200: Intake, 404: None, 413: None, 415: None, 422: None},
                query=(
                    ("inbox", "string", "the [[supplier_inbox]] name (default: the first)"),
                    ("filename", "string", "the file's name, for the audit trail"),
                ),
                tags=tags,
                runs_on=DUTY,  # the files are kept on the desk's member
            ),
            ApiRoute(
                "/v1/supplier-invoices",
                "GET",
                self.listing,
                "Supplier invoices with their status (held and needs_template wait for a person)",
                admin=True,
                responses={200: list[InvoiceSummary], 404: None, 422: None},
                query=(
                    ("status", {"type": "string", "enum": list(STATUSES)}, "only this status"),
                    ("limit", {"type": "integer", "minimum": 1, "maximum": 10000}, "at most"),
                ),
                tags=tags,
            ),
            ApiRoute(
                "/v1/supplier-invoices/{id}",
                "GET",
                self.show,
                "One supplier invoice: status, failed checks, the supplier-facing reason, files",
                admin=True,
                responses={200: InvoiceSummary, 404: None},
                tags=tags,
            ),
            ApiRoute(
                "/v1/supplier-invoices/{id}/audit",
                "GET",
                self.audit,
                "The invoice's audit trail, every step hash-chained, and whether the chain holds",
                admin=True,
                responses={200: AuditTrail, 404: None},
                tags=tags,
            ),
            ApiRoute(
                "/v1/supplier-invoices/{id}/approve",
                "POST",
                self.approve,
                "Approve a held invoice (who and why are recorded); it is then posted",
                admin=True,
                request=Override,
                responses={200: InvoiceSummary, 400: None, 404: None, 409: None, 422: None},
                tags=tags,
                runs_on=DUTY,
            ),
            ApiRoute(
                "/v1/supplier-invoices/{id}/reject",
                "POST",
                self.reject,
                "Reject a held invoice (or one waiting for a template); the reason is for the "
                "supplier",
                admin=True,
                request=Override,
                responses={200: InvoiceSummary, 400: None, 404: None, 409: None, 422: None},
                tags=tags,
                runs_on=DUTY,
            ),
            ApiRoute(
                "/v1/supplier-invoices/{id}/retry",
                "POST",
                self.retry,
                "Read an invoice again that waited for a template or could not be read (after "
                "the template was added and the config reloaded)",
                admin=True,
                request=Override,
                responses={200: InvoiceSummary, 400: None, 404: None, 409: None, 422: None},
                tags=tags,
                runs_on=DUTY,
            ),
        ]
