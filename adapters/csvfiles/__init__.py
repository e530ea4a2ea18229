"""The `csv` location adapter: fulfilments out and statuses and stock in, as files in folders.

For warehouses whose WMS imports and exports files on a share instead of offering an API
(`[[location]] adapter = "csv"`). The file formats are in `wire` (pure parsing and formatting,
`;`-separated UTF-8 with a header row); `client.CsvLocation` does the folder work — atomic
writes (temp name in the same folder, fsync, rename), each inbound file handled once and moved
to `processed/`, refused rows quarantined with their line numbers while the good rows of the
same file still count; `mapping` converts to and from the canonical model; `errors` translates
file-system failures into the shared transient/permanent kinds; `simulator` is a file-based
warehouse for `somsd demo` and the tests.
"""

from adapters.csvfiles.client import PROCESSED, QUARANTINE, CsvLocation, InboundFile
from adapters.csvfiles.errors import translate_os_error
from adapters.csvfiles.mapping import fulfillment_file, rejection_reason, stock_reports
from adapters.csvfiles.simulator import CsvWarehouseSimulator
from adapters.csvfiles.wire import (
    FulfillmentFile,
    FulfillmentRow,
    MalformedFile,
    Parsed,
    RowProblem,
    StatusFile,
    StatusRow,
    StockFile,
    StockRow,
    format_fulfillment,
    format_status,
    format_stock,
    parse_fulfillment,
    parse_inbound,
    parse_status,
    parse_stock,
)

__all__ = [
    "PROCESSED",
    "QUARANTINE",
    "CsvLocation",
    "CsvWarehouseSimulator",
    "FulfillmentFile",
    "FulfillmentRow",
    "InboundFile",
    "MalformedFile",
    "Parsed",
    "RowProblem",
    "StatusFile",
    "StatusRow",
    "StockFile",
    "StockRow",
    "format_fulfillment",
    "format_status",
    "format_stock",
    "fulfillment_file",
    "parse_fulfillment",
    "parse_inbound",
    "parse_status",
    "parse_stock",
    "rejection_reason",
    "stock_reports",
    "translate_os_error",
]
