"""Plotly figures of what analysis found: one module per figure.

    tree.decision_tree(tree)                            one run's decisions, options and actions
    timeline.incident_timeline(timeline, metrics)       an incident's steps per run, over its metric
    overview.night_overview(incidents, actions)         a night's incidents and actions at a glance

Figures import `afterfix.analysis` (its model), never the other way round, and every text from a
trace goes through `_text` before plotly sees it (plotly reads text as HTML).
"""
