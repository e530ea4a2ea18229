"""A store simulator for `adapter = "manual"` locations: staff working the pick list in somsd.

`StoreClient` speaks somsd's manual fulfilment routes from the contract (`GET
/v1/fulfillments?location=&state=`, `POST /v1/fulfillments/{id}/{pick,pack,ship,reject,ready,
picked-up}`); `StoreSimulator` uses it to work a location's fulfilments after a delay, with
occasional line rejections, for `somsd demo`. The daemon does not serve these routes yet: the
bodies in `wire` are the proposal the client is written and tested against (a stand-in app in
`tests/adapters/test_storesim.py`) until it does.
"""

from adapters.storesim.client import StoreClient
from adapters.storesim.errors import FulfillmentGone, StepRefused
from adapters.storesim.simulator import StoreKnobs, StoreSimulator, next_step
from adapters.storesim.wire import WorkItem, WorkLine, WorkPage

__all__ = [
    "FulfillmentGone",
    "StepRefused",
    "StoreClient",
    "StoreKnobs",
    "StoreSimulator",
    "WorkItem",
    "WorkLine",
    "WorkPage",
    "next_step",
]
