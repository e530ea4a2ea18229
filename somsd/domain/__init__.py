"""The pure domain: values in, values or decisions out — no I/O, no clock, no event loop.

Actors call these functions and do the I/O around them (see `shared/design/style.md`, "Pure
domain"); tests call them directly. Each module holds one concept; this front door re-exports
the names other packages use, grouped by the engineer who owns them.
"""

# --- Orders: canonical model, lifecycle, invoicing, cancellations, returns -------------------
# (somsd/domain/{money,countries,errors,order,status,holds,documents,events,state,policy,
#  guards,numbering,invoicing,refunds,lifecycle,cancellation,returns,reorder}.py)
from somsd.domain.cancellation import cancel_lines, cancel_order
from somsd.domain.documents import DocumentLine, InvoiceDocument, TaxSubtotal, build_document
from somsd.domain.errors import (
    Conflict,
    DomainError,
    DuplicateCommand,
    IllegalTransition,
    InvalidCommand,
    InvalidOrder,
    Problem,
    StatusConfigError,
)
from somsd.domain.events import (
    UNNUMBERED,
    CreditNoteIssued,
    HoldReleased,
    InvoiceDrafted,
    InvoiceIssued,
    LineQuantity,
    LinesCanceled,
    LinesShipped,
    OrderAccepted,
    OrderCanceled,
    OrderCopied,
    OrderEvent,
    OrderHeld,
    OrderReceived,
    PaymentRecorded,
    RefundRecorded,
    ReturnApproved,
    ReturnedLine,
    ReturnReceived,
    ReturnRefunded,
    ReturnRejected,
    ReturnRequested,
    StatusChanged,
    decode_event,
    decode_events,
    encode_event,
)
from somsd.domain.holds import HoldReason, HoldRules, evaluate_holds
from somsd.domain.invoicing import issue_invoice
from somsd.domain.lifecycle import (
    allowed_transitions,
    change_status,
    hold_order,
    receive_order,
    record_payment,
    record_shipment,
    release_hold,
)
from somsd.domain.money import allocate, round_money, split_evenly, tax_from_gross
from somsd.domain.numbering import NumberSeries, number_documents, numbering_problems
from somsd.domain.order import (
    Address,
    Customer,
    Order,
    OrderLine,
    Payment,
    Shipping,
    decode_order,
    order_gross,
    validate_order,
)
from somsd.domain.policy import InvoicingPolicy, OrderPolicy
from somsd.domain.refunds import record_refund
from somsd.domain.reorder import CopyDecision, copy_order
from somsd.domain.returns import (
    approve_return,
    receive_return,
    refund_return,
    reject_return,
    request_return,
)
from somsd.domain.state import OrderState, apply, fold, invariant_violations
from somsd.domain.status import CustomStatus, StatusMachine, build_status_machine

__all__ = [
    "UNNUMBERED",
    "Address",
    "Conflict",
    "CopyDecision",
    "CreditNoteIssued",
    "CustomStatus",
    "Customer",
    "DocumentLine",
    "DomainError",
    "DuplicateCommand",
    "HoldReason",
    "HoldReleased",
    "HoldRules",
    "IllegalTransition",
    "InvalidCommand",
    "InvalidOrder",
    "InvoiceDocument",
    "InvoiceDrafted",
    "InvoiceIssued",
    "InvoicingPolicy",
    "LineQuantity",
    "LinesCanceled",
    "LinesShipped",
    "NumberSeries",
    "Order",
    "OrderAccepted",
    "OrderCanceled",
    "OrderCopied",
    "OrderEvent",
    "OrderHeld",
    "OrderLine",
    "OrderPolicy",
    "OrderReceived",
    "OrderState",
    "Payment",
    "PaymentRecorded",
    "Problem",
    "RefundRecorded",
    "ReturnApproved",
    "ReturnReceived",
    "ReturnRefunded",
    "ReturnRejected",
    "ReturnRequested",
    "ReturnedLine",
    "Shipping",
    "StatusChanged",
    "StatusConfigError",
    "StatusMachine",
    "TaxSubtotal",
    "allocate",
    "allowed_transitions",
    "apply",
    "approve_return",
    "build_document",
    "build_status_machine",
    "cancel_lines",
    "cancel_order",
    "change_status",
    "copy_order",
    "decode_event",
    "decode_events",
    "decode_order",
    "encode_event",
    "evaluate_holds",
    "fold",
    "hold_order",
    "invariant_violations",
    "issue_invoice",
    "number_documents",
    "numbering_problems",
    "order_gross",
    "receive_order",
    "receive_return",
    "record_payment",
    "record_refund",
    "record_shipment",
    "refund_return",
    "reject_return",
    "release_hold",
    "request_return",
    "round_money",
    "split_evenly",
    "tax_from_gross",
    "validate_order",
]
# --- end of orders block ----------------------------------------------------------------------
