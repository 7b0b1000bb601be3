"""The gateway: public invoke API and admin API (aiohttp on uvloop, stateless, any number of
replicas).  ``create_app(settings)`` builds the app, ``serve(settings, stop_event)`` runs it."""
from .app import create_app, serve
from .settings import GatewaySettings

__all__ = ["GatewaySettings", "create_app", "serve"]
