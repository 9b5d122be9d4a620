"""Loading another test file's helpers: test files are not packages (pytest's importlib mode), so a
test file that reuses builders from a sibling loads that sibling by its path."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType


def load_sibling(test_file: str, name: str) -> ModuleType:
    """The test module `name` from the folder of `test_file` (pass `__file__`), freshly executed."""
    path = Path(test_file).with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"{path.parent.name}_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
