"""Open a local HTML file (or a local server's URL) in headless Chromium over the DevTools protocol (aiohttp websocket).

    with Chromium.launch(tmp_dir) as browser:
        page = browser.open(path, evaluate={"pwned": "typeof window.__pwned"})
        page.requests, page.console_errors, page.values["pwned"], page.screenshot (PNG bytes)

Every request the page makes, every console error, uncaught exception and
browser log error (CSP violations included) is recorded. The timeouts below
only stop a hung browser from hanging the suite; no test asserts on speed.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = os.environ.get("PROMPTLAB_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--mute-audio", "--hide-scrollbars",
         "--remote-debugging-port=0", "--remote-allow-origins=*"]
HANG_S = 60.0


def available() -> bool:
    return Path(CHROMIUM).exists()


@dataclass
class Page:
    url: str
    requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)
    screenshot: bytes = b""


class Chromium:
    def __init__(self, proc: subprocess.Popen, ws_url: str):
        self.proc, self.ws_url = proc, ws_url

    @classmethod
    def launch(cls, profile_dir: Path) -> "Chromium":
        profile_dir.mkdir(parents=True, exist_ok=True)
        port_file = profile_dir / "DevToolsActivePort"
        port_file.unlink(missing_ok=True)  # a stale one from an earlier browser
        proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile_dir}", "about:blank"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        loop_s = 0.05
        for _ in range(int(HANG_S / loop_s)):
            if port_file.exists() and len(port_file.read_text().splitlines()) >= 2:
                port, path = port_file.read_text().splitlines()[:2]
                return cls(proc, f"ws://127.0.0.1:{port}{path}")
            if proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {proc.returncode} before listening")
            time.sleep(loop_s)
        proc.kill()
        raise RuntimeError("chromium did not start its DevTools endpoint")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> "Chromium":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def open(self, target: Path | str, evaluate: dict[str, str] | None = None, *, width: int = 1280,
             height: int = 1000) -> Page:
        """Load the file (or the URL), run each expression in order in that page (returned by value),
        take a full-page screenshot."""
        url = target if isinstance(target, str) else target.resolve().as_uri()
        return asyncio.run(asyncio.wait_for(self._open(url, evaluate or {}, width, height), HANG_S))

    async def _open(self, url: str, evaluate: dict[str, str], width: int, height: int) -> Page:
        import aiohttp

        page = Page(url=url)
        ids = itertools.count(1)
        pending: dict[int, asyncio.Future] = {}
        loaded = asyncio.Event()
        session_id: str | None = None

        async with aiohttp.ClientSession() as http, http.ws_connect(self.ws_url, max_msg_size=0) as ws:
            async def reader() -> None:
                async for msg in ws:
                    data = msg.json()
                    if "id" in data and data["id"] in pending:
                        pending.pop(data["id"]).set_result(data)
                        continue
                    if data.get("sessionId") != session_id:
                        continue
                    method, params = data.get("method"), data.get("params", {})
                    if method == "Network.requestWillBeSent":
                        page.requests.append(params["request"]["url"])
                    elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                        page.console_errors.append(" ".join(str(a.get("value", a.get("description", "")))
                                                            for a in params.get("args", [])))
                    elif method == "Runtime.exceptionThrown":
                        details = params.get("exceptionDetails", {})
                        page.console_errors.append(details.get("text", "") + " " +
                                                   str(details.get("exception", {}).get("description", "")))
                    elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                        page.console_errors.append(f"{params['entry'].get('source')}: {params['entry'].get('text')}")
                    elif method == "Page.loadEventFired":
                        loaded.set()

            async def call(method: str, params: dict | None = None, session: bool = True) -> dict:
                msg_id = next(ids)
                future = asyncio.get_running_loop().create_future()
                pending[msg_id] = future
                message = {"id": msg_id, "method": method, "params": params or {}}
                if session and session_id:
                    message["sessionId"] = session_id
                await ws.send_json(message)
                reply = await future
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

            task = asyncio.create_task(reader())
            try:
                target = (await call("Target.createTarget", {"url": "about:blank"}, session=False))["targetId"]
                session_id = (await call("Target.attachToTarget", {"targetId": target, "flatten": True},
                                         session=False))["sessionId"]
                for domain in ("Page", "Runtime", "Log", "Network"):
                    await call(f"{domain}.enable")
                await call("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
                loaded.clear()
                await call("Page.navigate", {"url": page.url})
                await loaded.wait()
                for name, expression in evaluate.items():
                    result = await call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                             "awaitPromise": True})
                    if "exceptionDetails" in result:
                        raise RuntimeError(f"evaluating {name}: {result['exceptionDetails']}")
                    page.values[name] = result["result"].get("value")
                shot = await call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
                page.screenshot = base64.b64decode(shot["data"])
                await call("Target.closeTarget", {"targetId": target}, session=False)
            finally:
                task.cancel()
        return page


def pixel_stddev(png: bytes) -> float:
    """Standard deviation of the grey levels of a PNG (0 for a blank page)."""
    import io

    import numpy as np
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("L")
    return float(np.asarray(image, dtype=float).std())
