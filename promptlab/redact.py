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

import base64
import functools
import os
import re
from typing import Any, Callable, Iterable
from urllib.parse import quote

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


class _Masker:
    """Finds every form of the known values a provider, a log or a cut may leave in text: the value
    in any letter case, reversed, base64- (any alignment, standard or url-safe), url- or
    hex-encoded, and any piece of at least MIN_LENGTH characters that starts or ends it (what is
    left of a value cut short, or of one cut out of a longer text)."""

    def __init__(self, values: frozenset[str]):
        self.keys = [k for v in values for k in (v, v[::-1])]
        anchors = {piece.lower() for k in self.keys for piece in (k[:MIN_LENGTH], k[-MIN_LENGTH:])}
        # a lookahead finds anchors at every position, overlapping ones too
        self.anchor = re.compile("(?=(" + "|".join(map(re.escape, sorted(anchors))) + "))", re.I)
        encoded = {form for v in values for form in _encodings(v)}
        self.encoded = re.compile("|".join(map(re.escape, sorted(encoded, key=len, reverse=True)))) \
            if encoded else None

    def spans(self, text: str) -> list[tuple[int, int]]:
        found = []
        if self.encoded is not None:
            found += [m.span() for m in self.encoded.finditer(text)]
        for match in self.anchor.finditer(text):
            at, piece = match.start(), match.group(1).lower()
            for key in self.keys:
                if key[:MIN_LENGTH].lower() == piece:  # a piece that starts the key: extend forwards
                    end, j = at + MIN_LENGTH, MIN_LENGTH
                    while end < len(text) and j < len(key) and text[end].lower() == key[j].lower():
                        end, j = end + 1, j + 1
                    found.append((at, end))
                if key[-MIN_LENGTH:].lower() == piece:  # a piece that ends it: extend backwards
                    start, j = at, len(key) - MIN_LENGTH
                    while start > 0 and j > 0 and text[start - 1].lower() == key[j - 1].lower():
                        start, j = start - 1, j - 1
                    found.append((start, at + MIN_LENGTH))
        return found

    def sub(self, text: str) -> str:
        spans = sorted(self.spans(text))
        if not spans:
            return text
        parts, last = [], 0
        for start, end in spans:
            if end <= last:
                continue
            parts.append(text[last:max(start, last)] + (MASK if start >= last else ""))
            last = end
        return "".join(parts) + text[last:]


def _encodings(value: str) -> set[str]:
    """The value url-, hex- and base64-encoded; for base64 at each of the three alignments it can
    take inside a longer encoded text, the characters that depend on the value alone."""
    raw = value.encode()
    forms = {quote(value, safe=""), raw.hex(), raw.hex().upper()}
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + raw).decode().rstrip("=")
        lead = 4 if offset else 0  # the first group mixes in what came before
        tail = (offset + len(raw)) % 3 and 4  # the last group mixes in what follows
        middle = encoded[lead:len(encoded) - tail]
        if len(middle) >= MIN_LENGTH:
            forms |= {middle, middle.replace("+", "-").replace("/", "_")}
    return forms - {value}


@functools.lru_cache(maxsize=8)
def _masker(values: frozenset[str]) -> _Masker | None:
    return _Masker(values) if values else None


def redact(text: str) -> str:
    """`text` with every known secret value (and its variants: see _Masker) replaced by [redacted]."""
    masker = _masker(secrets())
    return masker.sub(text) if masker is not None and text else text


def redact_all(value: Any) -> Any:
    """`value` with every string in it (nested dicts and lists) redacted: for records that are
    formatted afterwards, since a key cut short by the formatting would escape the mask."""
    return redactor()(value)


def redactor() -> Callable[[Any], Any]:
    """`redact_all` for the secrets known now, to apply to many values (a report's rows): the
    environment is read once."""
    masker = _masker(secrets())
    if masker is None:
        return lambda value: value

    def walk(v: Any) -> Any:
        if isinstance(v, str):
            return masker.sub(v)
        if isinstance(v, dict):
            return {walk(k): walk(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [walk(x) for x in v]
        return v

    return walk
