"""Greets whoever the event names and echoes the event back."""


def handle(event, ctx):
    name = event.get("name", "world") if isinstance(event, dict) else "world"
    ctx.logger.info("greeting", extra={"name": name})
    return {"hello": name, "echo": event}
