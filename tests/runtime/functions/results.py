"""Each result type the runtime encodes, and one it must refuse."""


def raw(event, ctx):
    """bytes in, bytes out (reversed)."""
    return bytes(reversed(event))


def text(event, ctx):
    return f"héllo {event['name']}"


def number(event, ctx):
    return 42


def nothing(event, ctx):
    return None


def unsupported(event, ctx):
    return {1, 2, 3}


def unserialisable(event, ctx):
    return {"when": object()}
