"""`%load_ext afterfix`: one capture per kernel, started on load and stopped on unload.

Loading creates the store if it is missing, starts the capture (OTLP/HTTP receiver plus inbox
tailer) in a child process of the kernel (`Sidecar`: `afterfix serve --stdio`), registers the
magics, the `Afterfix` options and one `post_run_cell` callback. The capture runs beside the
kernel, not in it, so that its decoding and commits never hold the GIL a cell needs. Unloading
stops the child (waiting until it has committed what it holds) and takes back everything it
registered, so `%reload_ext afterfix` never doubles anything or leaves a process behind.
"""

from __future__ import annotations

import sys
from pathlib import Path

import duckdb
from traitlets import TraitError

from ._exceptions import AfterfixError, ConfigError
from .config import Afterfix
from .magics import DISPLAY_LIMIT_ATTR, one_line, printable
from .store import Store

# One session per shell. Kept by shell id rather than on the shell so that `%reload_ext`
# (which re-imports `afterfix` but not this module) still finds what it has to stop.
_sessions: dict[int, "Session"] = {}


def _one_line(text: object, width: int = 300) -> str:
    line = printable(" ".join(str(text).split()))
    return line if len(line) <= width else line[: width - 1] + "…"


class Session:
    """One kernel's afterfix: its options, its store, its running capture and what it registered."""

    def __init__(self, shell, config: Afterfix):
        self.shell = shell
        self.config = config
        self.store: Store | None = None
        self.capture = None
        self.receiver_error: str | None = None  # why the receiver is off although listen is True
        self.settings: dict = {}
        self._seen_error: str | None = None
        self._magics = None  # what load() registered, for unload() to take back
        self._display: dict = {}

    # -- capture ------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.capture is not None and self.capture.running

    def _new_capture(self, settings: dict, listen: bool):
        from .ingest.sidecar import Sidecar

        return Sidecar(
            self.store.spec,
            inbox=Path(settings["inbox"]),
            listen=listen,
            host=settings["host"],
            port=settings["port"],
            token=settings["token"],
            max_body_bytes=settings["max_body_bytes"],
            redact_patterns=settings["redact_patterns"],
            interval=settings["interval"],
        )

    def start(self) -> None:
        """Open (or create) the store and start capturing with the options as they are now."""
        if self.running:
            return
        if self.capture is not None:  # its process ended on its own: clear it away first
            self.stop()
        try:
            settings = self.config.settings()
        except TraitError as e:
            raise ConfigError(str(e)) from None
        store = Store(settings["store"])
        store.create()
        Path(settings["inbox"]).mkdir(parents=True, exist_ok=True)
        self.store, self.settings, self.receiver_error = store, settings, None
        capture = self._new_capture(settings, listen=settings["listen"])
        try:
            capture.start()  # leaves no process behind when it fails
        except (ConfigError, OSError) as e:
            if not settings["listen"]:
                raise
            # The port is taken (often by another kernel): keep reviewing with the inbox alone.
            self.receiver_error = (
                f"receiver off: {e}. Reading the inbox {settings['inbox']} only; "
                "free the port or run `%config Afterfix.port = N` then `%afterfix restart`"
            )
            capture = self._new_capture(settings, listen=False)
            capture.start()
        self.capture = capture

    def stop(self) -> None:
        """Stop capturing: waits until the capture process has committed what it holds and exited."""
        capture, self.capture = self.capture, None
        if capture is not None:
            capture.stop()
        if self.store is not None:
            self.store.close()

    def restart(self) -> None:
        self.stop()
        self.start()

    def status(self) -> dict:
        """Capture's status plus what this kernel set up; values come from trace input and are untrusted."""
        s = self.settings
        info: dict = {
            "state": "running" if self.running else "ended" if self.capture is not None else "stopped",
            "store": s.get("store", self.config.store),
            "receiver": "off",
            "inbox": s.get("inbox", self.config.inbox),
        }
        if self.capture is not None:
            status = self.capture.status()
            if status.get("port"):  # the real port, also when port 0 picked one
                info["receiver"] = f"{status.get('host') or s['host']}:{status['port']}"
            for key in ("running", "url", "host", "port", "inbox"):
                status.pop(key, None)
            if status.get("pid") is not None:
                status["pid"] = str(status["pid"])  # an id, not a count: no thousands separator
            info.update(status)
        if self.receiver_error:
            last = info.get("last_error")
            info["last_error"] = f"{self.receiver_error}; then: {last}" if last else self.receiver_error
        return info

    def last_error(self) -> str | None:
        if self.receiver_error:
            return self.receiver_error
        if self.capture is None:
            return None
        return self.capture.last_error  # what the capture process last reported: no round trip per cell

    # -- IPython callbacks ----------------------------------------------------------

    def post_run_cell(self, result=None) -> None:
        """After each cell: one line on stderr when capture hit an error not reported yet."""
        try:
            error = self.last_error()
        except Exception as e:  # a broken status must never break the user's cell
            error = f"status unavailable: {e}"
        if error and error != self._seen_error:
            print(f"afterfix: {_one_line(error)} (see %afterfix status)", file=sys.stderr)
        self._seen_error = error


# -- DataFrame display with the display_limit --------------------------------------


def _limited(obj, render):
    import pandas as pd

    limit = obj.attrs[DISPLAY_LIMIT_ATTR] or None  # 0: every row
    with pd.option_context("display.max_rows", limit, "display.min_rows", limit):
        return render()


def _from_sql(obj) -> bool:
    return DISPLAY_LIMIT_ATTR in getattr(obj, "attrs", {})


def _register_display(shell) -> dict:
    """Show %sql results with `display_limit` rows; every other DataFrame as it was shown before."""
    import pandas as pd

    formatters = shell.display_formatter.formatters
    html, plain = formatters["text/html"], formatters["text/plain"]
    old_html = html.type_printers.get(pd.DataFrame)
    old_plain = plain.type_printers.get(pd.DataFrame)

    def html_frame(obj):
        if _from_sql(obj):
            return _limited(obj, obj._repr_html_)
        return old_html(obj) if old_html else obj._repr_html_()

    def plain_frame(obj, p, cycle):
        if _from_sql(obj):
            p.text(printable(_limited(obj, lambda: repr(obj))))
        elif old_plain:
            old_plain(obj, p, cycle)
        else:
            p.text(repr(obj))

    return {"text/html": html.for_type(pd.DataFrame, html_frame), "text/plain": plain.for_type(pd.DataFrame, plain_frame)}


def _unregister_display(shell, previous: dict) -> None:
    import pandas as pd

    formatters = shell.display_formatter.formatters
    for mime, old in previous.items():
        if old is None:
            formatters[mime].pop(pd.DataFrame, None)
        else:
            formatters[mime].for_type(pd.DataFrame, old)


# -- load / unload ------------------------------------------------------------------


def load(shell) -> Session:
    """Set up afterfix in `shell` and start capturing; loading twice replaces the first session."""
    if id(shell) in _sessions:
        unload(shell)
    from IPython.core.error import UsageError

    from .magics import AfterfixMagics

    try:
        config = Afterfix(parent=shell)
    except TraitError as e:
        raise UsageError(f"afterfix not loaded: {e}") from None
    session = Session(shell, config)
    shell.configurables.append(config)
    magics = AfterfixMagics(shell, session=session)
    shell.register_magics(magics)
    session._magics = magics
    session._display = _register_display(shell)
    shell.events.register("post_run_cell", session.post_run_cell)
    _sessions[id(shell)] = session
    try:
        session.start()
    except ConfigError as e:
        unload(shell)
        raise UsageError(f"afterfix not loaded: {e}") from None
    except (AfterfixError, duckdb.Error) as e:
        unload(shell)
        raise UsageError(f"afterfix not loaded: store {config.store}: {one_line(e)}") from None
    except Exception:
        unload(shell)
        raise
    return session


def unload(shell) -> None:
    """Stop capture and take back every magic, option, formatter and callback `load` registered."""
    session = _sessions.pop(id(shell), None)
    if session is None:
        return
    try:
        session.stop()
    finally:
        try:
            shell.events.unregister("post_run_cell", session.post_run_cell)
        except ValueError:
            pass
        shell.configurables[:] = [c for c in shell.configurables if c is not session.config]
        _unregister_display(shell, session._display)
        magics = session._magics
        if magics is not None:
            manager = shell.magics_manager
            for kind in ("line", "cell"):
                table = manager.magics[kind]
                for name in [n for n, fn in table.items() if getattr(fn, "__self__", None) is magics]:
                    del table[name]
            if manager.registry.get(type(magics).__name__) is magics:
                del manager.registry[type(magics).__name__]


def session_for(shell) -> Session | None:
    """The running session of `shell`, if afterfix is loaded there."""
    return _sessions.get(id(shell))
