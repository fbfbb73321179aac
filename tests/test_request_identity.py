"""Single-turn text prompts send what they sent before conversations, tools and images existed:
the same version hash, the same request body byte for byte, the same response-cache key (so
every stored version, cached reply and batch result stays valid). The expected values were
computed with promptlab before that change (commit 3eb8257)."""

from __future__ import annotations

import asyncio
import hashlib

from promptlab.providers import direct as fastpath
from promptlab.config import ModelConfig
from promptlab.evaluation.plan import RunPlan, job
from promptlab.models import Case, Demo, PromptContent, PromptVersion, Signature
from promptlab.prompting.render import render_messages

SIGNATURE = Signature(name="s", instruction="Classify.", inputs=[{"name": "text"}],
                      outputs=[{"name": "label", "type": "enum", "choices": ["pos", "neg"]}])
CONTENT = PromptContent(system="Be brief.", template="Text: {{ text }}",
                        demos=(Demo(inputs={"text": "good"}, outputs={"label": "pos"}),), params={"temperature": 0})
MODEL = ModelConfig(alias="fake", model="openai/fake", api_base="http://127.0.0.1:9/v1")
BEFORE = {"hash": "3275c97fc5e1ef78f2082f8d253c79e8a8907132c37950502ab23031b148c269",
          "key": "f69ea277b7afe24e92378e076837165572b440ad41b362897a9bbda6beb97eed",
          "body": "636b2b1156701ec51f4af35a9ed0a2d3034b1fa7206ff8312b6cc38d139d6a2a"}


def body_sent(messages: list[dict], params: dict) -> bytes:
    """The bytes the direct path POSTs for this request."""
    sent = {}

    class Client:  # the direct path's transport: one POST, its reply read bounded
        async def post(self, url, content, headers, timeout, max_bytes):
            sent["body"] = content
            raise RuntimeError("captured")

    direct = fastpath.DirectClient()
    direct.client = lambda: Client()
    try:
        asyncio.run(direct.chat({"model": MODEL.model, "messages": messages, **params, "timeout": 5,
                                 "api_base": "http://x/v1", "api_key": "k", "num_retries": 0, "max_retries": 0}))
    except RuntimeError:
        pass
    return sent["body"]


def test_a_single_turn_text_prompt_keeps_its_hash_body_and_cache_key():
    from promptlab.evaluation.batch import cache_key

    assert CONTENT.hash() == BEFORE["hash"]
    version = PromptVersion(id=1, project="p", name="p", version=1, content=CONTENT, content_hash=CONTENT.hash())
    plan = RunPlan(1, "r", 1, version, SIGNATURE, MODEL, [], 1, (), dict(CONTENT.params))
    item = job(plan, Case(id=1, inputs={"text": "bad film"}), 0)
    assert item.messages == render_messages(CONTENT, SIGNATURE, {"text": "bad film"})
    assert cache_key(item) == BEFORE["key"]  # the key the per-call path and batch mode share
    assert hashlib.sha256(body_sent(item.messages, item.params)).hexdigest() == BEFORE["body"]
