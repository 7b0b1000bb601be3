"""The CLI's one-line failure.  Its own module, not gantry.cli: under `python -m gantry.cli`
that file runs as __main__, and a class that command modules imported from `gantry.cli`
would be a second copy that main()'s `except CLIError` does not catch."""


class CLIError(Exception):
    pass
