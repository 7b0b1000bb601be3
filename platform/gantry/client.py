"""The CLI's HTTP client and its settings: flags, then GANTRY_URL / GANTRY_API_KEY, then the
file `gantry up` writes (~/.config/gantry/config.toml)."""
from __future__ import annotations

import json
import os
import tomllib
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Iterator

from gantry_runtime.wire import parse_error

DEFAULT_URL = "http://127.0.0.1:8000"


def config_path() -> str:
    base = os.environ.get("XDG_CONFIG_HOME", os.path.expanduser("~/.config"))
    return os.path.join(base, "gantry", "config.toml")


def write_config(url: str, api_key: str) -> str:
    """Write the client config readable by its owner only (it holds the key)."""
    path = config_path()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(f'url = "{url}"\napi_key = "{api_key}"\n')
    return path


class APIError(Exception):
    """An error answer from the platform; str() is one line."""

    def __init__(self, status: int, code: str, message: str):
        self.status, self.code, self.message = status, code, message
        super().__init__(f"{status} {code}: {message}" if status else message)


@dataclass(frozen=True)
class Client:
    url: str
    api_key: str | None
    timeout: float = 330.0

    @classmethod
    def resolve(cls, url: str | None = None, api_key: str | None = None) -> "Client":
        file: dict[str, Any] = {}
        if os.path.isfile(config_path()):
            with open(config_path(), "rb") as f:
                file = tomllib.load(f)
        return cls(url=(url or os.environ.get("GANTRY_URL") or file.get("url") or DEFAULT_URL).rstrip("/"),
                   api_key=api_key or os.environ.get("GANTRY_API_KEY") or file.get("api_key"))

    def _request(self, method: str, path: str, body: bytes | None = None,
                 headers: dict[str, str] | None = None):
        hdrs = dict(headers or {})
        if self.api_key:
            hdrs["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=hdrs)
        try:
            return urllib.request.urlopen(req, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            err = parse_error(raw)
            if err is not None:
                raise APIError(exc.code, *err) from None
            raise APIError(exc.code, "http_error", raw.decode(errors="replace")[:200] or exc.reason) from None
        except urllib.error.URLError as exc:
            raise APIError(0, "unreachable", f"cannot reach {self.url} ({exc.reason}); is `gantry up` running?") from None

    def call(self, method: str, path: str, payload: Any = None) -> Any:
        body = None if payload is None else json.dumps(payload).encode()
        with self._request(method, path, body, {"Content-Type": "application/json"}) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def invoke(self, name: str, body: bytes, content_type: str) -> Iterator[bytes]:
        """Yield the response body as it arrives (streams arrive chunk by chunk)."""
        resp = self._request("POST", f"/v1/invoke/{name}", body, {"Content-Type": content_type})
        with resp:
            while True:
                chunk = resp.read1(65536)
                if not chunk:
                    return
                yield chunk
