"""The gateway: public invoke API and admin API (httptools and aiohttp on uvloop, stateless,
any number of replicas).  ``create_app(settings)`` builds the app, ``make_runner(app)`` its
runner (gateway.front), ``serve(settings, stop_event)`` runs it."""
from .app import create_app, make_runner, serve
from .settings import GatewaySettings

__all__ = ["GatewaySettings", "create_app", "make_runner", "serve"]
