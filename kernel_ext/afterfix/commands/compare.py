"""`afterfix compare`: two runs side by side (the same scenario on two nights, or before and after a
policy change): their aligned steps, then the decisions and the actions that differ.

    afterfix compare RUN_A RUN_B [--only-differences] [--format table|json]

Exit codes: 0 compared (whether or not they differ: `"same"` in the JSON says which); 2 usage or an
unknown run id.
"""

from __future__ import annotations

import json
import sys

from afterfix.cli import safe

MARK = {"same": " ", "changed": "~", "only_a": "<", "only_b": ">"}


def register(subparsers) -> None:
    from afterfix.cli import _store_option

    p = subparsers.add_parser(
        "compare", help="two runs side by side: aligned steps, differing decisions, differing actions",
        description="Align two runs' steps by what they are (tool name, decision question, action verb and "
                    "target), not by position, and show which are the same, changed, or only in one run; then "
                    "every decision that chose differently or weighed an option differently, and every action "
                    "whose verb, target or patch differs. `afterfix query \"SELECT run_id FROM runs\"` lists runs.")
    _store_option(p)
    p.add_argument("run_a", metavar="RUN_A", help="the first run (e.g. last night's, or before the change)")
    p.add_argument("run_b", metavar="RUN_B", help="the second run")
    p.add_argument("--only-differences", action="store_true",
                   help="table: leave out the steps that are the same in both runs")
    p.add_argument("--format", choices=("table", "json"), default="table", help="output format (default: table)")
    p.set_defaults(func=cmd_compare)


def cmd_compare(args) -> int:
    import pandas as pd

    from afterfix.cli import EXIT_OK, _store, format_table
    from afterfix.review.compare import compare_runs

    c = compare_runs(_store(args), args.run_a, args.run_b)
    if args.format == "json":
        json.dump(c.to_dict(), sys.stdout, ensure_ascii=False)
        sys.stdout.write("\n")
        return EXIT_OK
    out = sys.stdout
    for side, r in (("A", c.run_a), ("B", c.run_b)):
        out.write(safe(f"{side}: {r['run_id']}  {r['agent_name'] or ''}  incident {r['incident_id'] or '-'}  "
                       f"{(r['start_time'] or '')[:19]}  {r['steps']} steps", newlines=False) + "\n")
    n = c.counts()
    verdict = "the runs did the same steps the same way" if c.same else (
        f"{n['same']} same, {n['changed']} changed, {n['only_a']} only in A, {n['only_b']} only in B")
    out.write(f"{verdict}\n\n")
    shown = [(i, s) for i, s in enumerate(c.steps, 1) if not args.only_differences or s.status != "same"]
    if shown:
        out.write(("steps that differ" if args.only_differences else
                   "aligned steps (~ changed, < only in A, > only in B)") + "\n")
        out.write(format_table(pd.DataFrame([{
            "#": i, "": MARK[s.status], "status": s.status,
            "A": s.a["label"] if s.a else "", "B": s.b["label"] if s.b else "",
            "differs": "; ".join(s.differences)} for i, s in shown])) + "\n")
    if c.decisions:
        out.write("decisions that differ\n")
        out.write(format_table(pd.DataFrame([{
            "question": d["question"], "status": d["status"], "A chose": d["selected_a"], "B chose": d["selected_b"],
            "options weighed differently": "; ".join(f"{o['id']}: {o['verdict_a'] or '-'} → {o['verdict_b'] or '-'}"
                                                     for o in d["options"]),
            "verdicts A": "; ".join(d["verdicts_a"]), "verdicts B": "; ".join(d["verdicts_b"])}
            for d in c.decisions])) + "\n")
    if c.actions:
        out.write("actions that differ\n")
        out.write(format_table(pd.DataFrame([{
            "status": x["status"], "A": f"{x['verb_a'] or ''} {x['target_a'] or ''}".strip(),
            "B": f"{x['verb_b'] or ''} {x['target_b'] or ''}".strip(),
            "patch A": x["patch_a"], "patch B": x["patch_b"], "differs": "; ".join(x["differences"])}
            for x in c.actions])) + "\n")
    return EXIT_OK
