"""The magics: `%afterfix status|start|stop|restart`, `%afterfix tree|timeline|findings`, and
`%%sql` / `%sql`.

They only parse their input and call the library (`Store.query`, the session's capture). A
mistake in what was typed raises `UsageError`: one line, no traceback. `{var}` and `$var` are
never expanded in SQL: trace text is untrusted, so values reach a query through Python, e.g.
`Store.query(sql, params)`, never through string substitution.
"""

from __future__ import annotations

import datetime as dt
import html
import keyword
import re
from dataclasses import dataclass

import duckdb
from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class, no_var_expand

from ._exceptions import AfterfixError, NotFound, ReadOnlyQuery

DISPLAY_LIMIT_ATTR = "afterfix.display_limit"  # set on %sql results: rows to show when displayed

SUBCOMMANDS = {
    "status": "show sources, rate, lag, stored/refused/redacted counts and the last error",
    "start": "start capturing (receiver and inbox tailer) with the current Afterfix options",
    "stop": "stop capturing; queries keep working",
    "restart": "stop, then start again with the Afterfix options as they are now",
    "tree": "tree RUN_ID: the run's decision tree, as a figure",
    "timeline": "timeline INCIDENT_ID: the incident's timeline (a run id works too), as a figure",
    "findings": "findings [--since WHEN] [--until WHEN] [--incident ID] [--namespace NS] [--kind KIND]: the findings table",
}
ANALYSIS = ("tree", "timeline", "findings")

SQL_OPTIONS = {
    "-o NAME, --out NAME": "also bind the result DataFrame to NAME in the user namespace",
    "--write": "allow statements that change the store (INSERT, DELETE, CREATE, ...)",
    "-l N, --limit N": "return at most N rows",
}

_OPTION = re.compile(
    r"""\s*(?:
        (?P<out>-o|--out)(?:(?:\s+|=)(?P<name>\S+))?
      | (?P<write>--write)(?=\s|$)
      | (?P<limit>-l|--limit)(?:(?:\s+|=)(?P<n>\S+))?
      | (?P<unknown>--?[A-Za-z][\w-]*)(?=\s|=|$)
    )""",
    re.VERBOSE,
)


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """`text` safe for a terminal: control characters (escape sequences from trace text) shown as escapes."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


@dataclass
class SqlArgs:
    out: str | None = None
    write: bool = False
    limit: int | None = None
    query: str = ""


def parse_sql(line: str, cell: str | None = None) -> SqlArgs:
    """Split `%sql`/`%%sql` input into options and the query; raise UsageError on a mistake."""
    args = SqlArgs()
    pos = 0
    while True:
        m = _OPTION.match(line, pos)
        if not m:
            break
        if m["unknown"]:
            raise UsageError(f"%sql: unknown option {m['unknown']}: use {', '.join(SQL_OPTIONS)}")
        if m["out"]:
            name = m["name"]
            if name is None:
                raise UsageError("%sql -o needs a variable name, e.g. `%%sql -o df`")
            if not name.isidentifier() or keyword.iskeyword(name):
                raise UsageError(f"%sql -o {name}: not a Python variable name; use letters, digits and _")
            args.out = name
        elif m["write"]:
            args.write = True
        else:
            try:
                args.limit = int(m["n"] or "")
            except ValueError:
                args.limit = -1
            if args.limit < 1:
                raise UsageError(f"%sql --limit {m['n']}: give a whole number of rows, 1 or more")
        pos = m.end()
    rest = line[pos:].strip()
    if cell is None:
        args.query = rest
    elif rest:
        raise UsageError(f"%%sql: unexpected {rest!r} on the %%sql line: put the query in the cell below it")
    else:
        args.query = cell.strip()
    if not args.query:
        raise UsageError("%sql needs a query, e.g. `%sql SELECT count(*) FROM spans`")
    return args


def parse_findings(words: list[str]) -> dict:
    """`--since 24h --incident ID ...` into find()'s keywords; UsageError on a mistake."""
    from .analysis.findings import finding_kinds
    from .analysis.window import parse_time
    from .trust import compliance  # noqa: F401  (registers trust_violation, as every face does)

    kinds = finding_kinds()

    options = {"--since": "since", "--until": "until", "--incident": "incident", "--namespace": "namespace",
               "--kind": "kinds"}
    out: dict = {}
    items = iter(words)
    for word in items:
        name, _, value = word.partition("=")
        if name not in options:
            raise UsageError(f"%afterfix findings: unknown option {word!r}: use {', '.join(options)}")
        value = value or next(items, "")
        if not value:
            raise UsageError(f"%afterfix findings {name} needs a value")
        key = options[name]
        if key in ("since", "until"):
            try:
                out[key] = parse_time(value)
            except ValueError as e:
                raise UsageError(f"%afterfix findings {name}: {e}") from None
        elif key == "kinds":
            if value not in kinds:
                raise UsageError(f"%afterfix findings --kind {value}: choose from {', '.join(kinds)}")
            out.setdefault("kinds", []).append(value)
        else:
            out[key] = value
    return out


def with_limit(sql: str, limit: int | None) -> str:
    """`sql` capped at `limit` rows in the database when it is a single SELECT, else unchanged."""
    if limit is None:
        return sql
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error:
        return sql  # execution reports the syntax error
    if len(statements) != 1 or statements[0].type.name != "SELECT":
        return sql
    inner = statements[0].query.strip().rstrip(";")
    return f"SELECT * FROM (\n{inner}\n) AS afterfix_limited LIMIT {int(limit)}"


def one_line(err: BaseException) -> str:
    """DuckDB's message reduced to its first line, plus its "Did you mean" hint when it has one."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    if not lines:
        return type(err).__name__
    hint = next((ln for ln in lines[1:] if ln.lower().startswith("did you mean")), None)
    return f"{lines[0]} {hint}" if hint else lines[0]


class StatusReport:
    """`%afterfix status`: a small table, as escaped HTML in Jupyter and as plain text elsewhere."""

    LABELS = {
        "state": "state",
        "store": "store",
        "receiver": "receiver",
        "inbox": "inbox",
        "sources": "sources",
        "spans_stored": "spans stored",
        "rate_per_s": "rate (spans/s)",
        "lag_s": "lag (s)",
        "pending": "pending",
        "refused": "refused",
        "redacted": "redacted",
        "duplicates": "duplicates",
        "started_at": "started at",
        "last_commit_at": "last commit",
        "recovering": "replaying spool",
        "pid": "capture process",
        "inbox_active": "tailing inbox",
        "last_error": "last error",
    }

    def __init__(self, info: dict):
        self.info = dict(info)

    @staticmethod
    def _text(value) -> str:
        if value is None:
            return "-"
        if isinstance(value, dt.datetime):  # the store keeps naive UTC
            return value.isoformat(sep=" ", timespec="seconds") + " UTC"
        if isinstance(value, float):
            return f"{value:,.2f}"
        if isinstance(value, int) and not isinstance(value, bool):
            return f"{value:,}"
        if isinstance(value, dict):
            return ", ".join(f"{k}: {StatusReport._text(v)}" for k, v in value.items()) or "-"
        if isinstance(value, (list, tuple, set)):
            return ", ".join(StatusReport._text(v) for v in value) or "-"
        return str(value)

    def rows(self) -> list[tuple[str, str]]:
        keys = [k for k in self.LABELS if k in self.info] + [k for k in self.info if k not in self.LABELS]
        return [(self.LABELS.get(k, k), self._text(self.info[k])) for k in keys]

    def __repr__(self) -> str:
        rows = self.rows()
        width = max(len(label) for label, _ in rows)
        return printable("\n".join(f"{label:<{width}}  {value}" for label, value in rows))

    def _repr_html_(self) -> str:
        body = "".join(
            f"<tr><th style='text-align:left'>{html.escape(label)}</th>"
            f"<td style='text-align:left'>{html.escape(value)}</td></tr>"
            for label, value in self.rows()
        )
        return f"<table class='afterfix-status'>{body}</table>"


def figure_for(store, command: str, ident: str):
    """The decision tree of a run, or the timeline of an incident (or of a run), as a plotly figure."""
    if command == "tree":
        from .analysis.tree import run_tree
        from .figures.tree import decision_tree

        return decision_tree(run_tree(store, ident))
    from .analysis.timeline import incident_timeline, run_timeline
    from .figures.timeline import incident_timeline as timeline_figure

    try:
        timeline = incident_timeline(store, ident)
    except NotFound:
        timeline = run_timeline(store, ident)
    return timeline_figure(timeline)


class FindingsReport:
    """`%afterfix findings`: one row per finding with its evidence, escaped HTML in Jupyter, text elsewhere."""

    def __init__(self, findings: list):
        self.findings = findings

    def frame(self):
        from .analysis.findings import findings_frame

        return findings_frame(findings=self.findings)

    def __len__(self) -> int:
        return len(self.findings)

    def __repr__(self) -> str:
        from .commands.findings import format_findings

        return format_findings(self.findings).rstrip("\n")

    def _repr_html_(self) -> str:
        if not self.findings:
            return "<p class='afterfix-findings'>No findings.</p>"
        rows = []
        for f in self.findings:
            evidence = "".join(f"<li>{html.escape(e.text)}</li>" for e in f.evidence)
            rows.append(
                f"<tr class='severity-{html.escape(f.severity)}'><td>{html.escape(f.severity)}</td>"
                f"<td>{html.escape(f.kind)}</td><td>{html.escape(f.time.strftime('%Y-%m-%d %H:%M') if f.time else '')}</td>"
                f"<td>{html.escape(f.target or '')}</td>"
                f"<td><b>{html.escape(f.title)}</b><br>{html.escape(f.explanation)}<ul>{evidence}</ul></td></tr>")
        head = "<tr><th>severity</th><th>kind</th><th>time (UTC)</th><th>target</th><th>finding</th></tr>"
        return f"<table class='afterfix-findings'>{head}{''.join(rows)}</table>"


@magics_class
class AfterfixMagics(Magics):
    """`%afterfix` controls capture; `%sql` / `%%sql` query the store into a pandas DataFrame."""

    def __init__(self, shell=None, *, session):
        super().__init__(shell)
        self.session = session

    @no_var_expand
    @line_magic("afterfix")
    def afterfix(self, line: str = ""):
        """%afterfix [status|start|stop|restart]: show or control trace capture (default: status)."""
        words = line.split()
        command = words[0] if words else "status"
        if command in ANALYSIS:
            return self._analysis(command, words[1:])
        if command not in SUBCOMMANDS or len(words) > 1:
            raise UsageError(f"%afterfix {line.strip()}: use one of {', '.join(SUBCOMMANDS)}")
        session = self.session
        if command == "status":
            return StatusReport(session.status())
        try:
            if command == "start":
                if session.running:
                    print("afterfix: already capturing (use %afterfix restart to apply changed options)")
                    return None
                session.start()
            elif command == "stop":
                session.stop()
                print("afterfix: capture stopped; %sql still reads the store")
                return None
            else:
                session.restart()
        except AfterfixError as e:
            raise UsageError(f"%afterfix {command}: {e}") from None
        info = session.status()
        print(f"afterfix: capturing into {info['store']} (receiver {info['receiver']}, inbox {info['inbox']})")
        return None

    def _analysis(self, command: str, words: list[str]):
        """`tree`, `timeline` and `findings`: the same library calls, figures and rows as the CLI."""
        from .analysis import findings as found  # also makes the findings view queryable

        store = self.session.store
        if store is None:
            raise UsageError(f"%afterfix {command}: no store is open: run %afterfix start")
        try:
            if command == "findings":
                return FindingsReport(found.find(store, **parse_findings(words)))
            if len(words) != 1:
                raise UsageError(f"%afterfix {command} needs one id: {SUBCOMMANDS[command]}")
            return figure_for(store, command, words[0])
        except AfterfixError as e:
            raise UsageError(f"%afterfix {command}: {e}") from None

    @no_var_expand
    @line_cell_magic("sql")
    def sql(self, line: str = "", cell: str | None = None):
        """%sql [-o NAME] [--write] [--limit N] QUERY, or %%sql [options] with the query in the cell.

        Returns a pandas DataFrame. Read-only unless --write is given.
        """
        args = parse_sql(line, cell)
        store = self.session.store
        if store is None:
            raise UsageError("%sql: no store is open: run %afterfix start")
        try:
            from .analysis import findings  # noqa: F401  (makes the `findings` view queryable)

            df = store.query(with_limit(args.query, args.limit), write=args.write)
        except ReadOnlyQuery as e:
            raise UsageError(str(e)) from None
        except AfterfixError as e:
            raise UsageError(f"%sql: {e}") from None
        except duckdb.Error as e:
            raise UsageError(one_line(e)) from None
        if args.limit is not None and len(df) > args.limit:
            df = df.head(args.limit)  # statements that could not be capped in the database
        df.attrs[DISPLAY_LIMIT_ATTR] = self.session.config.display_limit
        if args.out:
            self.shell.user_ns[args.out] = df
        return df
