"""ipywidgets faces on afterfix's library, one module per widget. Each widget calls the same
library function the CLI does and shows its answer; trace text is escaped (`_common.text`).

    IncidentBrowser(store=None, live=True)             filter the incidents, open one   (browser.py)
    RunView(store, run_id) / RunView(store, incident_id=...)  tree, timeline, steps, verdicts (run_view.py)
    RollbackPanel(store, action_id, kubeconfig=...)    plan, dry-run, apply one undo     (rollback.py)
    review(store=None, incident_id=None)               the latest night's most serious incident, opened

The widget classes are imported when first named, so `import afterfix.widgets` stays cheap.
"""

from __future__ import annotations

import importlib

__all__ = ["IncidentBrowser", "RunView", "RollbackPanel", "review"]

_WHERE = {"IncidentBrowser": "browser", "RunView": "run_view", "RollbackPanel": "rollback"}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def review(store=None, incident_id: str | None = None, *, live: bool = True, **options):
    """A RunView of `incident_id`, or by default of the most serious incident of the latest night
    (`afterfix.review.incidents.most_serious`). A store without incidents raises afterfix.NotFound."""
    from afterfix._exceptions import NotFound
    from afterfix.review.incidents import most_serious
    from afterfix.widgets._common import open_store
    from afterfix.widgets.run_view import RunView

    s = open_store(store)
    incident_id = incident_id or most_serious(s)
    if incident_id is None:
        raise NotFound(f"no incident in the store {s.where}: `afterfix demo` plays a night into one, "
                          "or pass incident_id=")
    return RunView(s, incident_id=incident_id, live=live, **options)
