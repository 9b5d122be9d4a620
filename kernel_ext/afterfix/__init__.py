"""afterfix: review what an autonomous SRE agent changed overnight.

`%load_ext afterfix` in a notebook starts capture into the shared store; `afterfix` on the
command line ingests, serves and queries the same store.
"""

from ._exceptions import AfterfixError, ConfigError, DecodeError, ReadOnlyQuery, StoreBusy, StoreError
from .store import Store, default_store_path

__version__ = "0.1.0"


def load_ipython_extension(ipython):  # pragma: no cover - exercised through a real kernel
    from .extension import load

    load(ipython)


def unload_ipython_extension(ipython):  # pragma: no cover
    from .extension import unload

    unload(ipython)
