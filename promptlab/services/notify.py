"""`--notify URL`: when `run`, `optimize` or `guard` ends, POST its JSON summary to a hook.

The summary is the object `--json` prints (scores, gates, the winner and its diff…) plus what
ended and where its reports went, secrets masked. A hook that fails or times out is a warning
returned to the caller, never a failed run: the results are already stored.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from promptlab.errors import UsageError

TIMEOUT_S = 10.0


def check_url(url: str | None) -> str | None:
    """A hook URL, checked before any work is done: http(s) with a host."""
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--notify: '{url}' is not an http(s) URL; give e.g. https://hooks.example.com/promptlab")
    if "@" in parts.netloc:  # it would be printed in the warning and kept in shell history
        raise UsageError("--notify: the URL carries credentials; use a hook URL with a token path instead")
    return url


def post(url: str, summary: dict[str, Any], *, timeout: float = TIMEOUT_S) -> str | None:
    """POST the summary; the warning to print when it was not delivered, else None."""
    from promptlab import __version__
    from promptlab.redact import redact, redact_all

    body = json.dumps(redact_all(summary), ensure_ascii=False, default=str).encode("utf-8")
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "User-Agent": f"promptlab/{__version__}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read(65536)
    except urllib.error.HTTPError as exc:
        return f"--notify: the hook answered HTTP {exc.code}; the summary was not delivered"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        return redact(f"--notify: the hook could not be reached ({reason}); the summary was not delivered")
    return None
