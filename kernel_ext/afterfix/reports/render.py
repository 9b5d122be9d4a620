"""Templates run by papermill and written by nbconvert as one offline HTML file.

    render(template, parameters, html_path, *, notebook=None) -> Path
    brief(store, since="24h", until=None, namespace=None, output=..., keep=None, notebook=None) -> Path
    open_briefing / open_incident_review / open_decision_tree    what the templates call
    template_path(name) -> Path                                  templates/NAME.ipynb

The HTML has no code cells and no prompts, carries plotly.js inside it (the figures render with no
network) and loads nothing else: the `afterfix` nbconvert template drops the lab template's
MathJax and Mermaid scripts, which come from a CDN. When a cell fails, `TemplateError` names the
template, the cell (its number and first line) and the error, and the executed notebook with
its traceback is kept beside the HTML (or at `notebook`).

A briefing folder rotates: with `keep=N`, `output` is a folder, each briefing is
`briefing-YYYY-MM-DDTHHMMSSZ.html` in it, and all but the newest N such files are deleted after
the new one is written, so a failed render never costs an old briefing.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from afterfix._exceptions import AfterfixError
from afterfix.templates import find_template, template_places

__all__ = ["render", "brief", "template_path", "TemplateError", "open_briefing", "open_incident_review",
           "open_decision_tree", "TEMPLATES", "Rendered", "rotate", "to_html"]

TEMPLATES = ("morning_briefing", "incident_review", "decision_tree")
KERNEL = "python3"
_NBCONVERT_TEMPLATES = Path(__file__).parent / "nbconvert"
ROTATED = "briefing-*.html"


class TemplateError(AfterfixError):
    """A template failed under papermill, or could not be found or written."""


def template_path(name: str) -> Path:
    """`templates/NAME.ipynb`: from AFTERFIX_TEMPLATES, else the checkout, else the installed share folder."""
    file = name if name.endswith(".ipynb") else f"{name}.ipynb"
    if Path(file).is_file():
        return Path(file)
    found = find_template(file)
    if found is not None:
        return found
    places = template_places()
    raise TemplateError(f"no template {file}: looked in {', '.join(map(str, places))}; "
                        f"set AFTERFIX_TEMPLATES to the folder holding {', '.join(t + '.ipynb' for t in TEMPLATES)}")


# --- what the templates call --------------------------------------------------------------

def _open_store(store):
    from afterfix.store import Store, StoreError

    s = store if hasattr(store, "query") else Store(store or None)
    if not s.exists():
        raise StoreError(f"no store at {s.where}: pass store=PATH (papermill -p store PATH, afterfix brief --store PATH)")
    return s


def open_briefing(store=None, since: str | datetime | None = "24h", until: str | datetime | None = None,
                  namespace: str | None = None, *, offline: bool = True):
    """The briefing for the template's parameters (text times parsed as `afterfix brief` parses them)."""
    from afterfix.analysis.window import parse_time, utc_now
    from afterfix.reports.briefing import build_briefing
    from afterfix.reports.html import offline_figures

    if offline:
        offline_figures()
    end = parse_time(until) if isinstance(until, str) and until else (until or utc_now())
    start = parse_time(since, before=end) if isinstance(since, str) and since else since
    return build_briefing(_open_store(store), start, end, namespace or None)


def open_incident_review(store=None, incident_id: str = "", *, offline: bool = True):
    from afterfix.reports.html import offline_figures
    from afterfix.reports.review import incident_review

    if offline:
        offline_figures()
    return incident_review(_open_store(store), (incident_id or "").strip())


def open_decision_tree(store=None, run_id: str = "", *, offline: bool = True):
    from afterfix.reports.html import offline_figures
    from afterfix.reports.review import run_review

    if offline:
        offline_figures()
    return run_review(_open_store(store), (run_id or "").strip())


# --- papermill, then nbconvert ------------------------------------------------------------

@dataclass
class Rendered:
    html: Path
    handoff: list[str]  # the briefing's five lines, read from the executed notebook ([] for other templates)


def render(template: str, parameters: dict, html_path: Path | str, *, notebook: Path | str | None = None,
           cwd: Path | str | None = None) -> Rendered:
    """Execute `template` with `parameters` and write the result as offline HTML at `html_path`.

    The executed notebook goes to `notebook` when given (else a temporary file, removed on success
    and kept beside the HTML when a cell fails)."""
    import papermill as pm

    source = template_path(template)
    html_path = Path(html_path)
    html_path.parent.mkdir(parents=True, exist_ok=True)
    executed = Path(notebook) if notebook else Path(tempfile.mkstemp(suffix=".ipynb", prefix=".afterfix-")[1])
    try:
        # The kernel's own start-up warnings (a loopback TCP notice) would land in every cron mail;
        # what matters from it, a failing cell, comes back through papermill.
        pm.execute_notebook(str(source), str(executed), parameters=parameters, kernel_name=KERNEL,
                            progress_bar=False, cwd=str(cwd) if cwd else None,
                            extra_arguments=["--IPKernelApp.log_level=ERROR"])
    except pm.PapermillExecutionError as e:
        kept = executed if notebook else _keep_failed(executed, html_path)
        raise TemplateError(_failed_cell(source, e, kept)) from None
    except Exception:
        if not notebook:
            executed.unlink(missing_ok=True)
        raise
    try:
        html = to_html(executed)
        handoff = read_handoff(executed)
    finally:
        if not notebook:
            executed.unlink(missing_ok=True)
    tmp = html_path.with_name(f".{html_path.name}.tmp")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, html_path)  # a reader never sees half a briefing
    return Rendered(html_path, handoff)


def read_handoff(notebook_path: Path | str) -> list[str]:
    """The handoff lines that `reports.html.show(briefing)` left in an executed notebook."""
    import nbformat

    from afterfix.reports.html import HANDOFF

    nb = nbformat.read(str(notebook_path), as_version=4)
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("metadata", {}).get(HANDOFF):
                return str(out.get("data", {}).get("text/plain", "")).splitlines()
    return []


def to_html(notebook_path: Path | str) -> str:
    """An executed notebook as HTML with no inputs, no prompts and nothing loaded from the network."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(notebook_path), as_version=4)
    exporter = HTMLExporter(template_name="afterfix", extra_template_basedirs=[str(_NBCONVERT_TEMPLATES)])
    exporter.exclude_input = True
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    exporter.exclude_markdown = False
    title = nb.metadata.get("title") or "afterfix"
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title}})
    return body


def _keep_failed(executed: Path, html_path: Path) -> Path:
    kept = html_path.with_suffix(".failed.ipynb")
    os.replace(executed, kept)
    return kept


def _failed_cell(source: Path, e, kept: Path) -> str:
    import nbformat

    nb = nbformat.read(str(kept), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    index = next((i for i, c in enumerate(nb.cells)
                  if any(o.get("output_type") == "error" for o in c.get("outputs", []))), None)
    first = ""
    if index is not None:
        lines = [ln for ln in nb.cells[index].source.splitlines() if ln.strip()]
        first = f" ({lines[0].strip()[:80]!r})" if lines else ""
        number = code.index(nb.cells[index]) + 1 if nb.cells[index] in code else index + 1
        where = f"cell {number}{first}"
    else:
        where = f'cell "In [{e.exec_count}]"'
    return (f"{source.name}: {where} failed: {e.ename}: {str(e.evalue).strip()[:500]}; "
            f"the executed notebook with its traceback is {kept}")


def brief(store=None, since: str = "24h", until: str | None = None, namespace: str | None = None, *,
          output: Path | str = "briefing.html", keep: int | None = None, notebook: Path | str | None = None,
          template: str = "morning_briefing", now: datetime | None = None) -> Rendered:
    """Render the morning briefing; with `keep`, into a rotating folder."""
    from afterfix.store import Store

    s = store if hasattr(store, "query") else Store(store or None)
    if not s.exists():
        from afterfix.store import StoreError

        raise StoreError(f"no store at {s.where}: ingest something first (afterfix ingest PATH) or pass --store")
    output = Path(output)
    if keep is not None:
        if keep < 1:
            raise ValueError(f"--keep {keep}: keep at least 1 briefing")
        if output.suffix == ".html":
            raise ValueError(f"--keep rotates a folder of briefings: give -o a folder, not the file {output}")
        stamp = (now or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H%M%SZ")
        target = output / f"briefing-{stamp}.html"
    else:
        target = output
    params = {"store": s.spec, "since": since or "24h", "until": until, "namespace": namespace}
    done = render(template, params, target, notebook=notebook)
    if keep is not None:
        rotate(output, keep)
    return done


def rotate(folder: Path | str, keep: int) -> list[Path]:
    """Delete all but the newest `keep` briefing-*.html files in `folder`; returns those deleted."""
    files = sorted(Path(folder).glob(ROTATED), key=lambda p: p.name)
    gone = files[:-keep] if keep else files
    for p in gone:
        p.unlink(missing_ok=True)
    return gone
