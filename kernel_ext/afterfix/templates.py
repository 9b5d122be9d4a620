"""Where afterfix's templates are: the notebooks papermill runs, the trust policy example, the
regression-test module. Looked for in `$AFTERFIX_TEMPLATES`, then the checkout's `templates/`
(an editable install), then the installed share folder, in that order."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ENV_TEMPLATES = "AFTERFIX_TEMPLATES"


def template_places() -> list[Path]:
    """The folders searched, first first (for errors that say where they looked)."""
    from afterfix.store import _repo_root

    places = [Path(os.environ[ENV_TEMPLATES])] if os.environ.get(ENV_TEMPLATES) else []
    root = _repo_root()
    if root is not None:
        places.append(root / "templates")
    places.append(Path(sys.prefix) / "share" / "afterfix" / "templates")
    return places


def find_template(file: str) -> Path | None:
    """The first `file` in `template_places()`, or None."""
    return next((place / file for place in template_places() if (place / file).is_file()), None)
