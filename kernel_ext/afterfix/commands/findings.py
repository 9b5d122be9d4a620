"""`afterfix findings`: the failure modes found in the store, most severe first.

    afterfix findings [--since 24h|TIME] [--until TIME] [--incident ID] [--namespace NS]
                      [--kind KIND] [--trust FILE] [--format table|json]

Trust violations (afterfix.trust.compliance) are found against --trust FILE, else
$AFTERFIX_TRUST, else templates/trust.yaml.
"""

from __future__ import annotations

import json
import sys
import textwrap

from afterfix.analysis.findings import finding_kinds
from afterfix.trust import compliance  # noqa: F401 - registers the trust_violation findings


def register(subparsers) -> None:
    from afterfix.cli import _store_option, _when

    p = subparsers.add_parser(
        "findings", help="what went wrong overnight: masked issues, bundled rollbacks, first bad steps, ...",
        description="Find the failure modes a reviewer looks for: masked issues, bundled rollbacks, first bad "
                    "steps (and what they tainted), duplicate investigations, unverified actions and side "
                    "effects to watch, and actions that went further than the trust policy allows. Most severe first.")
    _store_option(p)
    p.add_argument("--since", type=_when, default=None, metavar="WHEN",
                   help="only findings from this time on: a duration back from now (24h, 7d) or an ISO time")
    p.add_argument("--until", type=_when, default=None, metavar="WHEN", help="only findings before this time")
    p.add_argument("--incident", default=None, metavar="ID", help="only this incident's findings")
    p.add_argument("--namespace", default=None, metavar="NS", help="only findings about this namespace")
    p.add_argument("--kind", action="append", choices=finding_kinds(), default=None, metavar="KIND",
                   help=f"only this kind (repeatable): {', '.join(finding_kinds())}")
    p.add_argument("--trust", default=None, metavar="FILE",
                   help="the trust policy trust violations are found against (default: $AFTERFIX_TRUST, else "
                        "templates/trust.yaml)")
    p.add_argument("--format", choices=("table", "json"), default="table", help="output format (default: table)")
    p.set_defaults(func=cmd_findings)


def cmd_findings(args) -> int:
    from afterfix.analysis.findings import find
    from afterfix.cli import EXIT_OK, _store
    from afterfix.trust.policy import load_policy

    if args.trust is not None:
        compliance.register(load_policy(args.trust))
    found = find(_store(args), since=args.since, until=args.until, incident=args.incident,
                 namespace=args.namespace, kinds=args.kind)
    if args.format == "json":
        json.dump([f.to_dict() for f in found], sys.stdout, ensure_ascii=False, default=str)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(format_findings(found))
    return EXIT_OK


def format_findings(found) -> str:
    """A table of the findings, then each one's explanation and evidence, every trace text escaped."""
    import pandas as pd

    from afterfix.cli import format_table, safe

    if not found:
        return "no findings\n"
    table = pd.DataFrame([{"#": i + 1, "severity": f.severity, "kind": f.kind,
                           "time": f.time.strftime("%Y-%m-%d %H:%M") if f.time else None,
                           "incident": f.incident_id, "target": f.target, "title": f.title}
                          for i, f in enumerate(found)])
    out = [format_table(table)]
    for i, f in enumerate(found, 1):
        out.append(f"\n{i}. [{f.severity}] {safe(f.title, newlines=False)}")
        out += textwrap.wrap(safe(f.explanation, newlines=False), 100, initial_indent="   ", subsequent_indent="   ")
        for e in f.evidence:
            ref = f" (span {e.span_id})" if e.span_id else (f" ({safe(e.metric, newlines=False)})" if e.metric else "")
            out.append(f"   - {safe(e.text, newlines=False)}{ref}")
        path = f.details.get("path")
        if path:
            out.append("   path: " + " → ".join(safe(step.get("name", step.get("span_id", "?")), newlines=False)
                                                for step in path))
    return "\n".join(out) + "\n"
