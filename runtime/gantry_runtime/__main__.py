"""``python3 -m gantry_runtime``: read the settings, set up JSON logs, serve, exit.

Exit codes: 0 stopped (after a drain), 1 cannot listen, 2 bad configuration (or a secret
file missing),
3 the handler could not be imported.
"""
from __future__ import annotations

import os
import sys
import threading


def main() -> int:
    from .logs import setup_logging
    from .settings import Settings, SettingsError

    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        log = setup_logging(os.environ.get("GANTRY_FUNCTION", ""))
        from .wire import StartFailure
        log.error("invalid configuration", extra={"event": StartFailure.BAD_CONFIG, "error": str(exc)})
        print(f"gantry_runtime: configuration error: {exc}", file=sys.stderr)
        return 2
    log = setup_logging(settings.function, settings.log_level)
    # The handler runs in this process: keep the key out of the environment it and its
    # subprocesses see (it stays in /proc/1/environ, readable to the function's own user).
    from .wire import INSTANCE_KEY_ENV
    os.environ.pop(INSTANCE_KEY_ENV, None)
    # The function's secrets (files the worker mounted) become environment variables before
    # the handler is imported, so code reading them at import sees them.
    from .secretenv import SecretsUnreadable, load as load_secrets
    try:
        load_secrets()
    except SecretsUnreadable as exc:
        from .wire import StartFailure
        log.error("secrets unreadable", extra={"event": StartFailure.SECRETS, "error": str(exc)})
        print(f"gantry_runtime: {exc}", file=sys.stderr)
        return 2

    from .loop import run_until_signal
    from .server import serve

    return run_until_signal(lambda stop: serve(settings, log, stop))


def _exit(code: int) -> None:
    # A handler thread that never returned (stuck past its timeout) would make the
    # interpreter wait forever at exit: leave without joining it.
    main_thread = threading.main_thread()
    if any(t.is_alive() and not t.daemon and t is not main_thread for t in threading.enumerate()):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    _exit(main())
