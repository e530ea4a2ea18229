"""Documents somsd issues: invoice and credit-note PDFs with their EN 16931 e-invoice, pick
lists and delivery notes. Pure: data in, bytes out (no clock, no files, no network); the
document actor (actors/documents.py) decides when to render and where the bytes go, and the
validator worker (`somsd.documents.worker`) checks the XML in a process of its own.
"""
