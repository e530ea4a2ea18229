"""somsd: on-premises order-management middleware.

The kernel (supervision, actors, event store, config, HTTP, metrics, logging, systemd) and the
pure domain (`somsd.domain`) live here; `actors/` and `adapters/` build on it.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("somsd")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
