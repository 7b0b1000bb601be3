"""Callbacks in the gateway: the deliverer every gateway runs in the background
(``callbacks_ctx``; gantry.invocations.callbacks) and ``GET /v1/callbacks/secret``, which
tells a tenant the secret its callbacks are signed with (docs/async.md)."""
from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from ..invocations import signing
from ..invocations.callbacks import (CallbackSecretError, CallbackStore, Deliverer, SigningSecrets,
                                     configured_secret, new_session)
from . import audit
from .appkeys import PRINCIPAL, REDIS, SETTINGS
from .auth import acting_tenant, require

log = logging.getLogger("gantry.gateway")

SIGNING = web.AppKey("callback_signing", SigningSecrets)
DELIVERER = web.AppKey("callback_deliverer", Deliverer)


async def callbacks_ctx(app: web.Application):
    """After the gateway's Redis context: the signing secrets and the deliverer's loop."""
    try:
        configured = configured_secret()
    except CallbackSecretError as exc:       # set but unusable: stop at start, with the cause
        raise RuntimeError(f"callback signing secret: {exc}") from None
    store = CallbackStore(app[REDIS])
    app[SIGNING] = secrets = SigningSecrets(store, configured)
    session = new_session()
    app[DELIVERER] = deliverer = Deliverer(store, secrets, session, deliverer_id=app[SETTINGS].gateway_id)
    task = asyncio.create_task(deliverer.run(), name="gantry-callbacks")
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await session.close()


async def get_secret(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    require(principal, "secrets")
    tenant = acting_tenant(request, principal)
    secret = await request.app[SIGNING].for_tenant(tenant)
    await audit.record(request, "callback_secret.read", tenant, tenant=tenant)
    return web.json_response({"tenant": tenant, "secret": secret.hex(), "algorithm": signing.ALGORITHM,
                              "header": signing.HEADER})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/callbacks/secret", get_secret)
