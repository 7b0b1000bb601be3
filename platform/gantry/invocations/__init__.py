"""Async invocations: the record and its decisions (model), their Redis operations (store).
The gateway submits them and its dispatcher runs them (gantry.gateway.dispatch)."""
