"""Edits the strategies share: model-written (through the proposer) and model-free.

Each returns new prompt content (or None when it has nothing to offer) and a
short note for the version's message. A useless proposer reply gives None, and
the strategies fall back on the model-free edits, so a search still makes
progress with a proposer whose text is worthless.
"""

from __future__ import annotations

import random
from typing import Sequence

from promptlab.models import Case, Demo, PromptContent
from promptlab.optimizers import operators as ops
from promptlab.optimizers.evaluator import Candidate
from promptlab.optimizers.search import Search

MODEL_FREE = ("add_demos", "swap_demo", "remove_demo", "shuffle_demos", "knn", "grips", "format",
              "verbalizer", "structured")


async def rewrite(search: Search, cand: Candidate, failures: Sequence[tuple[Case, str]],
                  rng: random.Random, shown: int = 5) -> tuple[PromptContent, str] | None:
    """The proposer rewrites the instruction from failure analysis (and may pick failures as demos)."""
    sample = list(failures) if len(failures) <= shown else rng.sample(list(failures), shown)
    current = cand.content.system
    obj = await search.propose("rewrite", ops.rewrite_messages(search.problem.signature, current, sample),
                               lambda o: ops.validate_instruction(o, current, len(sample)))
    if obj is None:
        return None
    content = ops.with_system(cand.content, obj["instruction"].strip())
    picked = [ops.demo_from_case(sample[i - 1][0], search.problem.signature) for i in obj.get("demos") or []]
    if picked:
        content = ops.add_demos(content, picked, picked, len(picked), rng,
                                search.knobs.max_demos) or content
    return content, str(obj.get("rationale") or "")[:200]


async def paraphrase(search: Search, cand: Candidate) -> tuple[PromptContent, str] | None:
    current = cand.content.system
    if not current and not (search.problem.signature and search.problem.signature.instruction):
        return None
    obj = await search.propose("paraphrase", ops.paraphrase_messages(search.problem.signature, current),
                               lambda o: ops.validate_instruction(o, current))
    return None if obj is None else (ops.with_system(cand.content, obj["instruction"].strip()), "")


async def combine(search: Search, a: Candidate, b: Candidate) -> str | None:
    """The proposer merges two parents' instructions (None if they agree or the reply is useless)."""
    if a.content.system.strip() == b.content.system.strip():
        return None
    obj = await search.propose("crossover", ops.crossover_messages(search.problem.signature, a.content.system,
                                                                  b.content.system),
                               lambda o: ops.validate_instruction(o, ""))
    return None if obj is None else obj["instruction"].strip()


def model_free(op: str, content: PromptContent, search: Search, rng: random.Random, *,
               pool: Sequence[Demo], failed: Sequence[Demo] = (), n: int = 2) -> PromptContent | None:
    """One model-free edit by name (see MODEL_FREE)."""
    max_demos = search.knobs.max_demos
    if op == "add_demos":
        return ops.add_demos(content, failed, pool, n, rng, max_demos)
    if op == "swap_demo":
        return ops.swap_demo(content, pool, rng)
    if op == "remove_demo":
        return ops.remove_demo(content, rng)
    if op == "shuffle_demos":
        return ops.shuffle_demos(content, rng)
    if op == "knn":
        return ops.knn_edit(content, [c.id for c in search.problem.train], pool, rng, max_demos,
                            search.knobs.embedding_model)
    if op == "format":
        return ops.state_format(content, search.problem.signature)
    if op == "verbalizer":
        edit = ops.verbalizer_edit(content, search.problem.signature, search.problem.train, rng)
        return None if edit is None else edit[0]
    if op == "structured":  # on only where the task model can constrain its decoding
        return ops.toggle_structured(content) if content.structured or search.can_structure else None
    if op == "grips":
        bank = [ops.format_statement(search.problem.signature) or ""]
        bank += [p for c in search.candidates.values() for p in ops.phrases(c.content.system)]
        edit = ops.grips_edit(content.system, rng, bank)
        return None if edit is None else ops.with_system(content, edit[0])
    raise ValueError(f"unknown edit {op}")


def first_new(search: Search, options: Sequence[tuple[PromptContent | None, str]]) -> tuple[PromptContent, str] | None:
    """The first option whose content is not a candidate yet."""
    for content, op in options:
        if content is not None and search.known(content) is None:
            return content, op
    return None
