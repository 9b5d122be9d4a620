"""RollbackPanel: undo one agent action from a notebook, as `afterfix rollback` does from a shell.

    RollbackPanel(store, "act-5851288e04bc", kubeconfig="traces/demo/kubeconfig")

It shows the plan of `afterfix.undo.plan.make_plan` (what is restored, what is kept, every field's
before / the agent's value / now and who owns it now, and every check with its verdict) and the
inverse patch. A field selector narrows the undo to some fields (empty: all the plan restores).
"Dry run" runs `afterfix.undo.rollback.rollback_action(..., dry_run=True)`: the server-side
dry-run, nothing written. "Apply" needs a reason, and a second click to confirm; then the
rollback runs (dry-run, preconditioned write, read-back) and the panel shows its result and the
audit record: this action's rows in the `rollbacks` ledger. Restoring fields someone changed
after the agent (drift) needs the override box ticked and a reason of its own.

Everything shown from the record or the cluster is escaped. The panel computes nothing itself:
the plan, the checks and the refusal messages are the engine's, word for word.
"""

from __future__ import annotations

import getpass
import json
import os

import ipywidgets as W

from afterfix.widgets._common import STYLE, open_store, table, text

__all__ = ["RollbackPanel", "ENV_USER"]

ENV_USER = "AFTERFIX_USER"  # as `afterfix rollback --who` defaults
_MARK = {"pass": ("ok", "afterfix-ok"), "info": ("info", "afterfix-muted"), "warn": ("WARN", "afterfix-warn"),
         "block": ("STOP", "afterfix-bad")}
_LEDGER_COLUMNS = [("time", "time (UTC)"), ("rollback_id", "rollback"), ("who", "who"), ("outcome", "outcome"),
                   ("reason", "reason"), ("fields", "fields"), ("override_reason", "override reason"),
                   ("message", "message")]


def _value(v) -> str:
    if v is None:
        return "(absent)"
    return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)


class RollbackPanel(W.VBox):
    """Plan, dry-run and apply the undo of one action. See the module docstring."""

    def __init__(self, store=None, action_id: str = "", *, kubeconfig: str | None = None, context: str | None = None,
                 cluster=None, who: str | None = None):
        super().__init__()
        from afterfix.undo.kube import ClusterError, connect

        self.store = open_store(store)
        self.action_id = action_id
        self.plan = None
        self.result = None
        self._armed = False
        self.header = W.HTML()
        self.plan_html = W.HTML()
        self.fields = W.SelectMultiple(description="only fields", rows=4, layout=W.Layout(width="95%"))
        self.fields.style = {"description_width": "110px"}
        self.who = W.Text(value=who or os.environ.get(ENV_USER) or getpass.getuser(), description="who",
                          layout=W.Layout(width="320px"))
        self.reason = W.Textarea(description="reason", placeholder="why this change is undone (required to apply; recorded)",
                                 layout=W.Layout(width="640px", height="56px"))
        self.override = W.Checkbox(description="override drift: restore fields changed since the agent", indent=False,
                                   layout=W.Layout(width="auto"))
        self.override_reason = W.Text(description="override reason", placeholder="why overwriting the later change is right",
                                      disabled=True, layout=W.Layout(width="640px"))
        for w in (self.who, self.reason, self.override_reason):
            w.style = {"description_width": "110px"}
        self.replan_button = W.Button(description="Re-plan", icon="refresh")
        self.dry_button = W.Button(description="Dry run", button_style="info")
        self.apply_button = W.Button(description="Apply", button_style="warning")
        self.message = W.HTML()
        self.result_html = W.HTML()
        self.ledger_html = W.HTML()
        self.children = [W.HTML(STYLE), self.header, self.plan_html, self.fields, self.who, self.reason,
                         self.override, self.override_reason,
                         W.HBox([self.replan_button, self.dry_button, self.apply_button]), self.message,
                         self.result_html, W.HTML("<b>Audit record</b> (rollbacks ledger)"), self.ledger_html]

        self.override.observe(self._on_override, names="value")
        for w in (self.fields, self.reason, self.override, self.override_reason):
            w.observe(lambda ch: self._disarm(), names="value")
        self._filling = False
        self.fields.observe(lambda ch: self._filling or self.replan(), names="value")
        self.replan_button.on_click(lambda b: self.replan())
        self.dry_button.on_click(lambda b: self.dry_run())
        self.apply_button.on_click(lambda b: self.apply())

        self.cluster = cluster
        self._own_cluster = False
        if cluster is None:
            try:
                self.cluster = connect(kubeconfig=kubeconfig, context=context)
                self._own_cluster = True
            except ClusterError as e:
                self._refuse(f"cannot reach the cluster: {e}")
        self.replan(fill_fields=True)
        self._draw_ledger()

    # -- what the buttons do --------------------------------------------------------------------

    def _chosen_fields(self) -> list[str] | None:
        return list(self.fields.value) or None

    def replan(self, fill_fields: bool = False) -> None:
        """Plan again against the live object, with the fields and the override as set."""
        from afterfix.undo.kube import ClusterError
        from afterfix.undo.plan import PlanError, load_action, make_plan

        try:
            act = load_action(self.store, self.action_id)
        except PlanError as e:
            self._refuse(str(e))
            return
        self._draw_header(act)
        if self.cluster is None:
            return
        try:
            self.plan = make_plan(self.store, self.cluster, self.action_id, fields=self._chosen_fields(),
                                  override_drift=self.override.value, action=act)
        except (PlanError, ClusterError) as e:
            self.plan = None
            self.plan_html.value = ""
            self._refuse(str(e))
            return
        if fill_fields:
            self._filling = True
            try:
                self.fields.options = [(f"{f.label} ({f.path})", f.path) for f in self.plan.fields
                                       if f.state != "server-managed"]
            finally:
                self._filling = False
        self.plan_html.value = plan_html(self.plan)
        self.message.value = ""
        ready = self.plan.outcome == "ready"
        self.dry_button.disabled = self.apply_button.disabled = not ready

    def dry_run(self) -> None:
        """The server-side dry-run of the inverse (a `dry_run` row in the ledger; nothing written)."""
        self._run(dry_run=True)

    def apply(self) -> None:
        """First click: check the reasons and ask to confirm. Second click: roll back."""
        if not self.reason.value.strip():
            self._refuse("a reason is required to apply: write why this change is being undone (it is recorded)")
            return
        if self.override.value and not self.override_reason.value.strip():
            self._refuse("the drift override needs its own reason: write why overwriting the later change is right")
            return
        if not self._armed:
            self._armed = True
            self.apply_button.description = "Confirm apply"
            self.apply_button.button_style = "danger"
            target = self.plan.target if self.plan else {}
            self.message.value = (f"<span class='afterfix-warn'>Click <b>Confirm apply</b> to write the inverse to "
                                  f"{text(target.get('kind'))} {text(target.get('namespace'))}/{text(target.get('name'))}"
                                  "; change anything above to cancel.</span>")
            return
        self._disarm()
        self._run(dry_run=False)

    def _run(self, *, dry_run: bool) -> None:
        from afterfix.undo.rollback import rollback_action

        if self.cluster is None:
            self._refuse("no cluster: pass kubeconfig= (and context=) to RollbackPanel")
            return
        if self.override.value and not self.override_reason.value.strip():
            self._refuse("the drift override needs its own reason: write why overwriting the later change is right")
            return
        self.message.value = "<span class='afterfix-muted'>" + ("dry run…" if dry_run else "rolling back…") + "</span>"
        self.result = rollback_action(
            self.store, self.cluster, self.action_id, who=self.who.value.strip() or "unknown",
            reason=self.reason.value.strip() or None, fields=self._chosen_fields(), dry_run=dry_run,
            override_drift_reason=self.override_reason.value.strip() if self.override.value else None)
        r = self.result
        good = r.outcome in ("rolled_back", "dry_run", "already_rolled_back", "nothing_to_do")
        parts = [f"<div class='{'afterfix-ok' if good else 'afterfix-bad'}'><b>{text(r.outcome)}</b>: {text(r.message)}</div>"]
        if r.rollback_id:
            parts.append(f"<div class='afterfix-muted'>recorded as {text(r.rollback_id)} in the rollbacks ledger"
                         + (f"; trace {text(r.trace_id)}" if r.trace_id else "") + "</div>")
        for key, label in (("dry_run", "server dry-run"), ("verification", "read-back")):
            if r.result.get(key):
                parts.append(f"<div>{label}</div><pre class='afterfix-pre'>"
                             f"{text(json.dumps(r.result[key], indent=2, ensure_ascii=False, default=str))}</pre>")
        self.result_html.value = "".join(parts)
        self.message.value = ""
        self._draw_ledger()
        if not dry_run:
            self.replan()

    # -- drawing ---------------------------------------------------------------------------------

    def _refuse(self, message: str) -> None:
        self.message.value = f"<span class='afterfix-bad'>{text(message)}</span>"

    def _disarm(self) -> None:
        if self._armed:
            self._armed = False
            self.apply_button.description = "Apply"
            self.apply_button.button_style = "warning"
            self.message.value = ""

    def _on_override(self, change) -> None:
        self.override_reason.disabled = not change["new"]
        self.replan()

    def _draw_header(self, act: dict) -> None:
        self.header.value = (
            f"<h3 style='margin:4px 0'>Roll back {text(act.get('action_id'))}</h3>"
            f"<div>{text(act.get('verb'))} {text(act.get('target_kind'))} {text(act.get('target_namespace'))}/"
            f"{text(act.get('target_name'))} by {text(act.get('agent_name'))} at {text(str(act.get('start_time'))[:19])} UTC"
            f" · decision {text(act.get('decision_id'))} · incident {text(act.get('incident_id'))} · status "
            f"{text(act.get('status'))}</div>")

    def ledger_rows(self) -> list[dict]:
        """This action's rows in the `rollbacks` ledger, oldest first."""
        frame = self.store.query("SELECT * FROM rollbacks WHERE action_id = ? ORDER BY time, rollback_id",
                                 [self.action_id])
        return frame.to_dict("records")

    def _draw_ledger(self) -> None:
        rows = [{**r, "time": f"{r['time']:%Y-%m-%d %H:%M:%S}"} for r in self.ledger_rows()]
        self.ledger_html.value = table(rows, _LEDGER_COLUMNS, limit=300, short=("time", "rollback_id", "who", "outcome"),
                                       wide=("reason", "message")) if rows else \
            "<i class='afterfix-muted'>no rollback of this action recorded yet</i>"

    def close(self) -> None:
        if getattr(self, "_own_cluster", False) and self.cluster is not None:
            self.cluster.close()
        super().close()


def plan_html(plan) -> str:
    """The plan as `afterfix rollback --plan` prints it, as escaped HTML."""
    outcome_cls = {"ready": "afterfix-ok", "refused": "afterfix-bad"}.get(plan.outcome, "afterfix-muted")
    rows = []
    for f in plan.fields:
        what = ("not written" if f.state == "server-managed" else "RESTORE" if f.restore
                else "already restored" if f.state == "already restored" else "stays")
        rows.append({"what": what, "field": f.label, "path": f.path, "before": _value(f.before),
                     "agent": _value(f.agent_after), "now": _value(f.now), "state": f.state,
                     "owner": f"{f.owner or ''}{' at ' + f.owner_time if f.owner_time else ''}"})
    checks = "".join(
        f"<tr><td class='{_MARK.get(c.status, (c.status, ''))[1]}'>{text(_MARK.get(c.status, (c.status,))[0])}</td>"
        f"<td>{text(c.name)}</td><td>{text(c.summary)}</td></tr>" for c in plan.checks)
    summary = plan.summary if plan.summary.startswith(plan.outcome.replace("_", " ")) else f"{plan.outcome}: {plan.summary}"
    out = [f"<div class='{outcome_cls}' style='font-weight:600'>{text(summary)}</div>"]
    if rows:
        out.append(table(rows, [("what", ""), ("field", "field"), ("before", "before"), ("agent", "agent set"),
                                ("now", "now"), ("state", "state"), ("owner", "last written by")],
                         limit=200, short=("what",), values=("field", "before", "agent", "now", "owner")))
    out.append("<div><b>Checks</b></div><table class='afterfix-table'><thead><tr><th></th><th>check</th>"
               f"<th>what it found</th></tr></thead><tbody>{checks}</tbody></table>")
    if plan.patch:
        how = "delete with preconditions" if plan.method == "delete" else "strategic merge patch, fieldManager afterfix"
        out.append(f"<div><b>Inverse</b> ({text(how)})</div><pre class='afterfix-pre'>"
                   f"{text(json.dumps(plan.patch, ensure_ascii=False))}</pre>")
    return "".join(out)
