"""The API listener served for real by somsd.http on loopback: probes, auth, drain, errors."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import msgspec
import pytest
import trio
from starlette.requests import Request
from starlette.responses import Response

from somsd.api import ApiError, ApiRoute, ApiState, build_api_app, json_response
from somsd.config import ListenAddress
from somsd.http import HttpListener
from somsd.secrets import Secret


class Echo(msgspec.Struct):
    text: str


async def echo(request: Request) -> Response:
    body = msgspec.json.decode(await request.body(), type=Echo)
    if body.text == "conflict":
        raise ApiError(409, "conflict", "already done", path="$.text")
    return json_response(body)


@pytest.fixture
def state() -> ApiState:
    return ApiState(is_ready=lambda: True, admin_tokens=lambda: [Secret("old"), Secret("new")])


@pytest.fixture
async def client(state: ApiState, nursery: trio.Nursery) -> AsyncIterator[httpx.AsyncClient]:
    routes = [
        ApiRoute("/v1/echo", "POST", echo, "Echo", admin=True, request=Echo, responses={200: Echo})
    ]
    listener = HttpListener(
        "api",
        build_api_app(routes, state, version="test"),
        ListenAddress("127.0.0.1:0"),
        graceful_timeout=1,
    )
    await nursery.start(listener.run)
    async with httpx.AsyncClient(base_url=listener.urls[0]) as client:
        yield client
    await listener.stop()


async def test_probes_answer_without_auth(client: httpx.AsyncClient, state: ApiState) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).json() == {"status": "ready"}
    state.is_ready = lambda: False
    not_ready = await client.get("/readyz")
    assert (not_ready.status_code, not_ready.json()) == (503, {"status": "not ready"})


async def test_any_configured_token_is_accepted(client: httpx.AsyncClient) -> None:
    """Several tokens in token_file allow rotation without downtime."""
    for token in ("old", "new"):
        response = await client.post(
            "/v1/echo", json={"text": "hi"}, headers={"Authorization": f"Bearer {token}"}
        )
        assert response.json() == {"text": "hi"}
    response = await client.post(
        "/v1/echo", json={"text": "hi"}, headers={"Authorization": "Basic b2xkOm5ldw=="}
    )
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="somsd"'


async def test_admin_routes_are_off_without_a_token_file(
    client: httpx.AsyncClient, state: ApiState
) -> None:
    state.admin_tokens = list
    response = await client.post("/v1/echo", json={"text": "x"}, headers={"Authorization": "x"})
    assert response.status_code == 403
    assert response.json()["error"]["message"] == "admin API is disabled; set api.token_file"


async def test_handler_errors_are_json_with_path(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/echo", json={"text": "conflict"}, headers={"Authorization": "Bearer new"}
    )
    assert response.status_code == 409
    assert response.json() == {
        "error": {"code": "conflict", "message": "already done", "path": "$.text"}
    }
    missing = await client.get("/v1/nothing")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"


async def test_draining_daemon_answers_503_except_probes(
    client: httpx.AsyncClient, state: ApiState
) -> None:
    """Once shutdown starts, new requests get 503 with Retry-After; liveness still answers."""
    state.accepting = False
    response = await client.post(
        "/v1/echo", json={"text": "hi"}, headers={"Authorization": "Bearer new"}
    )
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.json()["error"]["code"] == "shutting_down"
    assert (await client.get("/healthz")).status_code == 200
    assert (await client.get("/readyz")).status_code == 503


async def test_openapi_documents_every_route_with_its_schemas(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.")
    assert set(document["paths"]) == {"/healthz", "/readyz", "/v1/echo"}
    echo_op = document["paths"]["/v1/echo"]["post"]
    assert echo_op["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Echo"
    }
    assert echo_op["security"] == [{"bearer": []}]
    assert "ErrorBody" in document["components"]["schemas"]
