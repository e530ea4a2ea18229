"""Turn a reportlab PDF into a PDF/A-3b with an embedded e-invoice, byte for byte reproducible.

Neither reportlab nor the e-invoice libraries make real PDF/A-3 (see the e-invoicing reference):
this adds what the standard asks for and they leave out — an sRGB OutputIntent, XMP metadata
that matches the Info dictionary and declares the Factur-X extension schema, the XML as an
associated file (`/AF`) — and fixes everything that would vary between two renderings: dates
are the document's date, the file identifier is a hash of the content. Fonts are embedded by
the renderer (`render.py` uses TrueType fonts only). Not checked with veraPDF here.
"""

from __future__ import annotations

import hashlib
import io
from datetime import date
from functools import cache
from typing import Final
from xml.sax.saxutils import escape

from PIL import ImageCms
from pypdf import PdfReader, PdfWriter
from pypdf.generic import (
    ArrayObject,
    ByteStringObject,
    DecodedStreamObject,
    DictionaryObject,
    NameObject,
    NumberObject,
    StreamObject,
    TextStringObject,
)

__all__ = ["PRODUCER", "make_pdfa", "srgb_profile"]

PRODUCER: Final = "somsd"
_ICC_DATE: Final = slice(24, 36)  # the profile header's creation dateTimeNumber
_ICC_ID: Final = slice(84, 100)  # the profile ID (MD5); all zero means "not computed"


@cache
def srgb_profile() -> bytes:
    """An sRGB ICC profile with its creation date and ID zeroed, so it is the same every time."""
    profile = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    profile[_ICC_DATE] = bytes(12)
    profile[_ICC_ID] = bytes(16)
    return bytes(profile)


def _pdf_date(day: date) -> str:
    return f"D:{day:%Y%m%d}000000Z"


# The Factur-X properties, declared in the XMP as PDF/A demands for any non-standard schema.
_FX_PROPERTIES: Final = (
    ("DocumentFileName", "The name of the embedded XML document"),
    ("DocumentType", "The type of the hybrid document in capital letters, e.g. INVOICE"),
    ("Version", "The version of the XML schema"),
    ("ConformanceLevel", "The conformance level of the embedded XML document"),
)


def _extension_properties() -> str:
    return "\n".join(
        '<rdf:li rdf:parseType="Resource">'
        f"<pdfaProperty:name>{name}</pdfaProperty:name>"
        "<pdfaProperty:valueType>Text</pdfaProperty:valueType>"
        "<pdfaProperty:category>external</pdfaProperty:category>"
        f"<pdfaProperty:description>{description}</pdfaProperty:description></rdf:li>"
        for name, description in _FX_PROPERTIES
    )


def _xmp(title: str, day: date, attachment: str, conformance: str) -> bytes:
    stamp = f"{day.isoformat()}T00:00:00Z"
    fx = "urn:factur-x:pdfa:CrossIndustryDocument:invoice:1p0#"
    xmp = f"""<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/">
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description rdf:about="" xmlns:pdfaid="http://www.aiim.org/pdfa/ns/id/">
<pdfaid:part>3</pdfaid:part>
<pdfaid:conformance>B</pdfaid:conformance>
</rdf:Description>
<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/">
<dc:title><rdf:Alt><rdf:li xml:lang="x-default">{escape(title)}</rdf:li></rdf:Alt></dc:title>
<dc:creator><rdf:Seq><rdf:li>{PRODUCER}</rdf:li></rdf:Seq></dc:creator>
</rdf:Description>
<rdf:Description rdf:about="" xmlns:pdf="http://ns.adobe.com/pdf/1.3/">
<pdf:Producer>{PRODUCER}</pdf:Producer>
</rdf:Description>
<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/">
<xmp:CreatorTool>{PRODUCER}</xmp:CreatorTool>
<xmp:CreateDate>{stamp}</xmp:CreateDate>
<xmp:ModifyDate>{stamp}</xmp:ModifyDate>
<xmp:MetadataDate>{stamp}</xmp:MetadataDate>
</rdf:Description>
"""
    if attachment:
        xmp += f"""<rdf:Description rdf:about=""
 xmlns:pdfaExtension="http://www.aiim.org/pdfa/ns/extension/"
 xmlns:pdfaSchema="http://www.aiim.org/pdfa/ns/schema#"
 xmlns:pdfaProperty="http://www.aiim.org/pdfa/ns/property#">
<pdfaExtension:schemas><rdf:Bag><rdf:li rdf:parseType="Resource">
<pdfaSchema:schema>Factur-X PDFA Extension Schema</pdfaSchema:schema>
<pdfaSchema:namespaceURI>{fx}</pdfaSchema:namespaceURI>
<pdfaSchema:prefix>fx</pdfaSchema:prefix>
<pdfaSchema:property><rdf:Seq>
{_extension_properties()}
</rdf:Seq></pdfaSchema:property>
</rdf:li></rdf:Bag></pdfaExtension:schemas>
</rdf:Description>
<rdf:Description rdf:about="" xmlns:fx="{fx}">
<fx:DocumentType>INVOICE</fx:DocumentType>
<fx:DocumentFileName>{attachment}</fx:DocumentFileName>
<fx:Version>1.0</fx:Version>
<fx:ConformanceLevel>{conformance}</fx:ConformanceLevel>
</rdf:Description>
"""
    xmp += '</rdf:RDF>\n</x:xmpmeta>\n<?xpacket end="w"?>'
    return xmp.encode()


def make_pdfa(
    pdf: bytes,
    *,
    title: str,
    day: date,
    xml: bytes = b"",
    attachment: str = "factur-x.xml",
    conformance: str = "EN 16931",
) -> bytes:
    """`pdf` as PDF/A-3b dated `day`, with `xml` embedded as `attachment` when given."""
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf)))
    catalog = writer.root_object
    pdf_day = TextStringObject(_pdf_date(day))

    writer.add_metadata(
        {
            "/Title": title,
            "/Producer": PRODUCER,
            "/Creator": PRODUCER,
            "/CreationDate": _pdf_date(day),
            "/ModDate": _pdf_date(day),
        }
    )
    metadata = StreamObject()
    metadata.set_data(_xmp(title, day, attachment if xml else "", conformance))
    metadata.update(
        {NameObject("/Type"): NameObject("/Metadata"), NameObject("/Subtype"): NameObject("/XML")}
    )
    catalog[NameObject("/Metadata")] = writer._add_object(metadata)

    icc = DecodedStreamObject()
    icc.set_data(srgb_profile())
    icc[NameObject("/N")] = NumberObject(3)
    intent = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/OutputIntent"),
            NameObject("/S"): NameObject("/GTS_PDFA1"),
            NameObject("/OutputConditionIdentifier"): TextStringObject("sRGB"),
            NameObject("/Info"): TextStringObject("sRGB IEC61966-2.1"),
            NameObject("/DestOutputProfile"): writer._add_object(icc),
        }
    )
    catalog[NameObject("/OutputIntents")] = ArrayObject([writer._add_object(intent)])

    if xml:
        embedded = DecodedStreamObject()
        embedded.set_data(xml)
        embedded.update(
            {
                NameObject("/Type"): NameObject("/EmbeddedFile"),
                NameObject("/Subtype"): NameObject("/text#2Fxml"),
                NameObject("/Params"): DictionaryObject(
                    {NameObject("/ModDate"): pdf_day, NameObject("/Size"): NumberObject(len(xml))}
                ),
            }
        )
        name = TextStringObject(attachment)
        embedded_ref = writer._add_object(embedded)
        filespec = DictionaryObject(
            {
                NameObject("/Type"): NameObject("/Filespec"),
                NameObject("/F"): name,
                NameObject("/UF"): name,
                NameObject("/Desc"): TextStringObject("Factur-X/ZUGFeRD e-invoice"),
                # ZUGFeRD asks German invoices to mark the XML as an alternative rendering.
                NameObject("/AFRelationship"): NameObject("/Alternative"),
                NameObject("/EF"): DictionaryObject(
                    {NameObject("/F"): embedded_ref, NameObject("/UF"): embedded_ref}
                ),
            }
        )
        filespec_ref = writer._add_object(filespec)
        catalog[NameObject("/Names")] = DictionaryObject(
            {
                NameObject("/EmbeddedFiles"): DictionaryObject(
                    {NameObject("/Names"): ArrayObject([name, filespec_ref])}
                )
            }
        )
        catalog[NameObject("/AF")] = ArrayObject([filespec_ref])

    # The file identifier PDF/A requires: from the content, so equal documents get equal bytes.
    identity = ByteStringObject(hashlib.sha256(pdf + xml).digest()[:16])
    writer._ID = ArrayObject([identity, identity])
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()
