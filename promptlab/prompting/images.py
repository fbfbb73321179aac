"""Image inputs: a file path, an https:// URL or a data: URI, sent as an image_url content part.

A file becomes a base64 data URI when its case is read (relative paths from the case file's
folder), so the stored case, its hash and every request's cache key carry the image's bytes:
an edited picture is a new case and a new request, never a stale cached reply. A URL is sent
as it is (promptlab fetches nothing); its cache key covers the URL only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from pathlib import Path
from typing import Any, Iterable

from promptlab.models import FieldSpec

MAX_IMAGE_BYTES = 5 * 1024 * 1024  # the smallest per-image limit of the big providers (Anthropic's)
# the formats every vision API takes, by their first bytes
_MAGIC = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"),
          (b"GIF87a", "image/gif"), (b"GIF89a", "image/gif"))
_DATA_URI = re.compile(r"data:(image/(?:png|jpeg|gif|webp));base64,([A-Za-z0-9+/=\s]+)", re.S)


def sniff(data: bytes) -> str | None:
    """The image's MIME type by its first bytes (PNG, JPEG, GIF, WebP), else None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return next((mime for magic, mime in _MAGIC if data.startswith(magic)), None)


def data_uri(data: bytes, where: str) -> str:
    mime = sniff(data)
    if mime is None:
        raise ValueError(f"{where} is not a PNG, JPEG, GIF or WebP image; convert it to one of those")
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def decode(value: str) -> tuple[str, bytes]:
    """A data URI's MIME type and bytes; ValueError when it is not a base64 image within the cap."""
    match = _DATA_URI.fullmatch(value.strip())
    if match is None:
        raise ValueError("is a data: URI that is not data:image/(png|jpeg|gif|webp);base64,…")
    if len(match.group(2)) * 3 // 4 > MAX_IMAGE_BYTES + 3:
        raise ValueError(f"is an image over the {MAX_IMAGE_BYTES // 2**20} MiB limit; shrink it")
    try:
        return match.group(1), base64.b64decode(match.group(2), validate=False)
    except binascii.Error:
        raise ValueError("is a data: URI whose base64 does not decode") from None


def resolve(value: str, base_dir: Path | None) -> str:
    """The value as it is sent: a checked data URI or https URL, or a file (relative to
    `base_dir`, else the working folder) read into a data URI. ValueError says what is wrong."""
    text = value.strip()
    if text.startswith("data:"):
        decode(text)
        return text
    if text.startswith("https://"):
        return text
    if re.match(r"[a-z][a-z0-9+.-]*://", text, re.I):
        raise ValueError(f"'{text[:60]}' is neither https:// nor a file; give an https URL, a path or a data: URI")
    path = Path(text).expanduser()
    path = path if path.is_absolute() or base_dir is None else base_dir / path
    try:
        size = path.stat().st_size
        if size > MAX_IMAGE_BYTES:
            raise ValueError(f"file {path} has {size} bytes, over the {MAX_IMAGE_BYTES // 2**20} MiB "
                             f"image limit; shrink it")
        with open(path, "rb") as f:
            data = f.read(MAX_IMAGE_BYTES + 1)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise ValueError(f"file {path} not found; give a path relative to the case file, an https "
                         f"URL or a data: URI") from None
    except PermissionError:
        raise ValueError(f"file {path} cannot be read (permission denied)") from None
    return data_uri(data, f"file {path}")


def resolve_inputs(values: dict[str, Any], fields: Iterable[FieldSpec], base_dir: Path | None,
                   kind: str = "input") -> dict[str, Any]:
    """`values` with each image field's value resolved (`resolve`); ValueError names the field."""
    out = dict(values)
    for spec in fields:
        if spec.type == "image" and isinstance(out.get(spec.name), str):
            try:
                out[spec.name] = resolve(out[spec.name], base_dir)
            except ValueError as exc:
                raise ValueError(f"{kind} '{spec.name}': {exc}") from None
    return out


def part(value: str) -> dict[str, Any]:
    """The OpenAI content part of an image."""
    return {"type": "image_url", "image_url": {"url": value}}


def describe(value: str) -> str:
    """A data URI as a short label (type, size, digest) for terminals, reports and the viewer."""
    try:
        mime, data = decode(value)
    except ValueError:
        return value[:60] + ("…" if len(value) > 60 else "")
    return f"[{mime}, {len(data):,} bytes, sha256 {hashlib.sha256(data).hexdigest()[:12]}]"


def shorten(value: Any) -> Any:
    """`value` with every image data URI in it replaced by its `describe` label (for display only)."""
    if isinstance(value, str):
        return describe(value) if value.startswith("data:image/") else value
    if isinstance(value, list):
        return [shorten(v) for v in value]
    if isinstance(value, dict):
        return {k: shorten(v) for k, v in value.items()}
    return value
