"""The `rest` fulfilment protocol: somsd's generic API for warehouses, 3PLs and WMSs.

Most small fulfilment partners have no API, or a different one per customer; somsd therefore
defines one short protocol (`PROTOCOL.md`, next to this file) and speaks it as `adapter =
"rest"` in a `[[location]]`. In one paragraph: somsd POSTs a fulfilment (id, order reference,
ship-to address, lines of SKU and quantity, ship or pickup) with an `Idempotency-Key`, so a
retry after a timeout never creates a second one; the WMS moves it through accepted -> picked ->
packed -> shipped (carrier, tracking number) or -> ready_for_pickup -> picked_up, rejecting
lines it cannot fill (out_of_stock | damaged); somsd learns of changes from signed callbacks or
by polling a change cursor (`GET /fulfillments?updated_since=`), and reads absolute stock from
`GET /stock`.

Modules: `wire` (the JSON bodies), `client` (`ThreePLClient`, one method per operation),
`callback` (signing and verifying status callbacks), `mapping` (canonical model <-> wire,
pure), `errors` (protocol-specific subclasses of `adapters.errors`), `simulator`
(`ThreePLSimulator`, the reference server with failure knobs, used by `somsd demo` and tests).
"""

from adapters.threepl.callback import decode_callback, encode_callback
from adapters.threepl.client import ThreePLClient
from adapters.threepl.errors import (
    FulfillmentConflict,
    FulfillmentNotFound,
    InvalidCallback,
    ProtocolViolation,
)
from adapters.threepl.mapping import (
    RejectedLine,
    fulfillment_request,
    rejected_lines,
    rejection_reason,
    shipped_lines,
    stock_report,
)
from adapters.threepl.simulator import (
    RecordedRequest,
    ThreePLKnobs,
    ThreePLSimulator,
    WebhookTarget,
)
from adapters.threepl.wire import (
    Fulfillment,
    FulfillmentLine,
    FulfillmentRequest,
    StatusCallback,
    StockSnapshot,
    UpdatesPage,
)

__all__ = [
    "Fulfillment",
    "FulfillmentConflict",
    "FulfillmentLine",
    "FulfillmentNotFound",
    "FulfillmentRequest",
    "InvalidCallback",
    "ProtocolViolation",
    "RecordedRequest",
    "RejectedLine",
    "StatusCallback",
    "StockSnapshot",
    "ThreePLClient",
    "ThreePLKnobs",
    "ThreePLSimulator",
    "UpdatesPage",
    "WebhookTarget",
    "decode_callback",
    "encode_callback",
    "fulfillment_request",
    "rejected_lines",
    "rejection_reason",
    "shipped_lines",
    "stock_report",
]
