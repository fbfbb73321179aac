"""A turn in a conversation: the case's earlier turns, then its user message with any images.

An input of type `messages` holds earlier {role, content} turns (user/assistant); they are
sent, in signature order, before the user turn the template renders. An input of type
`image` is not text: it goes into that user turn as an image content part after the text
part. A version with neither sends exactly what it always sent (a plain-text user message).
"""

from __future__ import annotations

from typing import Any

from promptlab.models import Signature
from promptlab.prompting import images


def turns(inputs: dict[str, Any], signature: Signature | None) -> list[dict[str, str]]:
    """The earlier turns the `messages` inputs hold, as chat messages."""
    if signature is None:
        return []
    return [{"role": t["role"], "content": t["content"]}
            for name in signature.fields_of("messages") for t in inputs.get(name) or ()]


def user_turn(text: str, inputs: dict[str, Any], signature: Signature | None) -> dict[str, Any]:
    """The user message: its text, plus one image_url part per image input (text first)."""
    pictures = [inputs[n] for n in signature.fields_of("image") if inputs.get(n)] if signature else []
    if not pictures:
        return {"role": "user", "content": text}
    return {"role": "user", "content": [{"type": "text", "text": text}, *map(images.part, pictures)]}


def text_of(content: Any) -> str:
    """A message's content as text (content-part lists joined, images as short labels)."""
    if isinstance(content, list):
        return "\n".join(p.get("text", "") if p.get("type") == "text"
                         else images.describe(p.get("image_url", {}).get("url", ""))
                         for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""
