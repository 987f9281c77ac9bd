"""``pipeline console``: the operator web app (fleet, live alerts, history, rule editor)."""
