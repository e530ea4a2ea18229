"""`[documents]` changes take effect on `somsd reload`, without a restart: documents issued
after the reload carry the new seller, the ones before keep their bytes; an invalid
`[documents]` section is rejected like any invalid reload (the old config keeps running,
the reason is given and counted)."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pytest
from pypdf import PdfReader

from tests.documents.test_document_actor import config, wait_documents
from tests.harness import DaemonProcess, running_daemon
from tests.orders.shop import accept, order_body, sample_value, scrape

pytestmark = pytest.mark.slow


async def pdf_of(daemon: DaemonProcess, record: dict[str, object]) -> bytes:
    async with daemon.admin() as admin:
        response = await admin.get(f"/v1/documents/{record['number']}")
    assert response.status_code == 200, response.text
    return response.content


def text_of(pdf: bytes) -> str:
    return PdfReader(io.BytesIO(pdf)).pages[0].extract_text()


async def reload(daemon: DaemonProcess) -> dict[str, object]:
    async with daemon.admin() as admin:
        response = await admin.post("/v1/admin/reload")
    result: dict[str, object] = response.json()
    return result


async def test_documents_settings_apply_on_reload(tmp_path: Path) -> None:
    path = config(tmp_path)
    original = path.read_text()
    async with running_daemon(path) as daemon:
        async with httpx.AsyncClient(base_url=daemon.api) as client:
            before = await accept(client, order_body("D-1"))
        first = (await wait_documents(daemon, [before]))[before]
        first_pdf = await pdf_of(daemon, first)
        assert "Muster Handel GmbH" in text_of(first_pdf)

        path.write_text(
            original.replace(
                'seller_name = "Muster Handel GmbH"', 'seller_name = "Nord Handel AG"'
            ).replace('city = "Hamburg"', 'city = "Bremen"')
            + "validator_workers = 2\n"
        )
        result = await reload(daemon)
        assert result["applied"] is True, result
        assert "documents" in result["changed"]  # type: ignore[operator]

        async with httpx.AsyncClient(base_url=daemon.api) as client:
            after = await accept(client, order_body("D-2"))
        second = (await wait_documents(daemon, [after]))[after]
        second_text = text_of(await pdf_of(daemon, second))
        assert "Nord Handel AG" in second_text
        assert "Bremen" in second_text
        assert "Muster Handel GmbH" not in second_text
        assert second["valid"] is True
        # GoBD: what was issued before the reload is served as it was.
        assert await pdf_of(daemon, first) == first_pdf

        # An invalid [documents]: a logo that is not there, a payment term out of range.
        path.write_text(
            original.replace(
                'seller_name = "Muster Handel GmbH"',
                'seller_name = "Kaputt GmbH"\nlogo = "missing.png"\npayment_terms_days = 400',
            )
        )
        rejected = await reload(daemon)
        assert rejected["applied"] is False, rejected
        problems = "\n".join(rejected["problems"])  # type: ignore[arg-type]
        assert "documents.payment_terms_days" in problems
        samples = await scrape(daemon)
        assert sample_value(samples, "somsd_config_reloads_total", result="invalid") == 1
        assert any(e.get("event") == "config_reload_rejected" for e in daemon.log)

        # The config before the rejected reload still holds: the seller is Nord Handel AG.
        async with httpx.AsyncClient(base_url=daemon.api) as client:
            later = await accept(client, order_body("D-3"))
        third = (await wait_documents(daemon, [later]))[later]
        third_text = text_of(await pdf_of(daemon, third))
        assert "Nord Handel AG" in third_text
        assert "Kaputt" not in third_text


def test_a_logo_that_is_not_a_png_is_a_config_problem(tmp_path: Path) -> None:
    from somsd.config import ConfigError, parse_config

    (tmp_path / "logo.txt").write_text("not an image")
    body = '[documents]\nlogo = "{}"\n[[documents.template]]\nchannel = "shop"\nlogo = "gone.png"\n'
    with pytest.raises(ConfigError) as caught:
        parse_config(body.format("logo.txt"), config_dir=tmp_path)
    assert any(p.startswith("documents.logo:") and "not a PNG" in p for p in caught.value.problems)
    assert any(
        p.startswith("documents.template[0].logo: cannot read") for p in caught.value.problems
    )
    (tmp_path / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(16))
    with pytest.raises(ConfigError) as caught:
        parse_config(body.format("logo.png"), config_dir=tmp_path)
    assert not any(p.startswith("documents.logo:") for p in caught.value.problems)
