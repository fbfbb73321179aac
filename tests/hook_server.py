"""A loopback HTTP receiver for `--notify` and trace tests: records every request it gets."""

from __future__ import annotations

import http.server
import threading
from dataclasses import dataclass, field


@dataclass
class Hook:
    url: str
    requests: list[tuple[str, str, dict, bytes]] = field(default_factory=list)  # method, path, headers (lower-case names), body
    status: int = 200


def start_hook(status: int = 200) -> tuple[Hook, http.server.HTTPServer]:
    hook = Hook(url="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def _record(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            hook.requests.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(hook.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_POST = do_GET = do_PUT = _record

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hook.url, hook.status = f"http://127.0.0.1:{server.server_port}", status
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return hook, server
