"""A real browser for the tests: headless Chromium (Debian's ``chromium``, which
scripts/setup.sh installs) driven over the Chrome DevTools Protocol with aiohttp's websocket
client; no Node, no driver.

``Browser.evaluate_when(url, expression)`` opens a page and polls a JavaScript expression
until it is not null, then returns its value: a page writes what it saw into a global and
the test reads it back.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any

import aiohttp

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0")


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    def __init__(self, exe: str) -> None:
        self.exe = exe
        self.proc: asyncio.subprocess.Process | None = None
        self.session: aiohttp.ClientSession | None = None
        # Chromium's helper processes may still write the profile as it is removed
        self._dir = tempfile.TemporaryDirectory(prefix="gantry-chromium-", ignore_cleanup_errors=True)
        self._ids = itertools.count(1)
        self.port = 0

    async def __aenter__(self) -> "Browser":
        profile = Path(self._dir.name)
        self.proc = await asyncio.create_subprocess_exec(
            self.exe, *FLAGS, f"--user-data-dir={profile}", "about:blank",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, start_new_session=True)
        active = profile / "DevToolsActivePort"    # Chromium writes its port here once listening
        async with asyncio.timeout(30):
            while not (active.exists() and active.read_text().strip()):
                if self.proc.returncode is not None:
                    raise RuntimeError(f"chromium exited with {self.proc.returncode}")
                await asyncio.sleep(0.1)
        self.port = int(active.read_text().split()[0])
        self.session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.session is not None:
            await self.session.close()
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                async with asyncio.timeout(10):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self.proc is not None:
            try:                                   # its renderer, GPU and crash-handler processes too
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._dir.cleanup()

    async def _page_ws(self) -> str:
        async with self.session.get(f"http://127.0.0.1:{self.port}/json/list") as resp:
            targets = await resp.json(content_type=None)
        return next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")

    async def evaluate_when(self, url: str, expression: str, timeout: float = 20) -> Any:
        """Navigate the page to ``url``; poll ``expression`` until it is not null; return it."""
        async with self.session.ws_connect(await self._page_ws(), max_msg_size=0) as ws:
            async def send(method: str, **params: Any) -> dict:
                msg_id = next(self._ids)
                await ws.send_str(json.dumps({"id": msg_id, "method": method, "params": params}))
                async for msg in ws:
                    data = json.loads(msg.data)
                    if data.get("id") == msg_id:
                        if "error" in data:
                            raise RuntimeError(f"{method}: {data['error']}")
                        return data["result"]
                raise RuntimeError("the DevTools connection closed")

            await send("Page.navigate", url=url)
            async with asyncio.timeout(timeout):
                while True:
                    result = await send("Runtime.evaluate", expression=expression, returnByValue=True)
                    value = result["result"].get("value")
                    if value is not None:
                        return value
                    await asyncio.sleep(0.1)
