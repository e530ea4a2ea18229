"""Per-supplier extraction templates for text PDFs (invoice2data-style YAML, our own format).

A template names its supplier by `keywords` (regular expressions that must all occur in the
PDF's text: the VAT ID, the IBAN), says which fields to read with one regex each (group 1 is
the value), and how to read the line table (`lines`: `start`, `end`, one `line` regex with
named groups) and optionally the VAT table (`taxes`). Templates are data: they live in the
inbox's template folder, are loaded with the config and reloaded with it; each records its
`version` and the SHA-256 of its text, which go into the audit trail of every invoice read
with it. A template is written for one text backend (`backend`), because the same PDF reads
differently in another: only templates for the pinned backend are loaded.

Example::

    issuer: Muster Bürobedarf GmbH
    version: 3
    backend: pypdf-layout
    keywords: ['DE ?136695976']
    static: {currency: EUR, seller_name: Muster Bürobedarf GmbH}
    fields:
      number: 'Rechnungsnummer:\\s*(\\S+)'
      issue_date: 'Datum:\\s*(\\d\\d\\.\\d\\d\\.\\d{4})'
      grand_total: 'Gesamtbetrag\\s+([\\d.,]+)'
    lines:
      start: 'Pos\\s+Artikel'
      end: 'Nettobetrag'
      line: '(?P<line_id>\\d+)\\s+(?P<article>\\S+)\\s+(?P<name>.+?)\\s+(?P<quantity>[\\d,]+)...'
      tax_rate: '19'
    options: {decimal_separator: ',', date_formats: ['%d.%m.%Y']}
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final

import msgspec
import yaml

from somsd.supplier_invoices.model import InvoiceLine, SupplierInvoice, TaxBreakdown

__all__ = [
    "BACKEND",
    "ExtractionError",
    "LineTable",
    "Template",
    "TemplateError",
    "apply_template",
    "load_template",
    "pick_template",
]

BACKEND: Final = "pypdf-layout"  # the one text backend templates are written for

# Header fields a template may read (BT terms of `SupplierInvoice`).
_TEXT_FIELDS: Final = frozenset(
    {
        "number",
        "type_code",
        "currency",
        "buyer_reference",
        "purchase_order",
        "seller_name",
        "seller_vat_id",
        "seller_tax_number",
        "buyer_name",
        "iban",
        "bic",
    }
)
_DATE_FIELDS: Final = frozenset({"issue_date", "due_date"})
_AMOUNT_FIELDS: Final = frozenset(
    {
        "line_total",
        "allowances",
        "charges",
        "tax_basis_total",
        "tax_total",
        "grand_total",
        "prepaid",
        "due_amount",
    }
)
_FIELDS: Final = _TEXT_FIELDS | _DATE_FIELDS | _AMOUNT_FIELDS
_LINE_GROUPS: Final = frozenset(
    {"line_id", "article", "name", "quantity", "unit", "net_price", "net_amount", "tax_rate",
     "order_reference"}
)  # fmt: skip
_LINE_REQUIRED: Final = frozenset({"article", "quantity", "net_price", "net_amount"})
_TAX_GROUPS: Final = frozenset({"rate", "basis", "tax"})


class TemplateError(ValueError):
    """A template file that cannot be used; the message names the key."""


class ExtractionError(ValueError):
    """The template matched the supplier but a declared field could not be read."""


class LineTable(msgspec.Struct, frozen=True, kw_only=True):
    start: str
    end: str
    line: str
    tax_rate: str = ""  # the rate of every line when the table has no rate column


class Options(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    decimal_separator: str = "."
    thousands_separator: str = ""
    date_formats: tuple[str, ...] = ("%Y-%m-%d",)
    tax_rate: str = ""  # single-rate invoices: BT-119 for the VAT fields below


class Template(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    issuer: str
    version: int = 1
    backend: str = BACKEND
    supplier: str = ""  # our supplier number, when the VAT ID alone does not say it
    keywords: tuple[str, ...]
    exclude_keywords: tuple[str, ...] = ()
    priority: int = 0
    static: dict[str, str] = msgspec.field(default_factory=dict)
    fields: dict[str, str] = msgspec.field(default_factory=dict)
    required_fields: tuple[str, ...] = ()
    lines: LineTable | None = None
    taxes: LineTable | None = None
    options: Options = msgspec.field(default_factory=Options)
    sha256: str = ""  # of the file's text, filled in by `load_template`
    name: str = ""  # the file name, filled in by `load_template`

    def declared_fields(self) -> list[str]:
        """The header fields this template reads from the text (what precision is measured
        on), plus "lines" when it reads a line table."""
        return sorted(self.fields) + (["lines"] if self.lines else [])


def _compile(pattern: str, where: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern, re.MULTILINE)
    except re.error as exc:
        raise TemplateError(f"{where}: not a regular expression: {exc}") from None


def load_template(name: str, text: str) -> Template:
    """Parse and check one template file (`name` for messages and the audit)."""
    try:
        raw: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TemplateError(f"{name}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise TemplateError(f"{name}: expected a mapping at the top")
    try:
        template = msgspec.convert(raw, Template)
    except msgspec.ValidationError as exc:
        raise TemplateError(f"{name}: {exc}") from None
    if template.backend != BACKEND:
        raise TemplateError(
            f"{name}: backend {template.backend!r}; somsd reads PDFs with {BACKEND}"
        )
    if not template.keywords:
        raise TemplateError(f"{name}: keywords: at least one (the VAT ID or the IBAN)")
    for index, keyword in enumerate((*template.keywords, *template.exclude_keywords)):
        _compile(keyword, f"{name}: keywords[{index}]")
    for field, pattern in template.fields.items():
        if field not in _FIELDS:
            raise TemplateError(f"{name}: fields.{field}: unknown field")
        if _compile(pattern, f"{name}: fields.{field}").groups < 1:
            raise TemplateError(f"{name}: fields.{field}: needs a group (the value)")
    for field in template.static:
        if field not in _TEXT_FIELDS:
            raise TemplateError(f"{name}: static.{field}: only text fields can be static")
    for field in template.required_fields:
        if field not in _FIELDS and field != "lines":
            raise TemplateError(f"{name}: required_fields: unknown field {field!r}")
    for key, table, allowed, required in (
        ("lines", template.lines, _LINE_GROUPS, _LINE_REQUIRED),
        ("taxes", template.taxes, _TAX_GROUPS, _TAX_GROUPS),
    ):
        if table is None:
            continue
        _compile(table.start, f"{name}: {key}.start")
        _compile(table.end, f"{name}: {key}.end")
        groups = set(_compile(table.line, f"{name}: {key}.line").groupindex)
        if groups - allowed:
            raise TemplateError(f"{name}: {key}.line: unknown groups {sorted(groups - allowed)}")
        if required - groups:
            raise TemplateError(f"{name}: {key}.line: needs groups {sorted(required - groups)}")
    digest = hashlib.sha256(text.encode()).hexdigest()
    return msgspec.structs.replace(template, sha256=digest, name=name)


def pick_template(text: str, templates: Sequence[Template]) -> Template | None:
    """The template whose keywords all occur in `text` (highest priority); None when no
    template matches, or when two of the same priority do (never guess between suppliers)."""
    matching = [
        template
        for template in templates
        if all(re.search(keyword, text, re.MULTILINE) for keyword in template.keywords)
        and not any(re.search(keyword, text, re.MULTILINE) for keyword in template.exclude_keywords)
    ]
    if not matching:
        return None
    best = max(template.priority for template in matching)
    top = [template for template in matching if template.priority == best]
    return top[0] if len(top) == 1 else None


def _amount(text: str, options: Options, where: str) -> Decimal:
    cleaned = text.strip().replace(" ", "")
    if options.thousands_separator:
        cleaned = cleaned.replace(options.thousands_separator, "")
    if options.decimal_separator != ".":
        cleaned = cleaned.replace(options.decimal_separator, ".")
    cleaned = cleaned.removesuffix("%")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        raise ExtractionError(f"{where}: {text[:40]!r} is not a number") from None
    if not value.is_finite():
        raise ExtractionError(f"{where}: {text[:40]!r} is not a number")
    return value


def _date(text: str, options: Options, where: str) -> date:
    for pattern in options.date_formats:
        try:
            return datetime.strptime(text.strip(), pattern).date()  # a date, no zone
        except ValueError:
            continue
    raise ExtractionError(f"{where}: {text[:40]!r} matches none of {list(options.date_formats)}")


def _table(text: str, table: LineTable, where: str) -> list[dict[str, str]]:
    start = re.search(table.start, text, re.MULTILINE)
    if start is None:
        raise ExtractionError(f"{where}.start: not found")
    end = re.compile(table.end, re.MULTILINE).search(text, start.end())
    if end is None:
        raise ExtractionError(f"{where}.end: not found")
    body = text[start.end() : end.start()]
    pattern = re.compile(table.line)
    rows: list[dict[str, str]] = []
    for raw_line in body.splitlines():
        match = pattern.search(raw_line)
        if match is not None:
            rows.append({k: v for k, v in match.groupdict().items() if v is not None})
    return rows


def apply_template(text: str, template: Template) -> SupplierInvoice:
    """Read the invoice from `text` with `template`: every declared field is read or the
    whole extraction fails (`ExtractionError`); nothing is filled in that the text does not
    say, except the template's static values."""
    options = template.options
    values: dict[str, Any] = dict(template.static)
    for field, pattern in template.fields.items():
        match = re.search(pattern, text, re.MULTILINE)
        if match is None or match.group(1) is None:
            if field in template.required_fields:
                raise ExtractionError(f"fields.{field}: not found")
            continue
        raw = match.group(1).strip()
        where = f"fields.{field}"
        if field in _AMOUNT_FIELDS:
            values[field] = _amount(raw, options, where)
        elif field in _DATE_FIELDS:
            values[field] = _date(raw, options, where)
        elif field in ("iban", "seller_vat_id"):
            values[field] = raw.replace(" ", "")
        else:
            values[field] = raw
    lines: list[InvoiceLine] = []
    if template.lines is not None:
        for index, row in enumerate(_table(text, template.lines, "lines"), start=1):
            where = f"lines[{index}]"
            rate = row.get("tax_rate") or template.lines.tax_rate or options.tax_rate
            if not rate:
                raise ExtractionError(f"{where}: no tax rate (a tax_rate group or lines.tax_rate)")
            lines.append(
                InvoiceLine(
                    line_id=row.get("line_id") or str(index),
                    article=row["article"].strip(),
                    name=" ".join(row.get("name", "").split()),
                    quantity=_amount(row["quantity"], options, f"{where}.quantity"),
                    unit=row.get("unit") or "H87",
                    net_price=_amount(row["net_price"], options, f"{where}.net_price"),
                    net_amount=_amount(row["net_amount"], options, f"{where}.net_amount"),
                    tax_rate=_amount(rate, options, f"{where}.tax_rate"),
                    order_reference=row.get("order_reference", "").strip(),
                )
            )
        if not lines and "lines" in template.required_fields:
            raise ExtractionError("lines: no line matched")
    taxes: list[TaxBreakdown] = []
    if template.taxes is not None:
        for index, row in enumerate(_table(text, template.taxes, "taxes"), start=1):
            where = f"taxes[{index}]"
            taxes.append(
                TaxBreakdown(
                    rate=_amount(row["rate"], options, f"{where}.rate"),
                    basis=_amount(row["basis"], options, f"{where}.basis"),
                    tax=_amount(row["tax"], options, f"{where}.tax"),
                )
            )
    elif options.tax_rate and "tax_total" in values and "tax_basis_total" in values:
        # A single-rate invoice states its VAT once: that is the breakdown of its one rate.
        taxes.append(
            TaxBreakdown(
                rate=_amount(options.tax_rate, options, "options.tax_rate"),
                basis=values["tax_basis_total"],
                tax=values["tax_total"],
            )
        )
    values["lines"] = tuple(lines)
    values["taxes"] = tuple(taxes)
    return msgspec.convert(values, SupplierInvoice, from_attributes=False, strict=False)


def templates_by_name(templates: Sequence[Template]) -> Mapping[str, Template]:
    return {template.name: template for template in templates}
