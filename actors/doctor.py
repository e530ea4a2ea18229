"""`somsd doctor`: can somsd work with each configured external system? One line per check.

Each check says what it found and, when it fails, what to change. For `kind = "smartstore"`
channels: the shop answers at all, over https, accepts the key pair (naming the shop's
AuthResult reason), lets the API user read Orders and Products, takes a harmless write (a
product's stock PATCHed to the value it already has), and its clock is close enough to ours
for the poll overlap to cover the difference. For `[notify]`: the SMTP relay is reached, does
STARTTLS (or implicit TLS) with a trusted certificate and accepts the login, all without
sending a mail, and the template folder, if configured, exists. For `[[erp]] kind =
"selectline"`: `GET /Info` answers, a login gets a licence seat (402 named as such) and is
given back, articles and documents can be read, every mapped warehouse exists, and the ERP's
clock (`ServerTimeInUtc`) is within a minute of ours. For `[[carrier]]`: see
`actors.carrier.check_carrier`. Other kinds add their checks here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar
from urllib.parse import urlsplit

import httpx
import msgspec

from actors.carrier import check_carrier
from adapters.errors import UpstreamError
from adapters.selectline.client import SelectLineClient
from adapters.selectline.errors import SelectLineNoLicence
from adapters.smartstore.client import SmartstoreClient, smartstore_http_client
from adapters.smartstore.errors import AUTH_FIXES, SmartstoreAuthError
from somsd.config import ChannelConfig, Config, ErpConfig, NotifyConfig

__all__ = ["Check", "check_config", "check_selectline", "check_smartstore", "check_smtp"]

T = TypeVar("T")

# Loopback shops are test and demo shops (the simulator): plain http is fine there.
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
# Without the shop in reach there is no point waiting long for each check.
_TIMEOUT = httpx.Timeout(5.0)


class Check(msgspec.Struct, frozen=True):
    system: str  # channel/shop
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        mark = "ok  " if self.ok else "FAIL"
        return f"{mark} {self.system}: {self.name}: {self.detail}"


async def check_smartstore(section: ChannelConfig) -> list[Check]:
    system = f"channel/{section.name}"
    checks: list[Check] = []

    def add(name: str, ok: bool, detail: str) -> None:
        checks.append(Check(system, name, ok, detail))

    url = section.url or ""
    parts = urlsplit(url)
    if parts.scheme == "https":
        add("https", True, "the API is reached over https")
    elif parts.hostname in _LOOPBACK:
        add("https", True, "plain http to a loopback shop (test or demo)")
    else:
        add("https", False, f"{url} is plain http; the shop answers 421: use https://")
    secrets = section.secret_key_file.lines() if section.secret_key_file else []
    if not secrets or not section.public_key:
        add("credentials", False, "set public_key and secret_key_file")
        return checks
    async with smartstore_http_client(
        url, section.public_key, secrets[0].reveal(), timeout=_TIMEOUT
    ) as http:
        client = SmartstoreClient(http, system=system, read_attempts=1)
        try:
            probe = await client.probe()
        except SmartstoreAuthError as exc:
            add("reachable", True, f"{url} answers")
            reason = exc.access_denied
            fix = AUTH_FIXES.get(reason, str(exc)) if reason is not None else str(exc)
            add("credentials", False, f"{exc.reason or 'refused'}: {fix}")
            return checks
        except UpstreamError as exc:
            add("reachable", False, f"{exc}; check url and that the shop is up")
            return checks
        add("reachable", True, f"{url} answers (Smartstore {probe.app_version or '?'})")
        add("credentials", True, f"accepted (API customer {probe.customer_id or '?'})")
        await _step(add, "read orders", "GET Orders", lambda: _read_orders(client))
        product = await _step(add, "read products", "GET Products", lambda: client.products(top=1))
        if product is not None and product.products:
            first = product.products[0]
            await _step(
                add,
                "write products",
                f"PATCH Products({first.id}) with its own stock",
                lambda: client.patch_product(
                    first.id, {"StockQuantity": first.stock_quantity}, return_representation=False
                ),
            )
        else:
            add("write products", True, "no product to try a write on; skipped")
        if probe.clock_skew is None:
            add("clock", False, "the shop sent no Smartstore-Api-Date header")
        else:
            skew = abs(probe.clock_skew.total_seconds())
            limit = section.poll_overlap.seconds / 2
            add(
                "clock",
                skew <= limit,
                f"shop clock differs by {skew:.1f} s"
                + (
                    ""
                    if skew <= limit
                    else f"; more than half the poll_overlap ({limit:.0f} s): fix the clocks "
                    "(NTP) or raise poll_overlap"
                ),
            )
    return checks


async def _read_orders(client: SmartstoreClient) -> object:
    return await client.orders_since(datetime.now(UTC) - timedelta(days=1), top=1)


async def _step(
    add: Callable[[str, bool, str], None],
    name: str,
    what: str,
    call: Callable[[], Awaitable[T]],
) -> T | None:
    try:
        result = await call()
    except UpstreamError as exc:
        add(name, False, f"{what}: {exc}; give the API user's role this permission")
        return None
    add(name, True, f"{what} allowed")
    return result


async def check_smtp(notify: NotifyConfig) -> list[Check]:
    """Connect, STARTTLS/TLS and AUTH as configured, then QUIT: no mail is sent."""
    from dataclasses import replace

    import trio

    from actors.mailer import TARGET, smtp_settings
    from adapters.smtp.client import check_connection

    checks: list[Check] = []
    where = f"{notify.host}:{notify.port}"
    settings = smtp_settings(notify)
    try:
        # Doctor is run by a person waiting for the answer: five seconds per relay at most.
        done = await check_connection(replace(settings, timeout=min(settings.timeout, 5.0)))
    except UpstreamError as exc:
        checks.append(Check(TARGET, "smtp", False, str(exc)))
    else:
        checks.append(
            Check(TARGET, "smtp", True, f"{where}: " + ", ".join(done) + "; no mail sent")
        )
    if notify.template_dir is not None:
        found = await trio.Path(notify.template_dir).is_dir()
        checks.append(
            Check(
                TARGET,
                "templates",
                found,
                f"{notify.template_dir} "
                + ("overrides the built-in templates" if found else "is not a directory"),
            )
        )
    return checks


async def check_config(config: Config) -> list[Check]:
    checks: list[Check] = []
    for section in config.channel:
        if section.kind == "smartstore":
            checks.extend(await check_smartstore(section))
    for carrier in config.carrier:
        found = await check_carrier(carrier, config.location)
        checks.extend(Check(f"carrier/{carrier.name}", *check) for check in found)
    if config.notify is not None:
        checks.extend(await check_smtp(config.notify))
    checks.extend(await check_erps(config))
    return checks


async def check_erps(config: Config) -> list[Check]:
    checks: list[Check] = []
    for erp in config.erp:
        if erp.kind == "selectline":
            mapped = {w for location in config.location for w in location.warehouses}
            checks.extend(await check_selectline(erp, mapped | set(erp.warehouses)))
    return checks


# The ERP's clock dates documents and open items; a minute apart is still the same business day
# for all but the last minute of it.
_ERP_CLOCK_LIMIT = 60.0


async def check_selectline(section: ErpConfig, warehouses: set[str]) -> list[Check]:
    system = f"erp/{section.name}"
    checks: list[Check] = []

    def add(name: str, ok: bool, detail: str) -> None:
        checks.append(Check(system, name, ok, detail))

    url = section.url or ""
    lines = section.password_file.lines() if section.password_file else []
    async with httpx.AsyncClient(base_url=url, timeout=_TIMEOUT) as http:
        client = SelectLineClient(
            http,
            system=system,
            user=section.user,
            password=lines[0].reveal() if lines else "",
            app_key=section.app_key,
        )
        try:
            info = await client.info()
        except UpstreamError as exc:
            add("reachable", False, f"{exc}; check url and that the SelectLine API runs")
            return checks
        add(
            "reachable",
            True,
            f"{url} answers ({info.Product or 'SelectLine API'} {info.Version or '?'})",
        )
        try:
            await client.login()
        except SelectLineNoLicence as exc:
            add("login", False, f"{exc.message}; free a seat or license one more")
            return checks
        except UpstreamError as exc:
            add("login", False, str(exc))
            return checks
        add("login", True, f"user {section.user} logged in (a licence seat was free)")
        try:
            await _step(add, "read articles", "GET /Articles", client.articles)
            await _step(
                add, "read documents", "GET /Documents", lambda: client.documents(KindFlag="F")
            )
            found = await _step(add, "read warehouses", "GET /Warehouses", client.warehouses)
            if found is not None:
                known = {w.Number for w in found}
                missing = sorted(warehouses - known)
                add(
                    "warehouses",
                    not missing,
                    f"missing in the ERP: {', '.join(missing)}; fix `warehouses`"
                    if missing
                    else f"all {len(warehouses)} mapped warehouses exist",
                )
        finally:
            await client.logout()
        skew = _erp_skew(info.ServerTimeInUtc)
        if skew is None:
            add("clock", False, "the ERP sent no readable ServerTimeInUtc")
        else:
            ok = skew <= _ERP_CLOCK_LIMIT
            add(
                "clock",
                ok,
                f"ERP clock differs by {skew:.1f} s"
                + ("" if ok else "; fix the clocks (NTP): documents would be dated wrongly"),
            )
    return checks


def _erp_skew(stamp: str | None) -> float | None:
    if not stamp:
        return None
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return abs((datetime.now(UTC) - moment).total_seconds())
