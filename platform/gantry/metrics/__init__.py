"""Per-minute function metrics: the mergeable duration histogram (histogram), the stored
rows and their summaries (model, pure), and their Redis store (store).  The gateway records
and flushes them (gantry.gateway.metrics); docs/metrics.md is the user's view."""
