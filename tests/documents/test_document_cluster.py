"""Rendered documents live in the event store's database: two real `somsd run` members on one
PostgreSQL store, an invoice rendered by the member holding the `documents` duty, fetched
through the other member's API, and still there after the renderer was SIGKILLed."""

from __future__ import annotations

import contextlib
import hashlib
import signal
from pathlib import Path

import httpx
import pytest

from tests.cluster.members import member_config, owns, until
from tests.documents.test_document_actor import DOCUMENTS, wait_documents
from tests.harness import running_daemon
from tests.orders.shop import accept, order_body

pytestmark = pytest.mark.slow

DUTY = "documents"


async def test_a_document_rendered_on_one_member_is_served_by_the_other_after_it_died(
    tmp_path: Path, pg_dsn: str
) -> None:
    tables = DOCUMENTS.format(vat_id="DE123456789")
    async with contextlib.AsyncExitStack() as stack:
        members = {
            name: await stack.enter_async_context(
                running_daemon(
                    member_config(tmp_path / name, pg_dsn, name, body=tables, webhook=True)
                )
            )
            for name in ("a", "b")
        }
        every = list(members.values())
        await until(every, lambda: any(owns(d, DUTY) for d in every), what="documents owned")
        renderer = next(name for name, d in members.items() if owns(d, DUTY))
        other = members[next(name for name in members if name != renderer)]

        async with httpx.AsyncClient(base_url=other.api) as client:
            order_id = await accept(client, order_body("C-1"))
        record = (await wait_documents(other, [order_id]))[order_id]
        assert record["valid"] is True
        number = str(record["number"])
        rendered = [e for e in members[renderer].log if e.get("event") == "document_rendered"]
        assert [e["number"] for e in rendered] == [number]
        assert not any(e.get("event") == "document_rendered" for e in other.log)
        assert not (tmp_path / renderer / "data" / "documents").exists()  # nothing on the disk

        files = {item["media_type"]: item for item in record["files"]}  # type: ignore[attr-defined]
        async with other.admin() as admin:
            served = {}
            for media in ("application/pdf", "application/xml"):
                response = await admin.get(f"/v1/documents/{number}", headers={"Accept": media})
                assert response.status_code == 200, response.text
                assert hashlib.sha256(response.content).hexdigest() == files[media]["sha256"]
                served[media] = response.content
            assert served["application/pdf"].startswith(b"%PDF-")

            members[renderer].signal(signal.SIGKILL)
            await members[renderer].process.wait()
            for media, content in served.items():
                again = await admin.get(f"/v1/documents/{number}", headers={"Accept": media})
                assert again.status_code == 200, again.text
                assert again.content == content
