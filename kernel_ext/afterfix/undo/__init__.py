"""Undoing agent actions: the action ledger, rollback plans and their checks, execution, and the guard."""
