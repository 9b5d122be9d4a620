"""The trust gradient: how far an agent may go on its own, rule by rule, and whether it kept to it.

A trust policy (`policy.py`, a YAML file; templates/trust.yaml is the documented example) maps an
action (verb, resource kind, namespace, scenario labels) to a level: 1 alert and recommend,
2 fix with approval, 3 fix and inform, 4 fix and report. `compliance.py` checks every action in
the store against it and reports what broke it as `trust_violation` findings; the ladder
(`ladder.py`) promotes and demotes rules from their track record; `gentests.py` turns resolved
incidents into regression tests. Like undo/ and review/, trust/ reads the store and analysis,
writes only its own ledger, and imports no face.
"""
