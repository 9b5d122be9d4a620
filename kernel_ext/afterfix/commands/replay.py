"""`afterfix replay`: re-make a recorded decision and say whether the choice is the same.

    afterfix replay DECISION_ID [--set PATH=VALUE ...] [--no-downstream] [--endpoint URL|scripted] [--model NAME]
                    [--format table|json] [--save | --no-save] [--who NAME] [--note TEXT]
    afterfix replay --all [--since WHEN] [--until WHEN] [--incident ID] [--save]
    afterfix replay --list [--decision ID]      afterfix replay --open REPLAY_ID

Exit codes (docs/cli.md): 0 the same choice (or --list / --open); 1 a decision chose differently;
2 usage (a bad option, a --set path that names nothing, a malformed value); 3 the decision cannot
be re-made (unknown id, no known policy, a model's decision without --endpoint); 4 the decider
failed (the endpoint is unreachable or answered badly).
"""

from __future__ import annotations

import json
import sys

from afterfix.cli import UsageError, safe

EXIT_SAME, EXIT_DIVERGED, EXIT_NOT_REPLAYABLE, EXIT_DECIDER = 0, 1, 3, 4


def register(subparsers) -> None:
    from afterfix.cli import _store_option, _when

    p = subparsers.add_parser(
        "replay", help="re-make a recorded decision (or a what-if with --set) and say whether it chose the same",
        description="Re-run a recorded decision from what the agent had (recorded inputs, tool results, model "
                    "messages) through its policy or an OpenAI-compatible endpoint, and compare the choice. Never "
                    "calls a tool or touches a cluster: changes the replayed choice implies are shown as 'would do'.")
    _store_option(p)
    p.add_argument("decision_id", nargs="?", metavar="DECISION_ID", help="the decision to re-make")
    p.add_argument("--set", action="append", default=None, metavar="PATH=VALUE", dest="edits",
                   help="what-if: change a recorded input (inputs.metrics.latency_p95_ms=120) or tool result "
                        "(tool:CALL_ID.value=0.5) first; VALUE is JSON, else text; repeatable")
    p.add_argument("--no-downstream", action="store_true",
                   help="with --set, re-run only this decision, not the later decisions of its run")
    p.add_argument("--all", action="store_true", help="replay every decision in the window and report those that diverge")
    p.add_argument("--since", type=_when, default=None, metavar="WHEN", help="with --all: from this time (24h, an ISO time)")
    p.add_argument("--until", type=_when, default=None, metavar="WHEN", help="with --all: before this time")
    p.add_argument("--incident", default=None, metavar="ID", help="with --all: only this incident's decisions")
    p.add_argument("--endpoint", default=None, metavar="URL",
                   help="an OpenAI-compatible server for decisions a model made (http://127.0.0.1:8000/v1), or "
                        "'scripted' for the built-in scripted model with the recorded seed")
    p.add_argument("--model", default=None, metavar="NAME", help="the model to ask (default: the recorded one)")
    p.add_argument("--format", choices=("table", "json"), default="table", help="output format (default: table)")
    save = p.add_mutually_exclusive_group()
    save.add_argument("--save", action="store_true", default=None,
                      help="save to the replays ledger (the default for one decision; --all saves only with it)")
    save.add_argument("--no-save", action="store_false", dest="save", help="do not save")
    p.add_argument("--who", default=None, metavar="NAME", help="who ran it (default: $AFTERFIX_USER, $USER, the login name)")
    p.add_argument("--note", default=None, metavar="TEXT", help="a note saved with it")
    p.add_argument("--list", action="store_true", help="list saved replays, newest first")
    p.add_argument("--decision", default=None, metavar="ID", help="with --list: only this decision's replays")
    p.add_argument("--open", default=None, metavar="REPLAY_ID", help="show a saved replay as it was")
    p.set_defaults(func=cmd_replay)


def _edits(values: list[str]) -> dict:
    from afterfix.review.whatif import parse_value

    out = {}
    for item in values:
        path, eq, value = item.partition("=")
        if not eq or not path.strip():
            raise UsageError(f"--set {item!r}: write PATH=VALUE, e.g. --set inputs.metrics.latency_p95_ms=120")
        out[path.strip()] = parse_value(value)
    return out


def cmd_replay(args) -> int:
    from afterfix.cli import _store

    modes = [bool(args.decision_id), args.all, args.list, bool(args.open)]
    if sum(modes) != 1:
        raise UsageError("give one DECISION_ID, or --all, --list or --open REPLAY_ID")
    if not args.all and (args.since or args.until or args.incident):
        raise UsageError("--since, --until and --incident choose the window of --all")
    if args.edits and not args.decision_id:
        raise UsageError("--set edits one decision: give its DECISION_ID")
    if args.decision and not args.list:
        raise UsageError("--decision filters --list; to replay a decision give its id: afterfix replay DECISION_ID")
    from afterfix._exceptions import NotFound

    try:
        return _run(args, _store(args))
    except NotFound as e:
        print(f"afterfix replay: error: {safe(e, newlines=False)}", file=sys.stderr)
        return EXIT_NOT_REPLAYABLE


def _run(args, store) -> int:
    from afterfix.review.whatif import EditError

    if args.list:
        return _print_list(store, args)
    if args.open:
        from afterfix.review.replays import open_replay

        return _report(args, [open_replay(store, args.open)], saved=False)
    if args.all:
        from afterfix.review.replay import replay_window

        results = replay_window(store, since=args.since, until=args.until, incident_id=args.incident,
                                endpoint=args.endpoint, model=args.model)
        return _report(args, results, saved=bool(args.save), store=store, window=True)
    from afterfix.review.replay import replay_decision, what_if

    try:
        if args.edits:
            result = what_if(store, args.decision_id, _edits(args.edits), endpoint=args.endpoint, model=args.model,
                             downstream=not args.no_downstream)
        else:
            result = replay_decision(store, args.decision_id, endpoint=args.endpoint, model=args.model)
    except EditError as e:
        raise UsageError(f"--set {e}") from None
    return _report(args, [result], saved=args.save is not False, store=store)


def _exit(results) -> int:
    firsts = [d for r in results for d in r.decisions]
    if any(d.diverged for d in firsts):
        return EXIT_DIVERGED
    if any(d.error_kind == "decider_failed" for d in firsts):
        return EXIT_DECIDER
    if any(d.error for d in firsts):
        return EXIT_NOT_REPLAYABLE
    return EXIT_SAME


def _report(args, results, *, saved: bool, store=None, window: bool = False) -> int:
    if saved:
        from afterfix.review.replays import save_replay

        for r in results:
            if not r.first.error:
                save_replay(store, r, args.who, args.note)
    if args.format == "json":
        json.dump([r.to_dict() for r in results], sys.stdout, ensure_ascii=False, default=str)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(format_window(results) if window else "".join(format_result(r) for r in results))
    for r in results:
        for d in r.decisions:
            if d.error:
                print(f"afterfix replay: {d.decision_id}: {safe(d.error, newlines=False)}", file=sys.stderr)
    code = _exit(results)
    if window and code in (EXIT_NOT_REPLAYABLE, EXIT_DECIDER) and any(not d.error for r in results for d in r.decisions):
        code = EXIT_SAME  # a sweep reports what it could not re-make on stderr; its answer is about divergence
    return code


def _s(value) -> str:
    return "-" if value is None or value == "" else safe(value, newlines=False)


def format_result(r) -> str:
    """One replay or what-if: each re-run decision, recorded against replayed, every trace text escaped."""
    out = []
    head = f"{r.kind.replace('_', '-')} of {_s(r.decision_id)} by {_s(r.decider)}"
    if r.replay_id:
        head += f" (saved as {r.replay_id}" + (f" by {_s(r.who)} at {str(r.time)[:19]}" if r.who else "") + ")"
    out.append(head)
    for e in r.edits:
        out.append(f"  edit {_s(e['path'])}: {_s(json.dumps(e['old'], ensure_ascii=False, default=str))} -> "
                   f"{_s(json.dumps(e['new'], ensure_ascii=False, default=str))}" + (f" (via {_s(e['via'])})" if e.get("via") else ""))
    for d in r.decisions:
        out.append(f"\ndecision {_s(d.decision_id)}: {_s(d.question)}")
        if d.error:
            out.append(f"  cannot replay: {_s(d.error)}")
            continue
        out.append(f"  recorded: {_s(d.recorded_selected)}    replayed: {_s(d.replayed_selected)}    "
                   + ("SAME" if d.same else "DIVERGED"))
        for e in d.edits if d is not r.first else []:
            out.append(f"  edit reached it: {_s(e['path'])} -> {_s(json.dumps(e['new'], default=str))}"
                       + (f" (via {_s(e['via'])})" if e.get("via") else ""))
        if d.note:
            out.append(f"  note: {_s(d.note)}")
        for o in d.changed:
            out.append(f"  option {_s(o['id'])}: {_s(o['recorded_verdict'])} -> {_s(o['replayed_verdict'])}")
            out.append(f"    recorded: {_s(o['recorded_reason'])}")
            out.append(f"    replayed: {_s(o['replayed_reason'])}")
        for w in d.would_do:
            out.append(f"  would do (not executed): {_s(w['verb'])} {_s(w['target'])}"
                       + (f" {_s(json.dumps(w['patch'], default=str))}" if w.get("patch") else "")
                       + (f" [recorded {_s(w['action_id'])}: {_s(w['recorded_status'])}]" if w.get("action_id") else ""))
        for m in d.missing:
            out.append(f"  missing: tool call {_s(m)} has no recorded result")
    return "\n".join(out) + "\n"


def format_window(results) -> str:
    import pandas as pd

    from afterfix.cli import format_table

    if not results:
        return "no decisions in the window\n"
    rows = [{"decision_id": r.decision_id, "run_id": r.run_id, "decider": r.first.decider,
             "recorded": r.first.recorded_selected, "replayed": r.first.replayed_selected,
             "result": "error" if r.first.error else ("same" if r.first.same else "DIVERGED")} for r in results]
    diverged = [r for r in results if r.diverged]
    failed = [r for r in results if r.first.error]
    out = [format_table(pd.DataFrame(rows)),
           f"\n{len(results)} decisions replayed: {len(results) - len(diverged) - len(failed)} same, {len(diverged)} diverged, "
           f"{len(failed)} could not be replayed"]
    out += [format_result(r) for r in diverged]
    return "\n".join(out) + "\n"


def _print_list(store, args) -> int:
    import pandas as pd

    from afterfix.cli import EXIT_OK, format_table
    from afterfix.review.replays import list_replays

    rows = list_replays(store, decision_id=args.decision)
    if args.format == "json":
        json.dump(rows, sys.stdout, ensure_ascii=False, default=str)
        sys.stdout.write("\n")
        return EXIT_OK
    if not rows:
        sys.stdout.write("no saved replays" + (f" of {safe(args.decision)}" if args.decision else "") + "\n")
        return EXIT_OK
    frame = pd.DataFrame([{"replay_id": r["replay_id"], "time": str(r["time"])[:19], "who": r["who"], "kind": r["kind"],
                           "decision_id": r["decision_id"], "decider": r["decider"],
                           "diverged": "yes" if r["diverged"] else "no",
                           "edits": "; ".join(f"{e['path']}={json.dumps(e['new'], default=str)}" for e in r["edits"]
                                              if not e.get("via")) or None, "note": r["note"]} for r in rows])
    sys.stdout.write(format_table(frame) + "\n")
    return EXIT_OK
