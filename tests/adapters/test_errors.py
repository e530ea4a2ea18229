"""The shared upstream error kinds: every httpx failure and status lands in the right one."""

from __future__ import annotations

import httpx
import msgspec
import pytest

from adapters.errors import (
    PermanentUpstreamError,
    TransientUpstreamError,
    UpstreamError,
    decode_answer,
    somsd_error_detail,
    status_error,
    translate_http_error,
)

REQUEST = httpx.Request("POST", "http://wms.example:8080/fulfillments?token=s3cret")


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (httpx.ConnectTimeout("t", request=REQUEST), TransientUpstreamError),
        (httpx.ReadTimeout("t", request=REQUEST), TransientUpstreamError),
        (httpx.WriteTimeout("t", request=REQUEST), TransientUpstreamError),
        (httpx.PoolTimeout("t", request=REQUEST), TransientUpstreamError),
        (httpx.ConnectError("refused", request=REQUEST), TransientUpstreamError),
        (httpx.ReadError("reset", request=REQUEST), TransientUpstreamError),
        (httpx.RemoteProtocolError("closed", request=REQUEST), TransientUpstreamError),
        (httpx.ProxyError("proxy", request=REQUEST), TransientUpstreamError),
        (httpx.UnsupportedProtocol("ftp", request=REQUEST), PermanentUpstreamError),
        (httpx.LocalProtocolError("bad", request=REQUEST), PermanentUpstreamError),
        (httpx.DecodingError("gzip", request=REQUEST), PermanentUpstreamError),
        (httpx.TooManyRedirects("loop", request=REQUEST), PermanentUpstreamError),
    ],
)
def test_httpx_failures_are_classified_by_what_a_retry_can_fix(
    error: httpx.HTTPError, kind: type[Exception]
) -> None:
    """Timeouts and lost connections retry; a wrong scheme or our own bad request never will."""
    translated = translate_http_error(error, system="wh", operation="POST /fulfillments")
    assert type(translated) is kind
    assert translated.system == "wh"
    assert "s3cret" not in str(translated)  # the URL's query string never reaches a message


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (500, TransientUpstreamError),
        (502, TransientUpstreamError),
        (503, TransientUpstreamError),
        (408, TransientUpstreamError),
        (429, TransientUpstreamError),
        (400, PermanentUpstreamError),
        (401, PermanentUpstreamError),
        (404, PermanentUpstreamError),
        (409, PermanentUpstreamError),
        (422, PermanentUpstreamError),
    ],
)
def test_statuses_split_into_retry_and_dead_letter(status: int, kind: type[Exception]) -> None:
    """5xx, 408 and 429 are worth retrying; every other 4xx is a wrong request."""
    error = status_error(
        httpx.Response(status, request=REQUEST), system="wh", operation="POST /fulfillments"
    )
    assert type(error) is kind
    assert error.status_code == status
    assert str(error).startswith(f"wh: {status} on POST /fulfillments")


def test_retry_after_seconds_are_kept_for_the_dispatcher() -> None:
    """A 503 or 429 with Retry-After tells the outbox how long to wait."""
    response = httpx.Response(503, headers={"Retry-After": "7"}, request=REQUEST)
    error = status_error(response, system="wh", operation="GET /stock")
    assert error.retry_after == 7.0
    dated = httpx.Response(
        429, headers={"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"}, request=REQUEST
    )
    assert status_error(dated, system="wh", operation="GET /stock").retry_after is None


def test_status_error_raised_by_raise_for_status_is_translated_by_status() -> None:
    """A caller that used raise_for_status() still gets the status-based kind."""
    response = httpx.Response(502, request=REQUEST)
    exc = httpx.HTTPStatusError("bad gateway", request=REQUEST, response=response)
    assert isinstance(translate_http_error(exc, system="wh", operation="x"), TransientUpstreamError)


class _Point(msgspec.Struct):
    x: int


class _NotOurs(PermanentUpstreamError):
    pass


def test_an_answer_in_the_protocol_decodes() -> None:
    response = httpx.Response(200, content=b'{"x": 3}', request=REQUEST)
    point = decode_answer(
        msgspec.json.Decoder(_Point), response, system="wms", operation="GET /p", protocol="p's"
    )
    assert point == _Point(3)


@pytest.mark.parametrize("body", [b"<html>login</html>", b'{"x": "three"}', b"", b"{" * 5000])
def test_an_answer_outside_the_protocol_is_permanent_and_names_it(body: bytes) -> None:
    response = httpx.Response(200, content=body, request=REQUEST)
    with pytest.raises(UpstreamError) as caught:
        decode_answer(
            msgspec.json.Decoder(_Point),
            response,
            system="wms",
            operation="GET /p",
            protocol="the rest protocol's",
            error=_NotOurs,
        )
    error = caught.value
    assert isinstance(error, _NotOurs)
    assert error.status_code == 200
    assert error.operation == "GET /p"
    assert str(error).startswith("wms: 200 on GET /p with a body that is not the rest protocol's")
    assert str(error).endswith("check the configured url")
    assert len(str(error)) < 400  # a huge body never pours into the message


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b'{"error": {"code": "conflict", "message": "packed"}}', "conflict: packed"),
        (b'{"error": {"code": "not_found"}}', "not_found"),
        (b"<html>502</html>", ""),
        (b'{"error": "flat"}', ""),
        (b'{"error": {"code": "x", "message": "' + b"m" * 1000 + b'"}}', "x: " + "m" * 197),
    ],
)
def test_somsd_error_detail_reads_only_somsds_error_shape(body: bytes, detail: str) -> None:
    assert somsd_error_detail(body) == detail
