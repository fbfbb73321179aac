"""Edits that turn one prompt into another.

Model-free edits work on the prompt's own text and demos: add, remove or swap
few-shot demos drawn from train (label-balanced), per-input demos (a kNN
selector over train: fixed vs kNN, k, balance), GrIPS-style phrase edits of
the instruction (delete, swap, add a phrase), stating the output format from
the signature (e.g. the enum's choices), verbalizer edits for a classifier
(the label set, in another order, or each label described by a short train
example), structured decoding switched on or off, and crossover of two parents' demos.

Model-written edits are meta-prompts for the proposer model (rewrite the
instruction from failures, paraphrase, combine two instructions) and the
validators of its structured JSON replies. Each meta-prompt carries one worked
example as a user/assistant turn, so a small base model continues the pattern.

Everything here is pure: randomness comes in as a ``random.Random``.
"""

from __future__ import annotations

import json
import random
import re
from typing import Any, Sequence

from promptlab.models import Case, Demo, DemoSelector, PromptContent, Signature

GENERIC_PHRASES = ("Read the input carefully.", "Answer with the label only.",
                   "Be precise.", "Think about what the input means as a whole.")
_PHRASE_SPLIT = re.compile(r"(?<=[.!?;])\s+")


# ---- demos ------------------------------------------------------------------
def demo_from_case(case: Case, signature: Signature | None) -> Demo:
    inputs = {k: case.inputs[k] for k in (signature.input_names if signature else case.inputs)
              if k in case.inputs}
    outputs = {k: case.expected[k] for k in (signature.output_names if signature else case.expected)
               if k in case.expected}
    return Demo(inputs=inputs, outputs=outputs)


def label_of(demo: Demo) -> str:
    return json.dumps(demo.outputs, sort_keys=True, ensure_ascii=False)


def inputs_key(inputs: dict) -> str:
    return json.dumps(inputs, sort_keys=True, ensure_ascii=False)


def with_demos(content: PromptContent, demos: Sequence[Demo]) -> PromptContent:
    """The content with these fixed demos (fixed demos replace a demo selector)."""
    update: dict = {"demos": tuple(demos)}
    if demos:
        update["demo_selector"] = None
    return content.model_copy(update=update)


def toggle_structured(content: PromptContent) -> PromptContent:
    """Structured decoding switched: on, replies are decoded to the signature's schema (a grammar,
    a JSON schema, a choice list: prompting.structured); off, the model writes free text."""
    return content.model_copy(update={"structured": not content.structured, "structured_fallback": False})


def with_knn(content: PromptContent, pool: Sequence[int], k: int, balance: bool,
             embedding_model: str = "") -> PromptContent:
    """The content picking its k demos per input from the pool's nearest cases (no fixed demos),
    nearest by embeddings of `embedding_model` if given, else lexically."""
    selector = DemoSelector(k=k, pool=tuple(pool), balance=balance,
                            similarity="embedding" if embedding_model else "lexical",
                            embedding_model=embedding_model or None)
    return content.model_copy(update={"demos": (), "demo_selector": selector})


def knn_edit(content: PromptContent, pool_ids: Sequence[int], pool: Sequence[Demo], rng: random.Random,
             max_demos: int, embedding_model: str = "") -> PromptContent | None:
    """One edit of how demos are chosen: fixed demos become a kNN selector over train (k = as many
    demos, or max_demos); a selector gets another k, the other balance, or fixed demos again."""
    selector = content.demo_selector
    if selector is None:
        if not pool_ids or max_demos < 1:
            return None
        k = min(len(content.demos) or max_demos, max_demos, len(pool_ids))
        return with_knn(content, pool_ids, max(1, k), rng.random() < 0.5, embedding_model)
    ks = [k for k in sorted({2, 4, max_demos // 2, max_demos, max_demos + 4}) if 1 <= k != selector.k
          and k <= len(selector.pool)]
    options = ["balance", "fixed"] + (["k"] if ks else [])
    op = rng.choice(options)
    if op == "k":
        return with_knn(content, selector.pool, rng.choice(ks), selector.balance, selector.embedding_model or "")
    if op == "balance":
        return with_knn(content, selector.pool, selector.k, not selector.balance, selector.embedding_model or "")
    shots = sample_demos(pool, min(selector.k, max_demos), rng)
    return with_demos(content, shots) if shots else None


def with_system(content: PromptContent, system: str) -> PromptContent:
    return content.model_copy(update={"system": system})


def _by_label(pool: Sequence[Demo]) -> dict[str, list[Demo]]:
    groups: dict[str, list[Demo]] = {}
    for demo in pool:
        groups.setdefault(label_of(demo), []).append(demo)
    return groups


def sample_demos(pool: Sequence[Demo], k: int, rng: random.Random, *,
                 exclude: Sequence[Demo] = ()) -> tuple[Demo, ...]:
    """k demos, labels as balanced as the pool allows, in an interleaved order."""
    taken = {inputs_key(d.inputs) for d in exclude}
    groups = {label: [d for d in demos if inputs_key(d.inputs) not in taken]
              for label, demos in _by_label(pool).items()}
    for demos in groups.values():
        rng.shuffle(demos)
    labels = sorted(label for label, demos in groups.items() if demos)
    rng.shuffle(labels)
    out: list[Demo] = []
    while len(out) < k and any(groups[label] for label in labels):
        for label in labels:
            if groups[label] and len(out) < k:
                out.append(groups[label].pop())
    return tuple(out)


def add_demos(content: PromptContent, candidates: Sequence[Demo], pool: Sequence[Demo], n: int,
              rng: random.Random, max_demos: int) -> PromptContent | None:
    """Add up to n demos, preferring `candidates` (e.g. failed cases) and the labels the
    prompt has least of; when full, a new demo replaces one of the most common label."""
    demos = list(content.demos)
    have = {inputs_key(d.inputs) for d in demos}
    fresh = [d for d in candidates if inputs_key(d.inputs) not in have]
    spare = [d for d in pool if inputs_key(d.inputs) not in have]
    added = 0
    for _ in range(n):
        counts = {label: 0 for label in _by_label(pool)}
        for d in demos:
            counts[label_of(d)] = counts.get(label_of(d), 0) + 1
        if not counts:
            break
        low = min(counts.values())
        wanted = sorted(label for label, c in counts.items() if c == low)
        choice = ([d for d in fresh if label_of(d) in wanted] or [d for d in spare if label_of(d) in wanted]
                  or fresh or spare)
        if not choice:
            break
        demo = rng.choice(choice)
        fresh = [d for d in fresh if d is not demo]
        spare = [d for d in spare if d is not demo]
        if len(demos) >= max_demos:
            high = max(counts.values())
            victims = [i for i, d in enumerate(demos) if counts.get(label_of(d)) == high]
            if not victims:
                break
            demos.pop(rng.choice(victims))
        demos.insert(rng.randrange(len(demos) + 1), demo)
        added += 1
    return with_demos(content, demos) if added else None


def remove_demo(content: PromptContent, rng: random.Random) -> PromptContent | None:
    if not content.demos:
        return None
    demos = list(content.demos)
    demos.pop(rng.randrange(len(demos)))
    return with_demos(content, demos)


def swap_demo(content: PromptContent, pool: Sequence[Demo], rng: random.Random) -> PromptContent | None:
    """Replace one demo by an unused one of the same label (any label if none)."""
    if not content.demos:
        return None
    demos = list(content.demos)
    have = {inputs_key(d.inputs) for d in demos}
    i = rng.randrange(len(demos))
    unused = [d for d in pool if inputs_key(d.inputs) not in have]
    same = [d for d in unused if label_of(d) == label_of(demos[i])]
    if not (same or unused):
        return None
    demos[i] = rng.choice(same or unused)
    return with_demos(content, demos)


def shuffle_demos(content: PromptContent, rng: random.Random) -> PromptContent | None:
    if len(content.demos) < 2:
        return None
    demos = list(content.demos)
    rng.shuffle(demos)
    return with_demos(content, demos) if demos != list(content.demos) else None


def crossover_demos(a: PromptContent, b: PromptContent, rng: random.Random,
                    max_demos: int) -> tuple[Demo, ...]:
    """Uniform crossover of two parents' demos (no duplicates, at most max_demos)."""
    out: list[Demo] = []
    seen: set[str] = set()
    for i in range(max(len(a.demos), len(b.demos))):
        options = [d for d in (a.demos[i] if i < len(a.demos) else None,
                               b.demos[i] if i < len(b.demos) else None) if d is not None]
        demo = rng.choice(options)
        key = inputs_key(demo.inputs)
        if key not in seen and len(out) < max_demos:
            seen.add(key)
            out.append(demo)
    return tuple(out)


# ---- instruction text ---------------------------------------------------------
def format_statement(signature: Signature | None) -> str | None:
    """The output format the signature asks for, as one sentence (None if nothing to say)."""
    if signature is None:
        return None
    outs = signature.outputs
    if len(outs) == 1:
        spec = outs[0]
        if spec.type == "enum":
            return f"Answer with exactly one of: {', '.join(spec.choices or ())}."
        return {"int": "Answer with a whole number only.", "float": "Answer with a number only.",
                "bool": "Answer with true or false only.",
                "list": "Answer with a comma-separated list only.",
                "json": "Answer with a JSON value only."}.get(spec.type)
    fields = ", ".join(f'"{o.name}" ({o.type}{": " + "/".join(o.choices) if o.choices else ""})'
                       for o in outs)
    return f"Reply with one JSON object with the fields {fields}."


def state_format(content: PromptContent, signature: Signature | None) -> PromptContent | None:
    statement = format_statement(signature)
    if not statement or statement in content.system:
        return None
    return with_system(content, (content.system.rstrip() + " " + statement).strip())


def enum_output(signature: Signature | None):
    """The one enum output field of a classifier signature, else None."""
    if signature is None or len(signature.outputs) != 1 or signature.outputs[0].type != "enum":
        return None
    return signature.outputs[0]


_VERBALIZER = re.compile(r"Answer with exactly one of: [^\n]*?\.(?=\s|$)|Labels: [^\n]*? Answer with the label only\.")


def verbalizer_edit(content: PromptContent, signature: Signature | None, train: Sequence[Case],
                    rng: random.Random) -> tuple[PromptContent, str] | None:
    """For an enum output, state the labels another way than now (replacing an earlier statement):
    the label set in the signature's order, each label described by its shortest train example, or
    the set in reverse order. (content, variant) or None if not a classifier."""
    variants = verbalizer_variants(content, signature, train)
    if not variants:
        return None
    return rng.choice([(c, name) for c, name, current in variants if not current])


def verbalizer_variants(content: PromptContent, signature: Signature | None,
                        train: Sequence[Case]) -> list[tuple[PromptContent, str, bool]]:
    """Every way `verbalizer_edit` states the labels: (content, variant, whether the content
    states them that way already); [] if not a classifier."""
    spec = enum_output(signature)
    if spec is None:
        return []
    choices = list(spec.choices or ())
    examples: dict[str, str] = {}
    for case in sorted(train, key=lambda c: (len(json.dumps(c.inputs, ensure_ascii=False)), c.id or 0)):
        label = case.expected.get(spec.name)
        if label in choices and label not in examples:
            examples[label] = _short(next(iter(case.inputs.values()), ""), 60)
    described = "; ".join(f'{c} (e.g. "{examples[c]}")' if c in examples else c for c in choices)
    variants = [("label set", f"Answer with exactly one of: {', '.join(choices)}."),
                ("label descriptions", f"Labels: {described}. Answer with the label only."),
                ("label order", f"Answer with exactly one of: {', '.join(reversed(choices))}.")]
    now = next((i for i, (_, sentence) in enumerate(variants) if sentence in content.system), -1)
    rest = " ".join(_VERBALIZER.sub("", content.system).split())
    return [(with_system(content, (rest + " " + sentence).strip()), name, i == now)
            for i, (name, sentence) in enumerate(variants)]


def phrases(text: str) -> list[str]:
    return [p.strip() for p in _PHRASE_SPLIT.split(text.strip()) if p.strip()]


def grips_edit(system: str, rng: random.Random, bank: Sequence[str] = ()) -> tuple[str, str] | None:
    """One phrase-level edit (GrIPS): delete, swap or add a phrase. (new text, op) or None."""
    parts = phrases(system)
    ops = ["add"] + (["delete", "swap"] if len(parts) >= 2 else ["delete"] if parts else [])
    rng.shuffle(ops)
    for op in ops:
        if op == "delete":
            new = parts[:]
            new.pop(rng.randrange(len(new)))
        elif op == "swap":
            i, j = rng.sample(range(len(parts)), 2)
            new = parts[:]
            new[i], new[j] = new[j], new[i]
        else:
            options = [p for p in dict.fromkeys([*bank, *GENERIC_PHRASES]) if p and p not in parts]
            if not options:
                continue
            new = parts[:]
            new.insert(rng.randrange(len(new) + 1), rng.choice(options))
        text = " ".join(new)
        if text != system.strip():
            return text, op
    return None


# ---- the proposer: meta-prompts and validators ----------------------------------
PROPOSER_SYSTEM = ("You improve the instructions of a language-model task. Reply with one JSON "
                   "object on a single line and nothing else.")


def describe_task(signature: Signature | None) -> str:
    if signature is None:
        return "Task: produce the expected output for the input."
    ins = ", ".join(i.name for i in signature.inputs)
    outs = ", ".join(f"{o.name} ({'one of ' + '/'.join(o.choices) if o.choices else o.type})"
                     for o in signature.outputs)
    head = f"Task: {signature.instruction} " if signature.instruction else "Task: "
    return f"{head}Inputs: {ins}. Output: {outs}."


def _short(value: Any, limit: int = 160) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def failure_lines(failures: Sequence[tuple[Case, str]]) -> str:
    lines = []
    for i, (case, got) in enumerate(failures, 1):
        shown = "; ".join(f"{k}: {_short(v)}" for k, v in case.inputs.items())
        lines.append(f"{i}. {shown} | expected: {_short(case.expected)} | got: {_short(got, 60) or '(nothing)'}")
    return "\n".join(lines)


_REWRITE_EXAMPLE = (
    "Task: Answer the arithmetic question. Inputs: question. Output: answer (int).\n"
    "Current instruction: Solve it.\n"
    "Failures:\n1. question: 2+2*3 | expected: {\"answer\": 8} | got: 12\n"
    "Reply (JSON):",
    '{"rationale": "The model ignores operator precedence and adds words.", "instruction": '
    '"Solve the arithmetic question, doing multiplication before addition. Answer with the number '
    'only.", "demos": [1]}')


def _proposer_messages(keys: str, example: tuple[str, str], ask: str) -> list[dict[str, str]]:
    """A proposer's conversation: the JSON keys to answer with, one worked example, the real ask."""
    return [{"role": "system", "content": f"{PROPOSER_SYSTEM} {keys}"},
            {"role": "user", "content": example[0]},
            {"role": "assistant", "content": example[1]},
            {"role": "user", "content": ask}]


def rewrite_messages(signature: Signature | None, system: str,
                     failures: Sequence[tuple[Case, str]]) -> list[dict[str, str]]:
    """Ask for a revised instruction from failure analysis: {rationale, instruction, demos?}."""
    return _proposer_messages(
        "Keys: rationale (why it failed), instruction (the new instruction), demos (numbers of failures "
        "worth showing as examples).", _REWRITE_EXAMPLE,
        f"{describe_task(signature)}\nCurrent instruction: {system or '(none)'}\n"
        f"Failures:\n{failure_lines(failures) or '(none)'}\nReply (JSON):")


_PARAPHRASE_EXAMPLE = (
    "Task: Sort the words. Inputs: words. Output: sorted (list).\n"
    "Instruction: Put the words in order.\nParaphrase (JSON):",
    '{"instruction": "Arrange the given words in alphabetical order and list them."}')


def paraphrase_messages(signature: Signature | None, system: str) -> list[dict[str, str]]:
    return _proposer_messages(
        "Key: instruction (a paraphrase that keeps the meaning).", _PARAPHRASE_EXAMPLE,
        f"{describe_task(signature)}\nInstruction: "
        f"{system or signature and signature.instruction or '(none)'}\nParaphrase (JSON):")


_CROSSOVER_EXAMPLE = (
    "Task: Translate to French. Inputs: text. Output: french (string).\n"
    "Instruction A: Translate the text.\nInstruction B: Keep names unchanged.\nCombined (JSON):",
    '{"instruction": "Translate the text to French, keeping names unchanged."}')


def crossover_messages(signature: Signature | None, a: str, b: str) -> list[dict[str, str]]:
    return _proposer_messages(
        "Key: instruction (one instruction that keeps the best of both).", _CROSSOVER_EXAMPLE,
        f"{describe_task(signature)}\nInstruction A: {a or '(none)'}\n"
        f"Instruction B: {b or '(none)'}\nCombined (JSON):")


_REFLECT_EXAMPLE = (
    "Task: Answer the arithmetic question. Inputs: question. Output: answer (int).\n"
    "Current instruction: Solve it.\n"
    "Traces:\n1. question: 2+2*3 | expected: {\"answer\": 8} | got: 12 | feedback: multiplication "
    "comes first\nReflect on the traces (JSON):",
    '{"rationale": "The model adds before it multiplies.", "instruction": "Solve the arithmetic '
    'question, doing multiplication before addition. Answer with the number only."}')


def trace_lines(traces: Sequence[tuple[Case, str, str]]) -> str:
    """Numbered failed traces: the inputs, the expected and the actual output, the metric's feedback."""
    lines = failure_lines([(case, got) for case, got, _ in traces]).splitlines()
    return "\n".join(line + (f" | feedback: {_short(note, 200)}" if note else "")
                     for line, (_, _, note) in zip(lines, traces))


def reflect_messages(signature: Signature | None, system: str,
                     traces: Sequence[tuple[Case, str, str]]) -> list[dict[str, str]]:
    """GEPA's reflection: read failed traces and their feedback, write a better instruction."""
    return _proposer_messages(
        "Keys: rationale (what the failures have in common), instruction (the whole new instruction, "
        "keeping what works).", _REFLECT_EXAMPLE,
        f"{describe_task(signature)}\nCurrent instruction: {system or '(none)'}\n"
        f"Traces:\n{trace_lines(traces) or '(none)'}\nReflect on the traces (JSON):")


def dataset_summary(train: Sequence[Case], signature: Signature | None) -> str:
    """What the training data looks like, in one line (counted, not written by a model)."""
    if not train:
        return "Data: no training examples."
    words = [len(" ".join(str(v) for v in c.inputs.values()).split()) for c in train]
    parts = [f"{len(train)} training examples, inputs of {min(words)}-{max(words)} words "
             f"(mean {sum(words) / len(words):.0f})"]
    spec = enum_output(signature)
    if spec is not None:
        counts: dict[str, int] = {}
        for case in train:
            label = str(case.expected.get(spec.name))
            counts[label] = counts.get(label, 0) + 1
        common = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        parts.append(f"{len(counts)} labels seen, most common: "
                     + ", ".join(f"{label} ({n})" for label, n in common[:5]))
    return "Data: " + "; ".join(parts) + "."


PROPOSAL_TIPS = ("Be concise.", "Say what tells the outputs apart.", "Name the exact output format.",
                 "Describe the kind of inputs the task gets.", "Explain the task as to a new colleague.")

_PROPOSE_EXAMPLE = (
    "Task: Answer the arithmetic question. Inputs: question. Output: answer (int).\n"
    "Data: 40 training examples, inputs of 3-9 words (mean 5).\nCurrent instruction: (none)\n"
    "Examples:\n1. question: 3*4-2 | expected: {\"answer\": 10}\nTip: Be concise.\n"
    "Instruction (JSON):",
    '{"instruction": "Compute the arithmetic expression, multiplying before subtracting, and answer '
    'with the number alone."}')


def propose_messages(signature: Signature | None, summary: str, system: str,
                     examples: Sequence[Case], tip: str) -> list[dict[str, str]]:
    """MIPRO's grounded proposal: a new instruction from the task, a summary of the data, the
    current instruction, a few train examples and a tip."""
    shown = "\n".join(f"{i}. " + "; ".join(f"{k}: {_short(v)}" for k, v in c.inputs.items())
                      + f" | expected: {_short(c.expected)}" for i, c in enumerate(examples, 1))
    return _proposer_messages(
        "Key: instruction (a new instruction for the task).", _PROPOSE_EXAMPLE,
        f"{describe_task(signature)}\n{summary}\nCurrent instruction: {system or '(none)'}\n"
        f"Examples:\n{shown or '(none)'}\nTip: {tip}\nInstruction (JSON):")


MAX_INSTRUCTION_CHARS = 800
# the worked examples' own instructions: a weak proposer tends to copy them
EXAMPLE_TEXTS = tuple(json.loads(example[1])["instruction"]
                      for example in (_REWRITE_EXAMPLE, _PARAPHRASE_EXAMPLE, _CROSSOVER_EXAMPLE,
                                      _PROPOSE_EXAMPLE))


def copies_example(text: str) -> bool:
    from rapidfuzz import fuzz

    return any(fuzz.partial_ratio(text.lower(), ex.lower()) >= 80 for ex in EXAMPLE_TEXTS)


def validate_instruction(obj: Any, current: str, n_failures: int = 0) -> str | None:
    """Why a proposer reply is unusable, or None if it is fine."""
    if not isinstance(obj, dict):
        return "the reply is not a JSON object"
    text = obj.get("instruction")
    if not isinstance(text, str) or not text.strip():
        return 'the "instruction" key is missing or empty'
    text = text.strip()
    if len(text) > MAX_INSTRUCTION_CHARS:
        return f'"instruction" is longer than {MAX_INSTRUCTION_CHARS} characters'
    if "{{" in text or "{%" in text:
        return '"instruction" must not contain template syntax ({{ }} or {% %})'
    if text == current.strip():
        return '"instruction" is the same as the current one'
    if copies_example(text):
        return '"instruction" copies the worked example instead of addressing this task'
    demos = obj.get("demos", [])
    if demos is not None and (not isinstance(demos, list)
                              or not all(isinstance(i, int) and 1 <= i <= n_failures for i in demos)):
        return f'"demos" must be a list of failure numbers between 1 and {n_failures}'
    return None
