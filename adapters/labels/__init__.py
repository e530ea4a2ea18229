"""Shipping labels of our own: a small ZPL II builder, reportlab PDF labels, raw TCP printing.

DHL sends its own label (it carries DHL's routing code) and somsd prints that; these are for
carriers without a label of their own (own fleet, pickup slips) and for the DHL simulator.
The `zpl` package on PyPI is AGPL-3.0 and must not ship in an on-prem product, hence our own.
"""

from adapters.labels.pdf import parcel_label_pdf, pickup_slip_pdf
from adapters.labels.printer import PrinterAddress, send_raw
from adapters.labels.zpl import ZplLabel, escape_field, parcel_label_zpl, unescape_field

__all__ = [
    "PrinterAddress",
    "ZplLabel",
    "escape_field",
    "parcel_label_pdf",
    "parcel_label_zpl",
    "pickup_slip_pdf",
    "send_raw",
    "unescape_field",
]
