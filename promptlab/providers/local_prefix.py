"""The KV states of recent prompts on the embedded model, so that prompts taking turns on one
model each resume from their own prefix.

llama.cpp keeps one KV cache: a call reuses only the tokens its prompt shares with the previous
call. When an experiment or an optimizer interleaves a zero-shot and an 8-demo prompt, each call
of one evicts the other's prefix, and every 8-demo call evaluates its demos again (≈2× its CPU).
Here, after each call, the KV state of its tokens (one sequence's cells, no logits: 18 KB a token
for Gemma 3 270M) is kept, keyed by those tokens; before a call, the kept state that shares the
longest prefix with its prompt is loaded when it shares more than the live cache does.

Only states worth loading are kept (MIN_GAIN tokens or more), one per prompt family: a new state
replaces those it shares at least as long a prefix with as the call reused (the same demos with
another case). The least recently used go first past PROMPTLAB_LOCAL_PREFIX_MB (default 256;
0 turns this off).

llama-cpp-python's own LlamaRAMCache is not used: its save_state copies a row of logits per
token (1 MB a token with Gemma's 262,144-token vocabulary) to keep beside each state.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections import OrderedDict
from typing import Any

MIN_GAIN = 32  # tokens a kept state must add over the live cache to be worth loading (≈ a few ms)
_SEQ = 0       # the one sequence llama-cpp-python uses


def _budget() -> int:
    text = os.environ.get("PROMPTLAB_LOCAL_PREFIX_MB", "256")
    return int(text) * 1024 * 1024 if text.isdigit() else 256 * 1024 * 1024


def common_prefix(a: Any, b: Any) -> int:
    """How many leading tokens two token arrays share."""
    import numpy as np

    n = min(len(a), len(b))
    differ = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(differ[0]) if len(differ) else n


class PrefixStates:
    """One model's kept KV states, most recently used last (the model's call lock is held around
    every use)."""

    def __init__(self, budget: int):
        self.budget, self.used = budget, 0
        self._kept: OrderedDict[int, tuple[Any, Any, int]] = OrderedDict()  # id -> (tokens, state, bytes)
        self._next = 0
        self.reused = 0  # how far the current call starts in (for `keep`)

    def restore(self, llm: Any, tokens: list[int]) -> None:
        """Load the kept state sharing the longest prefix with `tokens`, if it beats the live cache."""
        import llama_cpp
        import numpy as np

        wanted = np.asarray(tokens, dtype=np.intc)
        live = common_prefix(llm.input_ids[:llm.n_tokens], wanted)
        best, best_len = None, live
        for key, (kept, _, _) in self._kept.items():
            shared = common_prefix(kept, wanted)
            if shared > best_len:
                best, best_len = key, shared
        self.reused = best_len
        if best is None or best_len - live < MIN_GAIN:
            self.reused = live
            return
        kept, state, size = self._kept[best]
        self._kept.move_to_end(best)
        if llama_cpp.llama_state_seq_set_data(llm._ctx.ctx, state, size, _SEQ) != size:
            llm.n_tokens, self.reused = 0, 0  # the cache is in no known state: start from scratch
            return
        llm.input_ids[:len(kept)] = kept
        llm.n_tokens = len(kept)

    def keep(self, llm: Any) -> None:
        """Keep the state the call left (its prompt and reply), in place of the states it makes
        redundant."""
        import llama_cpp
        import numpy as np

        n = llm.n_tokens
        if n < MIN_GAIN:
            return
        tokens = np.array(llm.input_ids[:n], dtype=np.intc)
        for key in [k for k, (kept, _, _) in self._kept.items()
                    if common_prefix(kept, tokens) >= max(self.reused, MIN_GAIN)]:
            self._drop(key)
        size = llama_cpp.llama_state_seq_get_size(llm._ctx.ctx, _SEQ)
        if size > self.budget:
            return
        buffer = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_seq_get_data(llm._ctx.ctx, buffer, size, _SEQ)
        while self._kept and self.used + written > self.budget:
            self._drop(next(iter(self._kept)))
        self._kept[self._next] = (tokens, buffer, written)
        self._next += 1
        self.used += written

    def _drop(self, key: int) -> None:
        self.used -= self._kept.pop(key)[2]


_STATES: dict[str, PrefixStates] = {}
_LOCK = threading.Lock()


def states(path: str) -> PrefixStates | None:
    """The kept states of the model at `path` (None when PROMPTLAB_LOCAL_PREFIX_MB is 0)."""
    budget = _budget()
    if budget <= 0:
        return None
    with _LOCK:
        return _STATES.setdefault(path, PrefixStates(budget))
