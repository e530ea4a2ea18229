"""A small ZPL II builder: text, Code 128 barcodes, boxes, one label per `render()`.

Field data is always written with `^FH_` (field hexadecimal, escape character `_`) so that no
byte of a customer's name can be read as a command: `^` and `~` start ZPL commands anywhere in
the stream, so "Müller ^XZ~JA" would otherwise end the label and cancel the printer's jobs. Every
byte outside printable ASCII, and `^`, `~` and `_` themselves, is written as `_XX` (the UTF-8
bytes, with `^CI28` selecting UTF-8 so the printer decodes them back). Sizes are in dots; the
default page is 4x6 in at 203 dpi (812 x 1218 dots).
"""

from __future__ import annotations

import re
from typing import Final, Self

__all__ = ["ZplLabel", "escape_field", "parcel_label_zpl", "unescape_field"]

DOTS_4X6: Final = (812, 1218)
_PLAIN: Final = frozenset(range(0x20, 0x7F)) - {ord("^"), ord("~"), ord("_")}
_HEX: Final = re.compile(r"_([0-9A-F]{2})")


def escape_field(text: str) -> str:
    """`text` as `^FH_` field data: safe ASCII as it is, everything else as `_XX`."""
    return "".join(chr(b) if b in _PLAIN else f"_{b:02X}" for b in text.encode("utf-8"))


def unescape_field(data: str) -> str:
    """What a printer decodes `escape_field`'s output back to (for tests and previews)."""
    raw = bytearray()
    index = 0
    while index < len(data):
        match = _HEX.match(data, index)
        if match:
            raw.append(int(match[1], 16))
            index = match.end()
        else:
            raw.extend(data[index].encode("ascii"))
            index += 1
    return raw.decode("utf-8")


class ZplLabel:
    """Build one label; each method adds a field and returns the builder."""

    def __init__(self, width: int = DOTS_4X6[0], height: int = DOTS_4X6[1]) -> None:
        if not (1 <= width <= 32000 and 1 <= height <= 32000):
            raise ValueError("label width and height are 1..32000 dots")
        self.width = width
        self.height = height
        self._fields: list[str] = []

    def text(self, x: int, y: int, text: str, *, size: int = 30) -> Self:
        self._fields.append(f"^FO{x},{y}^A0N,{size},{size}^FH_^FD{escape_field(text)}^FS")
        return self

    def block(
        self, x: int, y: int, text: str, *, width: int, lines: int = 3, size: int = 30
    ) -> Self:
        """Text wrapped into at most `lines` lines of `width` dots (`^FB`)."""
        self._fields.append(
            f"^FO{x},{y}^A0N,{size},{size}^FB{width},{lines},0,L,0^FH_^FD{escape_field(text)}^FS"
        )
        return self

    def code128(
        self, x: int, y: int, data: str, *, height: int = 120, readable: bool = True
    ) -> Self:
        line = "Y" if readable else "N"
        self._fields.append(
            f"^FO{x},{y}^BY3^BCN,{height},{line},N,N,N^FH_^FD{escape_field(data)}^FS"
        )
        return self

    def box(self, x: int, y: int, width: int, height: int, *, thickness: int = 3) -> Self:
        self._fields.append(f"^FO{x},{y}^GB{width},{height},{thickness}^FS")
        return self

    def render(self) -> str:
        body = "\n".join(self._fields)
        return f"^XA\n^CI28\n^PW{self.width}\n^LL{self.height}\n{body}\n^XZ\n"


def parcel_label_zpl(
    *,
    carrier: str,
    tracking_number: str,
    sender: list[str],
    receiver: list[str],
    reference: str = "",
    weight_grams: int | None = None,
    routing_code: str | None = None,
) -> str:
    """A 4x6 parcel label: carrier, sender, receiver, reference, weight and the tracking
    barcode (Code 128). Address lines are printed as given, one per line."""
    label = ZplLabel()
    label.text(40, 40, carrier, size=60)
    if weight_grams is not None:
        label.text(560, 50, f"{weight_grams / 1000:.2f} kg", size=40)
    label.box(30, 120, 752, 3, thickness=3)
    label.text(40, 140, "From:", size=24)
    for index, line in enumerate(sender[:4]):
        label.text(40, 170 + index * 28, line, size=24)
    label.box(30, 300, 752, 3, thickness=3)
    label.text(40, 320, "To:", size=30)
    for index, line in enumerate(receiver[:5]):
        label.text(40, 360 + index * 48, line, size=44)
    if routing_code:
        label.text(40, 640, routing_code, size=36)
    if reference:
        label.text(40, 700, f"Ref: {reference}", size=28)
    label.code128(60, 780, tracking_number, height=200)
    return label.render()
