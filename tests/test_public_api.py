"""The public API is what `afterfix.__all__` names: nothing more is promised, nothing less is there."""

import subprocess
import sys

import afterfix

EXPECTED = {
    "AfterfixError", "AppendResult", "Capture", "ConfigError", "DecodeError", "Decoded", "IngestSummary",
    "Limits", "NotFound", "ReadOnlyQuery", "Redactor", "Refusal", "Store", "StoreBusy", "StoreError", "decode_path",
    "default_store_path", "ingest_paths", "load_ipython_extension", "unload_ipython_extension", "__version__",
}


def test_all_names_the_public_api():
    assert set(afterfix.__all__) == EXPECTED
    for name in afterfix.__all__:
        assert hasattr(afterfix, name), name


def test_every_library_error_is_an_afterfix_error():
    for name in ("ConfigError", "DecodeError", "NotFound", "ReadOnlyQuery", "StoreBusy", "StoreError"):
        assert issubclass(getattr(afterfix, name), afterfix.AfterfixError)


def test_import_does_not_start_anything():
    # Importing afterfix must not open a store, bind a port or start a thread.
    code = "import threading, afterfix; print(threading.active_count())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "1"
