"""The edge: one package per external system, each a protocol client, mappers to and from the
canonical model (`somsd.domain`), and a simulator of the upstream for `somsd demo` and tests.

Adapters know nothing of actors (imports point actors -> adapters -> somsd). Every adapter
raises the two kinds in `adapters.errors` — transient (retry) or permanent (dead-letter) — so
the outbox dispatcher handles any of them without knowing which system it talks to.

- `threepl`: the `rest` fulfilment protocol for warehouses, 3PLs and WMSs (see its
  `PROTOCOL.md`), client and reference simulator.
- `csvfiles`: the `csv` location adapter, fulfilment, status and stock files in folders.
- `webhookshop`: a shop that places realistic signed orders on somsd's webhook intake.
- `storesim`: store staff working a manual location's pick list through somsd's API.
- `consignee`: who receives an allocation's goods, shared by the location adapters.

Nothing is imported here: each package pulls in only what it needs (a CSV location does not
load Starlette).
"""
