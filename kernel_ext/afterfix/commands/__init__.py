"""The command-line faces of analysis, figures and reports: one module per command family.

Each module has `register(subparsers)`, which adds its commands to `afterfix`'s parser; `cli.py`
calls every module's `register` in name order. The commands parse, call one library function and
print the result; the answers themselves live in `afterfix.analysis`, `afterfix.figures` and
`afterfix.reports`.
"""

from __future__ import annotations

import importlib
import pkgutil


def register_all(subparsers) -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}").register(subparsers)
