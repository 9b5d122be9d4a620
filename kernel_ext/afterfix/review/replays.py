"""The `replays` ledger: every replay and what-if a person ran, appended with who and when, listed
and reopened exactly as it was shown (the saved result is the whole comparison, not a recipe to
re-run: the recording, the policies or the model may have changed since)."""

from __future__ import annotations

import getpass
import json
import os
import uuid
from datetime import datetime, timezone

from afterfix._exceptions import NotFound
from afterfix.review.replay import ReplayResult

__all__ = ["save_replay", "list_replays", "open_replay", "default_who", "ENV_USER"]

ENV_USER = "AFTERFIX_USER"
LIST = "afterfix replay --list"


def default_who() -> str:
    """$AFTERFIX_USER, else $USER, else the login name."""
    return os.environ.get(ENV_USER) or os.environ.get("USER") or getpass.getuser()


def _json(value) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def save_replay(store, result: ReplayResult, who: str | None = None, note: str | None = None) -> str:
    """Append `result` to the ledger; returns its replay id (also set on `result`, with who and when)."""
    who = (who or "").strip() or default_who()
    result.replay_id = result.replay_id or f"rpl-{uuid.uuid4().hex[:12]}"
    result.time = datetime.now(timezone.utc).replace(tzinfo=None)
    result.who, result.note = who, note if note is not None else result.note
    store.append_ledger("replays", [{
        "replay_id": result.replay_id, "time": result.time, "who": who, "kind": result.kind,
        "decision_id": result.decision_id or result.first.decision_id, "run_id": result.run_id,
        "incident_id": result.incident_id, "decider": result.decider or "unknown",
        "edits": _json(result.edits) if result.edits else None, "diverged": bool(result.diverged),
        "result": _json(result.to_dict()), "note": result.note,
    }])
    return result.replay_id


def list_replays(store, *, decision_id: str | None = None, run_id: str | None = None, limit: int | None = None) -> list[dict]:
    """Saved replays, newest first: replay_id, time, who, kind, decision_id, run_id, incident_id,
    decider, edits (parsed), diverged, note."""
    where, params = [], []
    if decision_id is not None:
        where.append("decision_id = ?")
        params.append(decision_id)
    if run_id is not None:
        where.append("run_id = ?")
        params.append(run_id)
    sql = ("SELECT replay_id, time, who, kind, decision_id, run_id, incident_id, decider, edits, diverged, note "
           f"FROM replays {'WHERE ' + ' AND '.join(where) if where else ''} ORDER BY time DESC, replay_id"
           + (f" LIMIT {int(limit)}" if limit else ""))
    rows = store.arrow(sql, params).to_pylist()
    for row in rows:
        row["edits"] = json.loads(row["edits"]) if row["edits"] else []
    return rows


def open_replay(store, replay_id: str) -> ReplayResult:
    """A saved replay as it was shown. Raises NotFound naming how to list them."""
    rows = store.arrow("SELECT result, who, time, note FROM replays WHERE replay_id = ? LIMIT 1", [replay_id]).to_pylist()
    if not rows:
        raise NotFound(f"no saved replay {replay_id!r} in {store.where}: list them with {LIST}")
    result = ReplayResult.from_dict(json.loads(rows[0]["result"]))
    result.replay_id, result.who, result.time, result.note = replay_id, rows[0]["who"], rows[0]["time"], rows[0]["note"]
    return result
