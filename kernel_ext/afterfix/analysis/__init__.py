"""Understanding what an agent did: decision trees, timelines, field diffs and findings.

Library first: the CLI, the magics, the templates and the figures all call these functions.
"""
