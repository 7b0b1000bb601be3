def handle(event, ctx)
    return event
