class BuildError(RuntimeError):
    """An image could not be built; the message says which step and why (pip's own error included)."""
