"""Loopback OpenAI-compatible fake server for tests and benchmarks.

Runs in its OWN process (so it never competes for the GIL with the client under
test, and keeps counting when a test SIGKILLs a CLI subprocess):

    python -m tests.fake_openai --port 0 [--latency-ms 5] [--rule great=positive] ...

prints ``READY http://127.0.0.1:PORT`` on stdout once listening.

Endpoints: POST /v1/chat/completions, POST /v1/embeddings, GET /v1/models,
POST /_control (merge behaviour keys), GET /_stats, POST /_reset.
Batch API (OpenAI's shapes): POST /v1/files (multipart, purpose=batch),
GET /v1/files/{id}/content, POST /v1/batches, GET /v1/batches[/{id}]; a batch
answers every request by the chat rules once it completes (knobs batch_*).
Tools: `tool_rules` make a reply call a tool the request offers (OpenAI's tool_calls shape);
`strict_requests` (on) answers 400, as OpenAI does, to malformed content parts (text and
image_url, with https or base64 data: URLs), tools and tool_choice.
Structured outputs are enforced as a server would: a reply under a `json_schema`
response_format is a JSON object, under vLLM's choice lists one of the choices.

From Python use ``start_server(...)`` (context manager) which returns a
stdlib-only ``FakeLLM`` client; tests get one via the ``fake_llm`` fixture.
aiohttp is imported lazily so importing this module for the client stays cheap.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import itertools
import json
import math
import os
import random
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

HANG_MAX_S = 30.0

# Every key accepted by /_control (and settable by CLI flags); values are defaults.
DEFAULT_BEHAVIOUR: dict[str, Any] = {
    "latency_ms": 0.0,              # added per request with asyncio.sleep
    "jitter_ms": 0.0,               # + uniform(0, jitter_ms)
    "fail_rate": 0.0,               # probability a request fails (seeded RNG)
    "fail_statuses": [500],         # status picked uniformly when fail_rate fires
    "retry_after": "0",             # Retry-After header value on 429s (str or seconds)
    "fail_first_n": 0,              # per distinct content: fail the first N attempts...
    "fail_first_n_status": 500,     # ...with this status, then succeed
    "always_status_if_contains": {},  # {"BAD-REQUEST": 400, ...} matched on any message
    "hang_if_contains": [],         # substring(s) -> sleep hang_seconds (timeouts)
    "hang_seconds": HANG_MAX_S,     # capped at HANG_MAX_S
    "rules": [],                    # [[substring, reply], ...] first match on last user msg;
                                    # [anywhere, substring, reply]: also needs `anywhere` in any message
    "default_reply": "OK",          # used when no rule matches (and echo is off)
    "echo": False,                  # reply with the last user message when no rule matches
    "rules_temperature": None,      # [low, high]: the rules answer only requests whose temperature is
                                    # in it (default_reply otherwise, also when none is sent)
    "error_rate": 0.0,              # share of conversations that always fail (picked by content hash
    "error_status": 400,            # and seed: the same items on every run), with this status
    "flip_rate": 0.0,               # probability a chat reply is swapped for another of flip_choices
    "flip_choices": [],             # (seeded per conversation and attempt: reproducible in any order)
    "require_api_key": None,        # if set, other bearer tokens get 401
    "echo_auth_in_error": False,    # answer 400 quoting the Authorization header (as some providers do)
    "null_content": False,          # 200 replies whose message content is null
    "tool_rules": [],               # [[substring, tool name, arguments], ...]: when the request offers
                                    # that tool and the last user message has the substring, the reply
                                    # calls it (content null, finish_reason tool_calls), as a real model
    "strict_requests": True,        # 400 for malformed content parts, tools or tool_choice (as OpenAI)
    "record_bodies": False,         # keep request bodies in stats["bodies"]
    "record_arrivals": False,       # keep each API request's arrival (server clock, s) in stats["arrivals"]
    "seed": 0,                      # seeds the fail_rate / jitter RNG (re-seeded on set)
    "batch_delay_s": 0.0,           # a batch completes this long after its creation
                                    # (validating for the first quarter, then in_progress)
    "batch_hold": False,            # batches stay in_progress while this is on
    "batch_expire_next": 0,         # the next N batches created expire...
    "batch_expire_done": 0,         # ...with only their first M requests answered
    "batch_fail_next": 0,           # the next N batches created fail (no output at all)
    "batch_create_hang_after": None,  # batch creations after the first N hang (until the client goes)
    "batch_output_lag": 0,          # a completed batch names no output file for its first N reads
    "batch_list_status": None,      # listing batches answers this error status (a provider without it)
    "batch_garble_if_contains": [],  # output lines for these conversations are not JSON, or JSON of
                                     # the wrong shape (alternately)
    # hostile replies (issue 20). {auth} in a text becomes the request's Authorization header.
    "usage_override": None,          # {"prompt_tokens": 1e30, ...} merged into every reply's usage
    "content_if_contains": {},       # {substring: content}: the reply's content, e.g. "{auth}" or deep JSON
    "raw_reply_if_contains": {},     # {substring: {"chunk": str, "repeat": n (-1: never ends),
                                     #  "trickle_s": s, "status": 200}}: the body sent as is, chunk by chunk
    "batch_raw_line_if_contains": {},  # {substring: line}: the output line for that conversation, as is
                                       # ({custom_id} and {auth} filled in)
}

ERROR_TYPES = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", "permission_denied"),
    404: ("invalid_request_error", "model_not_found"),
    408: ("timeout_error", "timeout"),
    422: ("invalid_request_error", "unprocessable"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
}


def content_key(payload: Any) -> str:
    """sha256 of the canonical JSON of messages (chat) / input (embeddings), 16 hex."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _text(content: Any) -> str:
    # Message content may be a string or a list of {"type": "text", "text": ...} parts.
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def embed(text: str, dim: int = 16) -> list[float]:
    """Deterministic hashed bag-of-words vector, L2-normalised."""
    v = [0.0] * dim
    for w in text.lower().split():
        h = int.from_bytes(hashlib.md5(w.encode()).digest()[:4], "little")
        v[h % dim] += 1.0 if (h >> 16) & 1 else -1.0
    n = math.sqrt(sum(x * x for x in v))
    if n == 0:
        v[0], n = 1.0, 1.0
    return [x / n for x in v]


# ----------------------------------------------------------------------------- server
class State:
    def __init__(self, initial: dict[str, Any]):
        self.initial = dict(initial)
        self.reset()

    def reset(self) -> None:
        self.b = dict(self.initial)
        self.rng = random.Random(self.b["seed"])
        self.gen = getattr(self, "gen", 0) + 1  # requests from before a reset aren't counted
        self.first_n_seen: dict[str, int] = {}
        self.total = 0
        self.by_status: dict[str, int] = {}
        self.by_path: dict[str, int] = {}
        self.by_content: dict[str, int] = {}      # all attempts
        self.by_content_ok: dict[str, int] = {}   # 200 responses only
        self.models: dict[str, int] = {}
        self.auth_present = 0
        self.auth_missing = 0
        self.auth_values: dict[str, int] = {}
        self.inflight = 0
        self.max_inflight = 0
        self.bodies: list[Any] = []
        self.arrivals: list[float] = []
        self.files: dict[str, dict[str, Any]] = {}    # id -> {"object": file fields, "data": bytes}
        self.batches: dict[str, dict[str, Any]] = {}  # id -> batch object (+ private "_" keys)
        self.batch_items: list[int] = []              # requests per batch created, in order
        self.batch_bytes: list[int] = []              # and the size of its input file
        self.batch_answered = 0                       # requests answered by completed batches

    def update(self, patch: dict[str, Any]) -> None:
        if "replies" in patch:  # accept nested {"replies": {"rules":..,"default_reply":..,"echo":..}}
            patch = {**patch, **patch.pop("replies")}
        unknown = set(patch) - set(DEFAULT_BEHAVIOUR)
        if unknown:
            raise ValueError(f"unknown behaviour keys: {sorted(unknown)}")
        self.b.update(normalise(patch))
        if "seed" in patch:
            self.rng = random.Random(self.b["seed"])
        if "fail_first_n" in patch or "fail_first_n_status" in patch:
            self.first_n_seen.clear()

    def stats(self) -> dict[str, Any]:
        def rep(d: dict[str, int]) -> int:
            return sum(c - 1 for c in d.values() if c > 1)

        out = {
            "total": self.total,
            "by_status": self.by_status,
            "by_path": self.by_path,
            "by_content": self.by_content,
            "by_content_ok": self.by_content_ok,
            "repeated": rep(self.by_content_ok),          # duplicate successful calls
            "repeated_attempts": rep(self.by_content),    # duplicates incl. failed attempts
            "models": self.models,
            "auth_present": self.auth_present,
            "auth_missing": self.auth_missing,
            "auth_values": self.auth_values,
            "inflight": self.inflight,
            "max_inflight": self.max_inflight,
            "behaviour": self.b,
            "batches": {"created": len(self.batch_items), "items": self.batch_items, "bytes": self.batch_bytes,
                        "answered": self.batch_answered,
                        "statuses": [bt["status"] for bt in self.batches.values()]},
        }
        if self.b["record_bodies"]:
            out["bodies"] = self.bodies
        if self.b["record_arrivals"]:
            out["arrivals"] = self.arrivals
        return out


def normalise(b: dict[str, Any]) -> dict[str, Any]:
    b = dict(b)
    if isinstance(b.get("hang_if_contains"), str):
        b["hang_if_contains"] = [b["hang_if_contains"]]
    if "always_status_if_contains" in b:
        b["always_status_if_contains"] = {k: int(v) for k, v in b["always_status_if_contains"].items()}
    if "rules" in b:
        b["rules"] = [list(r) for r in b["rules"]]
    if "tool_rules" in b:
        b["tool_rules"] = [list(r) for r in b["tool_rules"]]
    if "fail_statuses" in b:
        b["fail_statuses"] = [int(s) for s in b["fail_statuses"]]
    return b


def _draw(*key: Any) -> float:
    """A uniform number in [0, 1) fixed by `key` (seed, conversation, purpose, attempt)."""
    return random.Random(hashlib.sha256(repr(key).encode()).digest()).random()


def error_body(status: int, msg: str) -> dict[str, Any]:
    typ, code = ERROR_TYPES.get(status, ("server_error", "server_error"))
    return {"error": {"message": msg, "type": typ, "code": code, "param": None}}


def forced_status(b: dict[str, Any], joined: str) -> tuple[int, str] | None:
    """(status, why) when always_status_if_contains forces one on this conversation."""
    return next(((st, f"forced status {st} (matched {sub!r})")
                 for sub, st in b["always_status_if_contains"].items() if sub in joined), None)


def chat_reply(b: dict[str, Any], joined: str, last_user: str, temperature: Any = None) -> str:
    band = b["rules_temperature"]
    if band is not None and not (isinstance(temperature, (int, float)) and band[0] <= temperature <= band[1]):
        return b["default_reply"]
    for rule in b["rules"]:
        # [substring of the last user message, reply], or
        # [substring anywhere in the conversation, substring of the last user message, reply]
        anywhere, sub, rep = rule if len(rule) == 3 else ("", *rule)
        if anywhere in joined and sub in last_user:
            return rep
    return last_user if b["echo"] else b["default_reply"]


DECODING_KEYS = ("response_format", "structured_outputs", "guided_choice", "guided_json")


def constrained(reply: str, body: dict[str, Any]) -> str:
    """The reply as a server that enforces the request's structured output would give it: one of
    vLLM's choices (`structured_outputs.choice`, `guided_choice`), or, under a `json_schema`
    response_format, a JSON object (a bare reply becomes its first property). A reply outside the
    choices becomes the first choice it contains; one that names none stays as it is (the fake
    has no model to pick a choice with)."""
    choices = (body.get("structured_outputs") or {}).get("choice") or body.get("guided_choice")
    if choices:
        return _one_of(reply, choices)
    fmt = body.get("response_format") or {}
    if fmt.get("type") != "json_schema":
        return reply
    try:
        if isinstance(json.loads(reply), dict):
            return reply
    except ValueError:
        pass
    props = (fmt.get("json_schema") or {}).get("schema", {}).get("properties") or {"output": {}}
    name, schema = next(iter(props.items()))
    return json.dumps({name: _one_of(reply, schema["enum"]) if schema.get("enum") else reply})


def _one_of(reply: str, choices: list[str]) -> str:
    return reply if reply in choices else next((c for c in choices if c in reply), reply)


def chat_texts(msgs: list[Any]) -> tuple[list[str], str]:
    """Every message's text, and the last user message's."""
    texts = [_text(m.get("content")) for m in msgs if isinstance(m, dict)]
    last_user = next((_text(m.get("content")) for m in reversed(msgs)
                      if isinstance(m, dict) and m.get("role") == "user"), "")
    return texts, last_user


def tool_call(b: dict[str, Any], req: dict[str, Any], last_user: str) -> dict[str, Any] | None:
    """The call a tool rule makes on this request (only to a tool the request offers), else None."""
    offered = {(t.get("function") or {}).get("name") for t in req.get("tools") or () if isinstance(t, dict)}
    for sub, name, arguments in b["tool_rules"]:
        if sub in last_user and name in offered:
            return {"name": name, "arguments": arguments}
    return None


def request_problem(req: dict[str, Any]) -> str | None:
    """Why OpenAI would refuse this chat request's content parts, tools or tool_choice (None: fine)."""
    for i, msg in enumerate(req.get("messages") or ()):
        content = msg.get("content") if isinstance(msg, dict) else None
        if isinstance(content, list):
            for part in content:
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "text" and isinstance(part.get("text"), str):
                    continue
                url = (part.get("image_url") or {}).get("url") if kind == "image_url" else None
                if msg.get("role") != "user" and kind == "image_url":
                    return f"messages[{i}]: image content parts are only allowed in user messages"
                if not isinstance(url, str) or not url.startswith(("https://", "data:image/")):
                    return f"messages[{i}]: invalid content part {json.dumps(part)[:80]}"
                if url.startswith("data:"):
                    head, _, data = url.partition(",")
                    try:
                        base64.b64decode(data, validate=True)
                    except ValueError:
                        return f"messages[{i}]: invalid base64 image data"
                    if not head.endswith(";base64"):
                        return f"messages[{i}]: image data URIs must be base64"
        elif not isinstance(content, str):
            return f"messages[{i}]: content must be a string or a list of content parts"
    names = []
    for j, tool in enumerate(req.get("tools") or ()):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or tool.get("type") != "function" \
                or not isinstance(function.get("name"), str):
            return f"tools[{j}]: expected {{type: function, function: {{name, parameters}}}}"
        names.append(function["name"])
    choice = req.get("tool_choice")
    if choice is not None and not names:
        return "tool_choice is only allowed when tools are specified"
    if isinstance(choice, dict) and (choice.get("function") or {}).get("name") not in names:
        return "tool_choice names a tool the request does not offer"
    return None


def completion_body(b: dict[str, Any], ck: str, model: str, texts: list[str], reply: str,
                    call: dict[str, Any] | None = None) -> dict[str, Any]:
    pt = sum(len(t.split()) for t in texts)
    ct = len(reply.split())
    message: dict[str, Any] = {"role": "assistant", "content": None if b["null_content"] else reply}
    if call is not None:
        message = {"role": "assistant", "content": None, "tool_calls": [{
            "id": f"call_{ck}", "type": "function",
            "function": {"name": call["name"], "arguments": json.dumps(call["arguments"])}}]}
    return {
        "id": f"chatcmpl-fake-{ck}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message,
                     "logprobs": None, "finish_reason": "stop" if call is None else "tool_calls"}],
        "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct,
                  **(b["usage_override"] or {})},
    }


def make_app(state: State):
    from aiohttp import web

    dumps = json.dumps

    def jresp(obj: Any, status: int = 200, headers: dict[str, str] | None = None):
        return web.Response(text=dumps(obj), status=status, headers=headers,
                            content_type="application/json")

    def fail(status: int, msg: str):
        hdrs = None
        if status == 429:
            ra = state.b["retry_after"]
            hdrs = {"Retry-After": str(ra)}
        return jresp(error_body(status, msg), status, hdrs)

    async def handle_api(request, kind: str):
        s = state
        gen = s.gen
        s.total += 1
        if s.b["record_arrivals"]:
            s.arrivals.append(time.monotonic())
        path = request.path
        s.by_path[path] = s.by_path.get(path, 0) + 1
        auth = request.headers.get("Authorization")
        if auth:
            s.auth_present += 1
            s.auth_values[auth] = s.auth_values.get(auth, 0) + 1
        else:
            s.auth_missing += 1
        s.inflight += 1
        if s.inflight > s.max_inflight:
            s.max_inflight = s.inflight
        status = 500
        try:
            resp = await _process(request, kind, s)
            status = resp.status
            return resp
        finally:
            s.inflight -= 1
            if gen == s.gen:  # a request straddling /_reset is not counted afterwards
                k = str(status)
                s.by_status[k] = s.by_status.get(k, 0) + 1
                ck = request.get("ck")
                if ck is not None and status == 200:
                    s.by_content_ok[ck] = s.by_content_ok.get(ck, 0) + 1

    async def _process(request, kind: str, s: State):
        b = s.b
        try:
            body = await request.json()
        except Exception:
            return fail(400, "request body is not valid JSON")
        if b["record_bodies"]:
            s.bodies.append(body)
        model = body.get("model", "")
        s.models[model] = s.models.get(model, 0) + 1

        if kind == "chat":
            msgs = body.get("messages") or []
            decoding = {k: body[k] for k in DECODING_KEYS if k in body}
            ck = content_key({"messages": msgs, **decoding} if decoding else msgs)  # a distinct request
            texts, last_user = chat_texts(msgs)
        else:
            inp = body.get("input", "")
            ck = content_key(inp)
            texts = [inp] if isinstance(inp, str) else [str(x) for x in inp]
            last_user = ""
        request["ck"] = ck
        s.by_content[ck] = s.by_content.get(ck, 0) + 1

        delay = b["latency_ms"] + (s.rng.uniform(0, b["jitter_ms"]) if b["jitter_ms"] else 0.0)
        if delay > 0:
            await asyncio.sleep(delay / 1000.0)

        joined = "\n".join(texts)
        forced = forced_status(b, joined)
        if forced is not None:
            return fail(*forced)
        for sub in b["hang_if_contains"]:
            if sub in joined:
                await asyncio.sleep(min(float(b["hang_seconds"]), HANG_MAX_S))
                break
        if b["echo_auth_in_error"]:
            return fail(400, f"malformed request; headers were: Authorization: "
                            f"{request.headers.get('Authorization')}")
        auth = request.headers.get("Authorization") or ""
        raw = next((spec for sub, spec in b["raw_reply_if_contains"].items() if sub in joined), None)
        if raw is not None:
            return await raw_reply(request, raw, auth)
        key = b["require_api_key"]
        if key is not None and request.headers.get("Authorization") != f"Bearer {key}":
            return fail(401, "Incorrect API key provided")
        if b["fail_first_n"] > 0:
            seen = s.first_n_seen.get(ck, 0) + 1
            s.first_n_seen[ck] = seen
            if seen <= b["fail_first_n"]:
                return fail(b["fail_first_n_status"], f"injected failure {seen}/{b['fail_first_n']}")
        if b["error_rate"] > 0 and _draw(b["seed"], ck, "error") < b["error_rate"]:
            return fail(b["error_status"], f"injected item error {b['error_status']} (error_rate)")
        if b["fail_rate"] > 0 and s.rng.random() < b["fail_rate"]:
            st = s.rng.choice(b["fail_statuses"])
            return fail(st, f"injected random failure {st}")
        if kind == "chat" and body.get("stream"):
            return fail(400, "streaming is not supported by the fake server")
        problem = request_problem(body) if kind == "chat" and b["strict_requests"] else None
        if problem is not None:
            return fail(400, problem)

        if kind == "embed":
            data = [{"object": "embedding", "index": i, "embedding": embed(t)}
                    for i, t in enumerate(texts)]
            n = sum(len(t.split()) for t in texts)
            return jresp({"object": "list", "data": data, "model": model,
                          "usage": {"prompt_tokens": n, "total_tokens": n}})

        reply = next((c for sub, c in b["content_if_contains"].items() if sub in joined), None)
        reply = chat_reply(b, joined, last_user, body.get("temperature")) if reply is None else \
            reply.replace("{auth}", auth)
        if b["flip_rate"] > 0 and _draw(b["seed"], ck, "flip", s.by_content[ck]) < b["flip_rate"]:
            others = [c for c in b["flip_choices"] if c != reply]
            reply = others[int(_draw(b["seed"], ck, "to", s.by_content[ck]) * len(others))] if others else reply
        return jresp(completion_body(b, ck, model, texts, constrained(reply, body), tool_call(b, body, last_user)))

    async def raw_reply(request, spec: dict[str, Any], auth: str):
        """A body sent as is, chunk by chunk: huge, never-ending or trickling replies."""
        response = web.StreamResponse(status=int(spec.get("status", 200)),
                                      headers={"Content-Type": "application/json"})
        await response.prepare(request)
        chunk = str(spec.get("chunk", "")).replace("{auth}", auth).encode()
        repeat, trickle = int(spec.get("repeat", 1)), float(spec.get("trickle_s", 0))
        sent = 0
        try:
            while repeat < 0 or sent < repeat:
                await response.write(chunk)
                sent += 1
                if trickle:
                    await asyncio.sleep(trickle)
            await response.write_eof()
        except (ConnectionError, asyncio.CancelledError):  # the client gave up on it
            pass
        return response

    async def chat(request):
        return await handle_api(request, "chat")

    async def embeddings(request):
        return await handle_api(request, "embed")

    async def models(request):
        return jresp({"object": "list", "data": [
            {"id": m, "object": "model", "created": 0, "owned_by": "fake"}
            for m in ("fake", "fake-embed")]})

    async def control(request):
        try:
            state.update(await request.json())
        except Exception as e:  # bad keys/values are a test bug: make it loud
            return jresp({"error": str(e)}, 400)
        return jresp(state.b)

    async def stats(request):
        return jresp(state.stats())

    async def reset(request):
        state.reset()
        return jresp({"ok": True})

    # ---- Batch API: files and batches in OpenAI's shapes
    ids = itertools.count(1)  # ids never repeat, not even after /_reset (as a real provider's)

    def new_id(prefix: str) -> str:
        return f"{prefix}-fake-{next(ids):06d}"

    def add_file(data: bytes, purpose: str, filename: str) -> dict[str, Any]:
        fid = new_id("file")
        obj = {"id": fid, "object": "file", "bytes": len(data), "created_at": int(time.time()),
               "filename": filename, "purpose": purpose, "status": "processed", "status_details": None}
        state.files[fid] = {"object": obj, "data": data}
        return obj

    async def create_file(request):
        form = await request.post()
        upload = form.get("file")
        if upload is None or not hasattr(upload, "file"):
            return fail(400, "multipart field 'file' is required")
        if form.get("purpose") != "batch":
            return fail(400, "purpose must be 'batch'")
        return jresp(add_file(upload.file.read(), "batch", upload.filename or "upload.jsonl"))

    async def file_content(request):
        entry = state.files.get(request.match_info["file_id"])
        if entry is None:
            return fail(404, "no such file")
        return web.Response(body=entry["data"], content_type="application/octet-stream")

    async def create_batch(request):
        gen = state.gen
        hang_after = state.b["batch_create_hang_after"]
        if hang_after is not None and len(state.batch_items) >= hang_after:
            await asyncio.sleep(HANG_MAX_S)  # cancelled when the client is killed
            if gen != state.gen:  # never lands in a later test's counts
                return fail(503, "reset while hanging")
        body = await request.json()
        entry = state.files.get(body.get("input_file_id", ""))
        if entry is None:
            return fail(404, "no such input file")
        lines = [json.loads(line) for line in entry["data"].decode().splitlines() if line.strip()]
        b = state.b
        if b["record_bodies"]:  # each request's body, as for chat requests
            state.bodies.extend(line.get("body") for line in lines)
        fate = "complete"
        if b["batch_fail_next"] > 0:
            b["batch_fail_next"] -= 1
            fate = "fail"
        elif b["batch_expire_next"] > 0:
            b["batch_expire_next"] -= 1
            fate = "expire"
        bid = new_id("batch")
        state.batch_items.append(len(lines))
        state.batch_bytes.append(len(entry["data"]))
        state.batches[bid] = {
            "id": bid, "object": "batch", "endpoint": body.get("endpoint"), "errors": None,
            "input_file_id": body["input_file_id"], "completion_window": body.get("completion_window", "24h"),
            "status": "validating", "output_file_id": None, "error_file_id": None,
            "created_at": int(time.time()), "in_progress_at": None, "expires_at": int(time.time()) + 86400,
            "finalizing_at": None, "completed_at": None, "failed_at": None, "expired_at": None,
            "cancelling_at": None, "cancelled_at": None,
            "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
            "metadata": body.get("metadata"),
            "_lines": lines, "_fate": fate, "_born": time.monotonic(),
            "_auth": request.headers.get("Authorization") or "",
        }
        return jresp(public(state.batches[bid]))

    def public(batch: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in batch.items() if not k.startswith("_")}

    def advance(batch: dict[str, Any]) -> None:
        """Move a batch along its life: validating, in_progress, then completed/expired/failed."""
        if batch["status"] not in ("validating", "in_progress"):
            return
        b, age = state.b, time.monotonic() - batch["_born"]
        if age < b["batch_delay_s"] / 4:
            return
        now = int(time.time())
        if batch["_fate"] == "fail":
            batch.update(status="failed", failed_at=now, errors={"object": "list", "data": [
                {"code": "invalid_request", "message": "injected batch failure", "param": None, "line": None}]})
            return
        if b["batch_hold"] or age < b["batch_delay_s"]:
            batch.update(status="in_progress", in_progress_at=batch["in_progress_at"] or now)
            return
        outputs, errors, garbled = [], [], []
        for i, line in enumerate(batch["_lines"]):
            rid = f"batch_req_{batch['id']}_{i}"
            if batch["_fate"] == "expire" and i >= b["batch_expire_done"]:
                errors.append({"id": rid, "custom_id": line["custom_id"], "response": None, "error": {
                    "code": "batch_expired",
                    "message": "This request could not be executed before the completion window expired."}})
                continue
            req = line.get("body") or {}
            msgs = req.get("messages") or []
            texts, last_user = chat_texts(msgs)
            joined = "\n".join(texts)
            forced = forced_status(b, joined)
            if forced is not None:
                errors.append({"id": rid, "custom_id": line["custom_id"], "error": None, "response": {
                    "status_code": forced[0], "request_id": rid, "body": error_body(*forced)}})
                continue
            answer = {"id": rid, "custom_id": line["custom_id"], "error": None, "response": {
                "status_code": 200, "request_id": rid,
                "body": completion_body(b, content_key(msgs), req.get("model", ""), texts,
                                        constrained(chat_reply(b, joined, last_user, req.get("temperature")), req),
                                        tool_call(b, req, last_user))}}
            raw = next((t for sub, t in b["batch_raw_line_if_contains"].items() if sub in joined), None)
            if raw is not None:
                garbled.append(raw.replace("{custom_id}", line["custom_id"]).replace("{auth}", batch["_auth"]))
                continue
            if any(g in joined for g in b["batch_garble_if_contains"]):  # cut short, or the wrong shape
                garbled.append(json.dumps(answer)[:40] if len(garbled) % 2 else
                               json.dumps({"custom_id": line["custom_id"], "response": [answer]}))
                continue
            outputs.append(answer)
        state.batch_answered += len(outputs)

        def jsonl(rows: list[dict], extra: list[str] = ()) -> str | None:
            if not rows and not extra:
                return None
            data = ("".join(json.dumps(r) + "\n" for r in rows) + "".join(t + "\n" for t in extra)).encode()
            return add_file(data, "batch_output", f"{batch['id']}.jsonl")["id"]

        batch.update(status="expired" if batch["_fate"] == "expire" else "completed",
                     output_file_id=jsonl(outputs, garbled), error_file_id=jsonl(errors),
                     request_counts={"total": len(batch["_lines"]), "completed": len(outputs),
                                     "failed": len(errors)},
                     in_progress_at=batch["in_progress_at"] or now, finalizing_at=now,
                     **({"expired_at": now} if batch["_fate"] == "expire" else {"completed_at": now}))

    async def list_batches(request):
        """Newest first, `limit` at a time, from after the batch `after` (OpenAI's cursor)."""
        if state.b["batch_list_status"]:
            return fail(state.b["batch_list_status"], "listing batches is not supported here")
        ordered = sorted(state.batches.values(), key=lambda bt: bt["_born"], reverse=True)
        after = request.query.get("after")
        if after:
            ordered = ordered[next((i + 1 for i, bt in enumerate(ordered) if bt["id"] == after), len(ordered)):]
        limit = int(request.query.get("limit", 20))
        page = ordered[:limit]
        for batch in page:
            advance(batch)
        return jresp({"object": "list", "data": [public(bt) for bt in page],
                      "first_id": page[0]["id"] if page else None, "last_id": page[-1]["id"] if page else None,
                      "has_more": len(ordered) > limit})

    async def get_batch(request):
        batch = state.batches.get(request.match_info["batch_id"])
        if batch is None:
            return fail(404, "no such batch")
        advance(batch)
        if batch["status"] == "completed" and batch.setdefault("_reads", 0) < state.b["batch_output_lag"]:
            batch["_reads"] += 1  # as OpenAI: completed, its output file not named yet
            return jresp({**public(batch), "output_file_id": None, "error_file_id": None})
        return jresp(public(batch))

    app = web.Application(client_max_size=256 * 1024 ** 2)  # batch input files are large
    app.add_routes([
        web.post("/v1/chat/completions", chat),
        web.post("/chat/completions", chat),
        web.post("/v1/embeddings", embeddings),
        web.post("/embeddings", embeddings),
        web.get("/v1/models", models),
        web.post("/v1/files", create_file),
        web.get("/v1/files/{file_id}/content", file_content),
        web.post("/v1/batches", create_batch),
        web.get("/v1/batches", list_batches),
        web.get("/v1/batches/{batch_id}", get_batch),
        web.post("/_control", control),
        web.get("/_stats", stats),
        web.post("/_reset", reset),
    ])
    return app


async def _serve(args, behaviour: dict[str, Any]) -> None:
    import socket
    from aiohttp import web

    # Bind the socket ourselves so --port 0 gives us the real port to announce.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    # handler_cancellation: a client that times out / is killed cancels its hanging handler.
    runner = web.AppRunner(make_app(State(behaviour)), access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.SockSite(runner, sock, backlog=1024)
    await site.start()
    host, port = sock.getsockname()[:2]
    print(f"READY http://{host}:{port}", flush=True)
    try:
        while True:  # exit if the launching process dies (no orphan servers)
            await asyncio.sleep(1.0)
            if args.parent_pid and os.getppid() != args.parent_pid:
                break
    finally:
        await runner.cleanup()


def parse_args(argv: list[str] | None = None):
    p = argparse.ArgumentParser(prog="python -m tests.fake_openai", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--parent-pid", type=int, default=0, help="exit when this parent goes away")
    p.add_argument("--latency-ms", type=float)
    p.add_argument("--jitter-ms", type=float)
    p.add_argument("--fail-rate", type=float)
    p.add_argument("--fail-statuses", help="comma list, e.g. 429,500,503")
    p.add_argument("--retry-after", help="Retry-After header value on 429 (e.g. 0, 0.05)")
    p.add_argument("--fail-first-n", type=int)
    p.add_argument("--fail-first-n-status", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--default-reply")
    p.add_argument("--echo", action="store_true", default=None)
    p.add_argument("--rule", action="append", metavar="SUBSTR=REPLY", help="repeatable")
    p.add_argument("--config", help="JSON object of behaviour keys (same as /_control)")
    a = p.parse_args(argv)
    b: dict[str, Any] = json.loads(a.config) if a.config else {}
    for k in ("latency_ms", "jitter_ms", "fail_rate", "retry_after", "fail_first_n",
              "fail_first_n_status", "seed", "default_reply", "echo"):
        if getattr(a, k) is not None:
            b[k] = getattr(a, k)
    if a.fail_statuses:
        b["fail_statuses"] = [int(x) for x in a.fail_statuses.split(",")]
    if a.rule:
        b["rules"] = [r.split("=", 1) for r in a.rule]
    return a, b


def main(argv: list[str] | None = None) -> None:
    args, patch = parse_args(argv)
    st = State(DEFAULT_BEHAVIOUR)
    st.update(patch)  # validates keys
    try:
        asyncio.run(_serve(args, st.b))
    except KeyboardInterrupt:
        pass


# ----------------------------------------------------------------------------- client
class FakeLLM:
    """Stdlib-only client for a running fake server."""

    def __init__(self, url: str, proc: subprocess.Popen | None = None):
        self.url = url.rstrip("/")            # http://127.0.0.1:PORT
        self.base_url = self.url + "/v1"      # pass as api_base / base_url
        self.proc = proc
        # Never route loopback control calls through an env-configured proxy.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with self._opener.open(req, timeout=30) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise ValueError(f"fake server {path}: {e.code} {e.read().decode()}") from None

    def configure(self, **behaviour: Any) -> dict[str, Any]:
        """Merge behaviour keys (see DEFAULT_BEHAVIOUR); returns the full behaviour."""
        return self._call("POST", "/_control", behaviour)

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/_stats")

    def reset(self) -> None:
        """Clear counts and restore the behaviour the server was started with."""
        self._call("POST", "/_reset", {})

    def requests_total(self, path: str | None = None) -> int:
        """All API requests (chat + embeddings), or those to one path, e.g. '/v1/chat/completions'."""
        s = self.stats()
        return s["total"] if path is None else s["by_path"].get(path, 0)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def spawn_server(*flags: str) -> FakeLLM:
    """Start the server subprocess (extra CLI flags e.g. "--latency-ms", "5") and wait for READY."""
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_openai", "--port", "0",
         "--parent-pid", str(os.getpid()), *flags],
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=root, env=env, text=True)
    line = proc.stdout.readline()  # blocks until READY (or EOF if the server crashed)
    if not line.startswith("READY "):
        proc.kill()
        raise RuntimeError(f"fake server failed to start: {line!r} (exit {proc.wait()})")
    return FakeLLM(line.split()[1], proc)


@contextmanager
def start_server(*flags: str) -> Iterator[FakeLLM]:
    srv = spawn_server(*flags)
    try:
        yield srv
    finally:
        srv.close()


if __name__ == "__main__":
    main()
