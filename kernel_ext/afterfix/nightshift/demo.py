"""`afterfix demo`: play a simulated night shift into the store, or serve its cluster again.

    afterfix demo [--store PATH] [--seed N] [--dir DIR]
    afterfix demo cluster --port P --kubeconfig PATH [--state FILE]

The first runs every scenario from 22:00 to 07:00 (simulated) into the store and prints what
happened and how to review it; the second serves the cluster the night left behind, so the
official client (and `kubectl`) can inspect and undo what the agent did.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_DIR = Path("traces") / "demo"


def _default_dir() -> Path:
    from afterfix.store import _repo_root

    root = _repo_root()
    return (root / DEFAULT_DIR) if root is not None else DEFAULT_DIR


def register(subparsers) -> argparse.ArgumentParser:
    """Add `demo` (and `demo cluster`) to an argparse subparsers object; returns the demo parser."""
    p = subparsers.add_parser("demo", help="play a simulated night shift into the store and print a summary",
                              description="Run the Kubernetes API simulator and the reference SRE agent through a "
                                          "simulated night (all scenarios, 22:00 -> 07:00), storing every trace.")
    p.add_argument("--store", type=Path, default=None, metavar="PATH", help="store folder (default: AFTERFIX_STORE or traces/store)")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the night: the same seed plays the same night (default 0)")
    p.add_argument("--dir", type=Path, default=None, metavar="DIR",
                   help="where the cluster state and kubeconfig are kept (default: traces/demo/)")
    p.add_argument("--until", type=_clock_time, default=None, metavar="HH:MM",
                   help="end the night early, at this simulated time (default 07:00)")
    p.add_argument("--quiet", action="store_true", help="print the summary only, not the night as it happens")
    p.set_defaults(func=_run_demo)
    sub = p.add_subparsers(dest="demo_command", metavar="{cluster}")
    c = sub.add_parser("cluster", help="serve the simulated cluster a demo night left behind",
                       description="Serve the Kubernetes API simulator on the saved state (Ctrl-C stops it).")
    c.add_argument("--port", type=int, required=True, metavar="PORT", help="TCP port on 127.0.0.1 (0 picks a free one)")
    c.add_argument("--kubeconfig", type=Path, required=True, metavar="PATH", help="where to write a kubeconfig for this server")
    c.add_argument("--state", type=Path, default=None, metavar="FILE",
                   help="simulator state file (default: traces/demo/cluster.json); created if missing")
    c.add_argument("--realtime-factor", type=float, default=60.0, metavar="F",
                   help="simulated seconds per wall-clock second (default 60; 0 freezes time)")
    c.set_defaults(func=_run_cluster)
    return p


def _examples_dir() -> Path | None:
    """traces/examples/ of the checkout: the SDK-made example traces ride along with the night."""
    from afterfix.store import _repo_root

    root = _repo_root()
    path = root / "traces" / "examples" if root is not None else None
    return path if path is not None and path.is_dir() else None


def _clock_time(text: str) -> float:
    """HH:MM of the simulated night as epoch seconds (times before noon are the next morning)."""
    from afterfix.nightshift.scenarios import NIGHT_START

    try:
        hours, minutes = (int(x) for x in text.split(":"))
        if not (0 <= hours < 24 and 0 <= minutes < 60):
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a time like 02:30") from None
    offset = ((hours - 22) % 24) * 3600 + minutes * 60
    return NIGHT_START + offset


def _run_demo(args) -> int:
    from afterfix.nightshift.night import run_night
    from afterfix.store import Store, default_store_spec

    store = Store(args.store or default_store_spec())
    workdir = args.dir or _default_dir()
    say = (lambda msg: None) if args.quiet else (lambda msg: print("  " + msg, flush=True))
    print(f"afterfix demo: simulated night shift (seed {args.seed}) into {store.where}", flush=True)
    until = {"until": args.until} if args.until else {}
    result = run_night(store, workdir=workdir, seed=args.seed, progress=say, **until)
    print(result.summary())
    examples = _examples_dir()
    if examples is not None:
        from afterfix.ingest.files import ingest_paths

        ex = ingest_paths(store, [examples], progress=False)
        print(f"  examples    {ex.spans_stored} spans stored from {examples} "
              f"({ex.duplicates} already there, {len(ex.refused)} refused)")
    briefing = _brief(store, result, workdir)
    regression = _regression(store, result, workdir)
    print(f"\n  store       {result.store}")
    print(f"  state       {result.state_file}")
    print(f"  kubeconfig  {result.kubeconfig}")
    if briefing is not None:
        print(f"  briefing    {briefing}    the morning briefing of this night: open it in a browser")
    if regression is not None:
        folder, count = regression
        print(f"  regression  {folder}    {count} incidents of this night as pytest regression tests")
    print(f"\nServe the cluster the night left behind (official client, kubectl):\n"
          f"  afterfix demo cluster --port 8001 --kubeconfig {result.kubeconfig} --state {result.state_file}")
    undo = _undo_example(store)
    if undo:
        print("then plan the undo of one agent change (nothing is written without --apply --reason):\n"
              f"  afterfix rollback {undo} --kubeconfig {result.kubeconfig}\n"
              f"  afterfix rollback {undo} --fields DB_POOL_SIZE --dry-run --kubeconfig {result.kubeconfig}")
    if regression is not None:
        print(f"run the night's regression suite (replay, reasoning checks, re-simulation):\n"
              f"  .venv/bin/pytest {regression[0]}")
    print("\nReview it in JupyterLab:\n  .venv/bin/jupyter lab notebooks/    then open review_incident.ipynb")
    return 0


def _undo_example(store) -> str | None:
    """The night's rollback that also reverted other fields: the one worth undoing in part."""
    try:
        rows = store.query("""SELECT action_id FROM actions WHERE mutating AND status = 'applied' AND verb = 'rollback'
                              AND coalesce(field_manager, '') <> 'afterfix' ORDER BY start_time DESC LIMIT 1""")
    except Exception:
        return None
    return None if rows.empty else str(rows.iloc[0]["action_id"])


def _brief(store, result, workdir: Path) -> Path | None:
    """Render the night's morning briefing (its window: the cluster's setup to the night's end)."""
    from datetime import datetime, timezone

    from afterfix._exceptions import AfterfixError
    from afterfix.nightshift.scenarios import SETUP_AT
    from afterfix.reports.render import brief

    def iso(t: float) -> str:
        return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")

    print("  rendering the morning briefing (papermill + nbconvert)...", flush=True)
    try:
        done = brief(store, since=iso(SETUP_AT), until=iso(result.ended + 60), output=Path(workdir) / "briefing.html")
    except AfterfixError as e:  # the night is stored either way; say why there is no briefing
        print(f"  briefing    not rendered: {e}")
        return None
    for line in done.handoff:
        print(f"    {line}")
    return done.html.resolve()


def _regression(store, result, workdir: Path) -> tuple[Path, int] | None:
    """Write the night's regression suite (trust.gentests) for the incidents its agent handled well."""
    from datetime import datetime, timezone

    from afterfix._exceptions import AfterfixError
    from afterfix.nightshift.scenarios import SETUP_AT
    from afterfix.trust.gentests import candidates, generate

    def naive(t: float) -> datetime:
        return datetime.fromtimestamp(t, tz=timezone.utc).replace(tzinfo=None)

    folder = (Path(workdir) / "regression").resolve()
    try:
        ids = candidates(store, naive(SETUP_AT), naive(result.ended + 60))
        if not ids:
            return None
        generate(store, ids, folder)
    except AfterfixError as e:  # the night is stored either way; say why there is no suite
        print(f"  regression  not written: {e}")
        return None
    return folder, len(ids)


def _run_cluster(args) -> int:
    from afterfix.nightshift.apiserver import serve_cluster

    state = args.state or (_default_dir() / "cluster.json")
    serve_cluster(port=args.port, kubeconfig=args.kubeconfig, state_file=state, realtime_factor=args.realtime_factor)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m afterfix.nightshift.demo [...]`: the same as `afterfix demo [...]`."""
    parser = argparse.ArgumentParser(prog="afterfix")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["demo", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
