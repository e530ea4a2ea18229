"""The SelectLine client against the real simulator over loopback HTTP: session, seats, errors,
paging, successors and the empty-positions rule."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal

import httpx
import pytest

from adapters.selectline import (
    SelectLineClient,
    SelectLineLoginRefused,
    SelectLineNoLicence,
    SelectLineRejected,
    SelectLineUnreachable,
)
from adapters.selectline.simulator import SelectLineKnobs, SelectLineSimulator
from adapters.selectline.wire import (
    ArticlePositionItem,
    DocumentCreateModel,
    DocumentDetailBusinessPartner,
    DocumentPositionWithShippingItemCreateModel,
    StoreInformationUpdate,
    SuccessorsDocumentData,
)
from tests.adapters.conftest import Serve

Connect = Callable[..., Awaitable[SelectLineClient]]


@pytest.fixture
async def connect(serve: Serve) -> AsyncIterator[Connect]:
    clients: list[httpx.AsyncClient] = []

    async def start(
        sim: SelectLineSimulator, *, password: str = "sim-password", page_size: int = 7
    ) -> SelectLineClient:
        url, _ = await serve(sim)
        http = httpx.AsyncClient(base_url=url, timeout=5.0)
        clients.append(http)
        return SelectLineClient(
            http, system="erp/sl", user="somsd", password=password, page_size=page_size
        )

    yield start
    for http in clients:
        await http.aclose()


async def test_login_once_shared_and_logout_frees_the_seat(connect: Connect) -> None:
    sim = SelectLineSimulator(knobs=SelectLineKnobs(seats=1))
    sim.seed(20)
    client = await connect(sim)
    assert len(await client.stocks()) == 40  # 20 articles x 2 warehouses, over 6 pages of 7
    assert len(await client.articles()) == 20
    assert sim.logins == 1
    assert len(sim.sessions) == 1
    await client.logout()
    assert sim.logouts == 1
    assert not sim.sessions


async def test_a_stale_login_costs_exactly_one_relogin(connect: Connect) -> None:
    sim = SelectLineSimulator()
    sim.seed(3)
    client = await connect(sim)
    await client.warehouses()
    sim.expire_sessions()
    assert [w.Number for w in await client.warehouses()] == ["200", "400"]
    assert sim.logins == 2
    statuses = [status for method, path, status in sim.requests if path == "/Warehouses"]
    assert statuses == [200, 403, 200]


async def test_no_free_licence_is_reported_as_such_and_retried_later(connect: Connect) -> None:
    sim = SelectLineSimulator(knobs=SelectLineKnobs(seats=0))
    client = await connect(sim)
    with pytest.raises(SelectLineNoLicence, match="no free SelectLine licence"):
        await client.warehouses()
    sim.knobs.seats = 1
    assert await client.warehouses() == []


async def test_unreachable_server_is_503_and_transient(connect: Connect) -> None:
    sim = SelectLineSimulator(knobs=SelectLineKnobs(unreachable=True))
    client = await connect(sim)
    with pytest.raises(SelectLineUnreachable, match="unreachable"):
        await client.warehouses()
    assert (await client.info()).Version  # /Info still answers


async def test_a_wrong_password_is_asked_once_not_in_a_storm(connect: Connect) -> None:
    sim = SelectLineSimulator()
    client = await connect(sim, password="wrong")
    for _ in range(5):
        with pytest.raises(SelectLineLoginRefused, match="password file") as caught:
            await client.warehouses()
    assert sim.login_attempts == 1
    assert caught.value.retry_after == 30.0
    assert "falsch" in str(caught.value)  # the ApiResponse's message is in the error


async def test_api_response_errors_are_decoded(connect: Connect) -> None:
    sim = SelectLineSimulator()
    client = await connect(sim)
    document = await client.create_document(DocumentCreateModel(KindFlag="F"))
    with pytest.raises(SelectLineRejected, match="Artikel 999 nicht gefunden") as caught:
        await client.add_article(
            document.DocumentKey,
            ArticlePositionItem(ArticleNumber="999", CalculatedQuantityValue=Decimal(1)),
        )
    assert caught.value.response_id == 4001


async def test_partial_successors_transfer_exactly_the_listed_quantities(connect: Connect) -> None:
    sim = SelectLineSimulator()
    sim.seed(2)
    client = await connect(sim)
    created = await client.create_document(
        DocumentCreateModel(
            KindFlag="F",
            BusinessPartner=DocumentDetailBusinessPartner(BusinessPartnerContract="1042"),
        )
    )
    key = created.DocumentKey
    first = await client.add_article(
        key,
        ArticlePositionItem(
            ArticleNumber="100001",
            CalculatedQuantityValue=Decimal(3),
            UnitPrice=Decimal("19.99"),
            TaxRate=Decimal(19),
        ),
    )
    await client.add_shipping(
        key,
        DocumentPositionWithShippingItemCreateModel(
            ArticleNumber="VERSAND", UnitPrice=Decimal("4.90")
        ),
    )
    (order,) = await client.documents(KindFlag="F", BusinessPartnerContract="1042")
    assert order.GrossAmount == Decimal("64.87")
    delivery = await client.create_successor(
        key,
        SuccessorsDocumentData(
            DocumentKindDestination="L",
            Positions=(
                StoreInformationUpdate(Identifier=first.PositionIdentifier, Quantity=Decimal(2)),
            ),
        ),
    )
    (line,) = await client.positions(delivery.DocumentKey)
    assert line.Quantity == 2
    source = await client.positions(key)
    assert source[0].QuantityTakenOverByDocumentSuccessor == 2
    assert source[0].StatusFlag == "1"
    with pytest.raises(SelectLineRejected, match="übersteigt"):
        await client.create_successor(
            key,
            SuccessorsDocumentData(
                DocumentKindDestination="L",
                Positions=(
                    StoreInformationUpdate(
                        Identifier=first.PositionIdentifier, Quantity=Decimal(2)
                    ),
                ),
            ),
        )
    with pytest.raises(ValueError, match="0 each"):
        await client.create_successor(key, SuccessorsDocumentData(DocumentKindDestination="L"))
    assert [d.key for d in await client.successors(key)] == [delivery.DocumentKey]


async def test_a_lost_response_after_creating_leaves_the_document(connect: Connect) -> None:
    sim = SelectLineSimulator(knobs=SelectLineKnobs(lose_next_creates=1))
    client = await connect(sim)
    with pytest.raises(Exception, match=r"dropped|network|timed out"):
        await client.create_document(DocumentCreateModel(KindFlag="F"))
    assert len(sim.documents) == 1
