"""afterfix: review what an autonomous SRE agent changed overnight.

`%load_ext afterfix` in a notebook starts capture into the shared store; `afterfix` on the
command line ingests, serves and queries the same store; `afterfix.sdk` lets any agent record
its decisions and actions through the OpenTelemetry SDK.

The names in `__all__` are the public API; everything else may change.
"""

from ._exceptions import AfterfixError, ConfigError, DecodeError, NotFound, ReadOnlyQuery, StoreBusy, StoreError
from .ingest.capture import Capture
from .ingest.files import IngestSummary, ingest_paths
from .ingest.otlp import Decoded, Limits, Refusal, decode_path
from .ingest.redact import Redactor
from .store import AppendResult, Store, default_store_path

__version__ = "0.1.0"

__all__ = [
    "AfterfixError",
    "AppendResult",
    "Capture",
    "ConfigError",
    "DecodeError",
    "Decoded",
    "IngestSummary",
    "Limits",
    "NotFound",
    "ReadOnlyQuery",
    "Redactor",
    "Refusal",
    "Store",
    "StoreBusy",
    "StoreError",
    "decode_path",
    "default_store_path",
    "ingest_paths",
    "load_ipython_extension",
    "unload_ipython_extension",
    "__version__",
]


def load_ipython_extension(ipython):
    """`%load_ext afterfix`: start capture and register the magics (see docs/jupyter.md)."""
    from .extension import load

    load(ipython)


def unload_ipython_extension(ipython):
    """`%unload_ext afterfix`: stop every thread and callback the extension started."""
    from .extension import unload

    unload(ipython)
