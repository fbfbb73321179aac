"""Who may talk to the viewer, and what its pages may do in the browser.

- Loopback by default. Bound anywhere else, every request must carry the token:
  `?token=` once (answered with a cookie and a redirect that drops it from the
  address bar), then the cookie, or an `Authorization: Bearer` header. Without it: 401.
- Without a token, the Host header must name the loopback address: a page on another
  site whose name resolves to 127.0.0.1 (DNS rebinding) cannot read the store.
- Every response forbids loading anything from another origin and running any script
  but the viewer's own file (Content-Security-Policy), as the HTML report does.
"""

from __future__ import annotations

import hmac
import ipaddress
from urllib.parse import urlencode

from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

COOKIE = "promptlab_view_token"
MIN_TOKEN = 16
CSP = ("default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; img-src data:; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}
LOOPBACK_NAMES = {"localhost"}


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_name(header: str) -> str:
    """The Host header without its port ('[::1]:8000' -> '::1')."""
    if header.startswith("["):
        return header[1:].partition("]")[0]
    return header.rpartition(":")[0] if header.count(":") == 1 else header


class Guard(BaseHTTPMiddleware):
    def __init__(self, app, token: str | None):
        super().__init__(app)
        self.token = token

    async def dispatch(self, request: Request, call_next) -> Response:
        refused = self._refusal(request)
        if refused is not None:
            response = refused
        elif self.token and _same(request.query_params.get("token"), self.token):
            rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
            response = RedirectResponse(request.url.path + (f"?{urlencode(rest)}" if rest else ""), 303)
            response.set_cookie(COOKIE, self.token, httponly=True, samesite="strict", path="/")
        else:
            response = await call_next(request)
        response.headers.update(HEADERS)
        return response

    def _refusal(self, request: Request) -> Response | None:
        if self.token is None:
            if not is_loopback(_host_name(request.headers.get("host", ""))):
                return PlainTextResponse("promptlab view answers on its loopback address only\n", 421)
            return None
        bearer = request.headers.get("authorization", "")
        given = [request.query_params.get("token"), request.cookies.get(COOKIE),
                 bearer[7:] if bearer.lower().startswith("bearer ") else None]
        if any(_same(g, self.token) for g in given):
            return None
        return PlainTextResponse("promptlab view: this viewer needs its token; open the address it printed "
                                 "at start (…/?token=…)\n", 401)


def _same(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), token.encode())
