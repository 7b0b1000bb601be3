"""Fails at import: not valid Python."""

def handle(event, ctx)
    return {}
