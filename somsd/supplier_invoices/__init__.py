"""Supplier invoices: text PDFs and e-invoices in, checked against purchase orders and goods
receipts, structured e-invoice and accounting data out, every step hash-chained.

Pure: no file, network or clock access here; the actor (`actors/supplier_invoices.py`) reads
files, keeps the event log and calls these functions.
"""
