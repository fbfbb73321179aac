"""Secrets out of text: every API key promptlab knows becomes `[redacted]`.

Applied where text leaves the process or enters the store (call errors, printed
errors, reports, `models check`): providers echo the bearer token they received
in their error messages.

The keys known are the values of the variables the configured models name
(`api_key_env`, remembered as settings are loaded and keys read) and of the
providers' standard variables present in the environment. Values shorter than
MIN_LENGTH are left alone: they would redact ordinary words.
"""

from __future__ import annotations

import functools
import os
import re
from typing import Any, Callable, Iterable

MASK = "[redacted]"
MIN_LENGTH = 8
# OPENAI_API_KEY, ANTHROPIC_API_KEY, GEMINI_API_KEY, HF_TOKEN, AZURE_CLIENT_SECRET...
_SUFFIXES = ("_API_KEY", "_TOKEN", "_SECRET")
_KNOWN = {"AWS_SECRET_ACCESS_KEY", "WATSONX_APIKEY"}  # standard names without such a suffix
_named: set[str] = set()  # api_key_env of the models seen in this process


def remember(names: Iterable[str | None]) -> None:
    """Treat these environment variables as holding secrets (a model's api_key_env)."""
    _named.update(n for n in names if n)


def secrets() -> frozenset[str]:
    """The secret values present in the environment now."""
    return frozenset(value for name, value in os.environ.items()
                     if len(value) >= MIN_LENGTH
                     and (name in _named or name in _KNOWN or name.upper().endswith(_SUFFIXES)))


@functools.lru_cache(maxsize=8)
def _pattern(values: frozenset[str]) -> re.Pattern | None:
    # longest first: a key that contains another is masked whole
    return re.compile("|".join(map(re.escape, sorted(values, key=len, reverse=True)))) if values else None


def redact(text: str) -> str:
    """`text` with every known secret value replaced by [redacted]."""
    pattern = _pattern(secrets())
    return pattern.sub(MASK, text) if pattern is not None and text else text


def redact_all(value: Any) -> Any:
    """`value` with every string in it (nested dicts and lists) redacted: for records that are
    formatted afterwards, since a key cut short by the formatting would escape the mask."""
    return redactor()(value)


def redactor() -> Callable[[Any], Any]:
    """`redact_all` for the secrets known now, to apply to many values (a report's rows): the
    environment is read once."""
    pattern = _pattern(secrets())
    if pattern is None:
        return lambda value: value

    def walk(v: Any) -> Any:
        if isinstance(v, str):
            return pattern.sub(MASK, v)
        if isinstance(v, dict):
            return {walk(k): walk(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [walk(x) for x in v]
        return v

    return walk
