"""Train / val / test splits for a search.

- Cases that carry a ``split`` keep it. Cases without one are dealt out by a
  seeded split stratified on the expected output (each label keeps its share
  in every split).
- Sizes are fractions (0.4, 0.3, 0.3) or counts (60, 60, 180); counts that add
  up to less than the cases leave the rest out.
- Tiny sets (fewer than `TINY` cases, none with a split): leave-one-out style.
  A few cases are held out for test and the rest serve as both train and val;
  the search never scores a candidate on a case it carries as a demo, so each
  case is judged by prompts that did not see it.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Sequence

from promptlab.errors import UsageError
from promptlab.models import Case

TINY = 12
DEFAULT_SIZES = (0.4, 0.3, 0.3)


@dataclass(frozen=True)
class Splits:
    train: tuple[Case, ...]
    val: tuple[Case, ...]
    test: tuple[Case, ...]
    method: str  # "explicit", "seeded", "mixed" or "leave-one-out"

    def ids(self) -> dict[str, list[int]]:
        return {"train": [c.id for c in self.train], "val": [c.id for c in self.val],
                "test": [c.id for c in self.test], "method": self.method}


def label_key(case: Case) -> str:
    return json.dumps(case.expected, sort_keys=True, ensure_ascii=False)


def parse_sizes(text: str | Sequence[float] | None) -> tuple[float, float, float]:
    """'0.4,0.3,0.3' or '60,60,180' (or a sequence) → three sizes."""
    if text is None:
        return DEFAULT_SIZES
    parts = [p for p in text.split(",")] if isinstance(text, str) else list(text)
    try:
        sizes = tuple(float(p) for p in parts)
    except ValueError:
        raise UsageError(f"--splits: expected three numbers TRAIN,VAL,TEST, got '{text}'") from None
    if len(sizes) != 3 or any(s < 0 for s in sizes) or sizes[0] <= 0 or sizes[1] <= 0:
        raise UsageError(f"--splits: expected three sizes TRAIN,VAL,TEST (train and val > 0), got '{text}'")
    return sizes  # type: ignore[return-value]


def stratified_order(cases: Sequence[Case], rng: random.Random) -> list[Case]:
    """A seeded order in which every prefix keeps the label shares of the whole."""
    groups: dict[str, list[Case]] = {}
    for case in sorted(cases, key=lambda c: c.id or 0):
        groups.setdefault(label_key(case), []).append(case)
    keyed = []
    for key in sorted(groups):
        members = groups[key]
        rng.shuffle(members)
        for i, case in enumerate(members):
            keyed.append(((i + rng.random()) / len(members), case))
    keyed.sort(key=lambda pair: pair[0])
    return [case for _, case in keyed]


def make_splits(cases: Sequence[Case], seed: int, sizes: Sequence[float] | None = None) -> Splits:
    if not cases:
        raise UsageError("optimize: no cases; import some with `promptlab case import`")
    sizes = tuple(sizes or DEFAULT_SIZES)
    rng = random.Random(f"splits:{seed}")
    given = [c for c in cases if c.split]
    free = [c for c in cases if not c.split]
    parts: dict[str, list[Case]] = {"train": [], "val": [], "test": []}
    for case in given:
        parts[case.split].append(case)
    if not given and len(free) < TINY:
        order = stratified_order(free, rng)
        n_test = max(1, len(order) // 4) if len(order) >= 4 else 0
        rest = order[n_test:]
        if len(rest) < 2:
            raise UsageError(f"optimize: {len(cases)} case(s) are too few to search on; add at least 3")
        return Splits(tuple(rest), tuple(rest), tuple(order[:n_test]), "leave-one-out")
    if free:
        order = stratified_order(free, rng)
        n = len(order)
        if all(float(s).is_integer() for s in sizes) and sum(sizes) > 3:
            counts = [int(s) for s in sizes]
            if sum(counts) > n:
                raise UsageError(f"--splits: {'+'.join(map(str, counts))} = {sum(counts)} cases asked, "
                                 f"only {n} without a split")
        else:
            total = sum(sizes)
            n_train = round(n * sizes[0] / total)
            n_val = round(n * sizes[1] / total)
            counts = [n_train, n_val, n - n_train - n_val]
        parts["train"] += order[:counts[0]]
        parts["val"] += order[counts[0]:counts[0] + counts[1]]
        parts["test"] += order[counts[0] + counts[1]:counts[0] + counts[1] + counts[2]]
    if not parts["val"] and len(parts["train"]) >= 2:  # carve val out of train
        order = stratified_order(parts["train"], rng)
        half = len(order) // 2
        parts["train"], parts["val"] = order[:half], order[half:]
    if not parts["train"] and len(parts["val"]) >= 2:
        order = stratified_order(parts["val"], rng)
        half = len(order) // 2
        parts["train"], parts["val"] = order[:half], order[half:]
    if not parts["train"] or not parts["val"]:
        raise UsageError("optimize: need train and val cases; mark some cases' split or add more cases")
    method = "explicit" if not free else ("seeded" if not given else "mixed")
    key = lambda c: c.id or 0  # noqa: E731
    return Splits(tuple(sorted(parts["train"], key=key)), tuple(sorted(parts["val"], key=key)),
                  tuple(sorted(parts["test"], key=key)), method)


def splits_from_ids(cases_by_id: dict[int, Case], ids: dict) -> Splits:
    """The stored splits of an optimization (for --resume)."""
    def pick(name: str) -> tuple[Case, ...]:
        return tuple(cases_by_id[i] for i in ids.get(name, []) if i in cases_by_id)

    return Splits(pick("train"), pick("val"), pick("test"), ids.get("method", "explicit"))
