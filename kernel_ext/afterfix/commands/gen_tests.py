"""`afterfix gen-tests`: resolved incidents as a pytest regression suite.

    afterfix gen-tests INCIDENT_ID... -o DIR [--store PATH]
    afterfix gen-tests --good [--since T] [--until T] -o DIR     # every incident whose agent did well

Writes test_<id>.py and <id>.json per incident, and DIR/conftest.py; run them with `pytest DIR`.
Exit 0 written, 2 usage or an unknown incident id.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from afterfix.cli import UsageError, safe


def register(subparsers) -> None:
    from afterfix.cli import _store_option

    p = subparsers.add_parser(
        "gen-tests", help="write a pytest regression test (and frozen fixture) per incident",
        description="Freeze what the agent saw in each incident and write a pytest module that replays its "
                    "decisions, checks their reasoning and re-simulates the fix. Run the suite with pytest DIR.",
        usage="afterfix gen-tests INCIDENT_ID... -o DIR [--store PATH]\n"
              "       afterfix gen-tests --good [--since T] [--until T] -o DIR [--store PATH]")
    _store_option(p)
    p.add_argument("incident_ids", nargs="*", metavar="INCIDENT_ID", help="incidents to turn into tests")
    p.add_argument("-o", "--output", required=True, type=Path, metavar="DIR", help="folder to write the suite to")
    p.add_argument("--good", action="store_true",
                   help="every incident whose agent did well (verified, untainted, not judged wrong) in the window")
    p.add_argument("--since", type=datetime.fromisoformat, default=None, metavar="T",
                   help="with --good: incidents that started at or after T (ISO time)")
    p.add_argument("--until", type=datetime.fromisoformat, default=None, metavar="T",
                   help="with --good: incidents that started before T (ISO time)")
    p.set_defaults(func=cmd_gen_tests)


def cmd_gen_tests(args) -> int:
    from afterfix._exceptions import AfterfixError
    from afterfix.cli import EXIT_OK, _store
    from afterfix.trust.gentests import candidates, generate

    store = _store(args)
    ids = list(args.incident_ids)
    if args.good:
        ids += [i for i in candidates(store, args.since, args.until) if i not in ids]
    if not ids:
        raise UsageError("no incidents: name INCIDENT_ID... or pass --good; list them with "
                         'afterfix query "SELECT incident_id, title, status FROM incidents"')
    try:
        written = generate(store, ids, args.output)
    except AfterfixError as e:
        raise UsageError(str(e)) from None
    modules = [p for p in written if p.name.startswith("test_")]
    print(f"wrote {len(modules)} regression test module(s) with their fixtures to {safe(args.output)}")
    print(f"run them: pytest {safe(args.output)}")
    return EXIT_OK
