"""One pool of persistent connections to the Docker socket for the worker's calls.

The docker SDK (7.x) keeps its unix-socket connection pools in a cache keyed by the request's
whole URL, path and query included (transport.unixconn.UnixHTTPAdapter.get_connection): every
call on a container id it has not seen (create's inspect, start, the port's inspect) opened a
new connection to dockerd, 4 of the 6 requests of a start (benchmarks/cold_docker.py).  The
adapter here keys every request of the client to one pool, so a cold start's calls ride
connections that are already open.  A request that holds its connection (a log follower's
stream) takes it out of the pool; the others keep reusing the idle ones.
"""
from __future__ import annotations

import logging

from docker.transport.unixconn import UnixHTTPAdapter

log = logging.getLogger("gantry.worker")

POOL_SIZE = 32      # idle connections kept: the agent's Docker threads, and some to spare


class OnePoolAdapter(UnixHTTPAdapter):
    """UnixHTTPAdapter whose requests share a single connection pool, whatever their URL."""

    def get_connection(self, url, proxies=None):
        return super().get_connection("http+docker://localhost", proxies)


def persistent(client, pool_size: int = POOL_SIZE):
    """Give CLIENT (a docker.DockerClient on a unix socket) one persistent pool; CLIENT.
    A client on another transport (TCP, ssh) is left as it is."""
    api = getattr(client, "api", None)
    adapter = getattr(api, "_custom_adapter", None)
    if type(adapter) is not UnixHTTPAdapter:
        return client
    one = OnePoolAdapter(api.base_url if api.base_url.startswith("http+unix") else
                         "http+unix://" + adapter.socket_path, timeout=adapter.timeout, max_pool_size=pool_size)
    one.socket_path = adapter.socket_path
    api._custom_adapter = one
    api.mount("http+docker://", one)
    adapter.close()
    return client
