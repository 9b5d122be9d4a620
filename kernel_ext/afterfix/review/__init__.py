"""Review: what a person does with a recorded night. Replay and what-if, approvals, verdicts,
run comparison and the incident list. Reads the store and the analysis; writes only its own
ledgers (`replays`, `approvals`, `verdicts`). The widgets and the CLI are faces on it."""
