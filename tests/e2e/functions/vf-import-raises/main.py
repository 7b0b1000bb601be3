"""Raises at import: its configuration table is wrong."""
from config import load

SETTINGS = load()


def handle(event, ctx):
    return SETTINGS
