"""Console page "Supplier invoices waiting": the held ones (with every failed check) and those
waiting for a template, with approve/reject forms. Reads and acts through the
`/v1/supplier-invoices` routes, like every console page."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from somsd.console.session import Session

if TYPE_CHECKING:
    from somsd.console.app import Console

__all__ = ["supplier_invoice_routes"]

_PATH: Final = "/supplier-invoices"


def supplier_invoice_routes(console: Console) -> list[Route]:
    async def waiting(request: Request, session: Session) -> Response:
        held = await console.api("GET", "/v1/supplier-invoices", session, params={"status": "held"})
        templates = await console.api(
            "GET", "/v1/supplier-invoices", session, params={"status": "needs_template"}
        )
        return console.render(
            request, "supplier_invoices.html", session, held=held, needs_template=templates
        )

    async def decide(request: Request, session: Session) -> Response:
        invoice = request.path_params["id"]
        action = request.path_params["action"]
        if action not in ("approve", "reject"):
            return console.render(request, "error.html", session, 404, message="no such action")
        await console.api(
            "POST",
            f"/v1/supplier-invoices/{quote(invoice, safe='')}/{action}",
            session,
            body={"by": session.user, "reason": request.state.form.get("reason", "")},
        )
        return RedirectResponse(f"/console{_PATH}", 303)

    return [
        Route(_PATH, console.page(waiting), methods=["GET"]),
        Route(_PATH + "/{id}/{action}", console.page(decide), methods=["POST"]),
    ]
