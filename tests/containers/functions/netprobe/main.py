"""Tries, from inside its container, what a hostile function would: open connections to
other addresses and POST /invoke there.  Reports what happened to each attempt, and how the
container's own network is set up (default route, DNS)."""
import errno
import os
import socket
import struct
from concurrent.futures import ThreadPoolExecutor


def _attempt(host, port, timeout):
    """"connected" (with the HTTP status, if one came), or why not: "refused", "timeout",
    "unreachable" or "error"."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except socket.timeout:
        return {"result": "timeout"}
    except ConnectionRefusedError:
        return {"result": "refused"}
    except OSError as exc:
        kind = "unreachable" if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH) else "error"
        return {"result": kind, "error": f"{type(exc).__name__}: {exc}"}
    with sock:
        sock.settimeout(timeout)
        body = b"{}"
        head = (f"POST /invoke HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
                f"X-Gantry-Tenant: forged\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n")
        data = b""
        try:
            sock.sendall(head.encode() + body)
            while b"\r\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
        parts = data.split(b" ", 2)
        status = int(parts[1]) if data.startswith(b"HTTP/") and len(parts) > 1 and parts[1].isdigit() else None
        return {"result": "connected", "status": status}


def _default_route():
    """The default gateway from /proc/net/route, or None."""
    with open("/proc/net/route") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[1] == "00000000" and int(fields[3], 16) & 2:   # destination 0, RTF_GATEWAY
                return socket.inet_ntoa(struct.pack("<L", int(fields[2], 16)))
    return None


def _nameservers():
    try:
        with open("/etc/resolv.conf") as f:
            return [line.split()[1] for line in f if line.startswith("nameserver") and len(line.split()) > 1]
    except OSError:
        return []


def probe(event, ctx):
    timeout = float(event.get("timeout", 1.0))
    targets = event.get("targets", [])
    # at once (bounded), so many dropped attempts take one timeout, not one each
    with ThreadPoolExecutor(max(1, min(32, len(targets)))) as pool:
        results = list(pool.map(lambda t: _attempt(t["host"], int(t["port"]), timeout), targets))
    attempts = {t["name"]: {**t, **r} for t, r in zip(targets, results)}
    return {"attempts": attempts, "default_route": _default_route(), "nameservers": _nameservers()}


def whoami(event, ctx):
    """What the runtime told the handler, and whether the instance key is in its environment."""
    return {"tenant": ctx.tenant, "invocation_id": ctx.invocation_id,
            "key_in_environ": any(k == "GANTRY_INSTANCE_KEY" for k in os.environ)}
