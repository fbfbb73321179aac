"""mcts — tree search over prompt edits (PromptAgent-style).

Nodes are prompt versions, edges are edits; the root is the better of the base
and the naive k-shot version. Each simulation walks down from
the root by UCT (mean reward + exploration * sqrt(ln N_parent / N_child))
through nodes that are fully expanded (`expand_width` expansions tried) until
it reaches one that is not, or `max_depth`. It expands that node with one
error-driven edit: the node is scored on a train minibatch (fixed per node),
and its failures drive the edit — failed cases added as demos, the
proposer's rewrite of the instruction, per-input (kNN) demos, stating the
output format, or a swap, drop or GrIPS phrase edit. The child's reward is its
val score (a `val_batch`-case minibatch if set), backed up along the path. A child whose
reward is within `dedup_eps` of a sibling's is not added to the tree (near-equal
scores: the search would only spend visits telling them apart). Stop after
`simulations`, on a perfect val score, after `patience` simulations without a
gain, or on the budget (calls, tokens or cost).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from promptlab.optimizers.base import CommonKnobs, Problem, knob
from promptlab.optimizers.strategy import SearchStrategy

if TYPE_CHECKING:
    from promptlab.models import Case
    from promptlab.optimizers.evaluator import Candidate
    from promptlab.optimizers.search import Search


@dataclass(frozen=True)
class MctsKnobs(CommonKnobs):
    patience: int = knob(6, "stop after this many simulations without a gain")
    simulations: int = knob(24, "select-expand-evaluate-backup rounds")
    expand_width: int = knob(3, "expansions tried per node before it is only selected through")
    max_depth: int = knob(8, "deepest chain of edits from the base")
    exploration: float = knob(1.0, "UCT exploration constant")
    train_batch: int = knob(16, "train cases whose failures drive a node's edits (0: all)")
    val_batch: int = knob(0, "val cases a reward is measured on (0: all of val)")
    dedup_eps: float = knob(0.005, "a child within this of a sibling's reward is not added")
    demos_per_step: int = knob(2, "failed cases added as demos by one edit")


@dataclass(eq=False)
class Node:
    cand: Candidate
    depth: int
    parent: Node | None = None
    children: list[Node] = field(default_factory=list)
    visits: int = 0
    total: float = 0.0
    attempts: int = 0
    reward: float = 0.0
    batch: list[Case] | None = None

    def uct(self, c: float) -> float:
        parent_visits = self.parent.visits if self.parent else self.visits
        return self.total / self.visits + c * math.sqrt(math.log(max(parent_visits, 1)) / self.visits)


class Mcts(SearchStrategy):
    name: ClassVar[str] = "mcts"
    Knobs: ClassVar[type] = MctsKnobs

    async def _settle(self, problem: Problem, search: Search) -> None:
        if self.knobs.val_batch:  # rewards were minibatch estimates: score the most promising fully
            await search.evaluate(search.top(3), "val")

    async def _search(self, problem: Problem, search: Search, rng: random.Random) -> str:
        from promptlab.optimizers.search import Plateau, minibatch

        k = self.knobs
        root = Node(search.start, 0)  # the better of the base and naive k-shot
        root.reward = await self._reward(search, root.cand, rng)
        root.visits, root.total = 1, root.reward
        plateau = Plateau(k.patience, k.min_gain)
        plateau.update(root.reward)
        for _ in range(k.simulations):
            search.next_iteration()
            node = root
            while node.children and (node.attempts >= k.expand_width or node.depth >= k.max_depth):
                node = max(node.children, key=lambda n: (n.uct(k.exploration), -n.cand.id))
            if node.depth >= k.max_depth or node.attempts >= k.expand_width:
                self._backup(node, node.reward)
                plateau.update(None)
            else:
                node.attempts += 1
                if node.batch is None:
                    node.batch = minibatch(problem.train, k.train_batch, rng)
                await search.evaluate([node.cand], "train", node.batch)
                child = await self._expand(search, node, rng)
                if child is None:
                    self._backup(node, node.reward)
                else:
                    reward = await self._reward(search, child, rng)
                    near = any(abs(reward - s.reward) <= k.dedup_eps for s in node.children)
                    leaf = node
                    if not near:
                        leaf = Node(child, node.depth + 1, parent=node, reward=reward)
                        node.children.append(leaf)
                    else:
                        search.note("dedup", ref=child.prompt.ref, reward=reward)
                    self._backup(leaf, reward)
                best = max(self._scores(search, problem))
                plateau.update(best)
                if best >= 1.0:
                    return "done: perfect val score"
            if plateau.stopped:
                return f"plateau: {k.patience} simulations without a gain"
            if self._exhausted(root):
                return "done: the tree has nothing left to expand"
        return f"done: {k.simulations} simulations"

    @staticmethod
    def _scores(search: Search, problem: Problem) -> list[float]:
        return [v for c in search.candidates.values()
                if (v := c.mean(problem.val) if c.mean(problem.val) is not None
                    else c.estimate(problem.val)) is not None] or [0.0]

    async def _reward(self, search: Search, cand: Candidate, rng: random.Random) -> float:
        from promptlab.optimizers.search import minibatch

        problem = search.problem
        batch = minibatch(problem.val, self.knobs.val_batch, rng)
        await search.evaluate([cand], "val", batch)
        return cand.estimate(batch) or 0.0

    def _backup(self, node: Node | None, reward: float) -> None:
        while node is not None:
            node.visits += 1
            node.total += reward
            node = node.parent

    def _exhausted(self, root: Node) -> bool:
        stack = [root]
        while stack:
            node = stack.pop()
            if node.depth < self.knobs.max_depth and node.attempts < self.knobs.expand_width:
                return False
            stack.extend(node.children)
        return True

    async def _expand(self, search: Search, node: Node, rng: random.Random) -> Candidate | None:
        """One error-driven edit of the node's prompt; the first that gives a new candidate."""
        from promptlab.optimizers import edits
        from promptlab.optimizers import operators as ops
        from promptlab.optimizers.search import demo_pool

        k = self.knobs
        problem = search.problem
        failures = node.cand.failures(node.batch or [])
        failed = [ops.demo_from_case(c, problem.signature) for c, _ in failures]
        pool = demo_pool(search)
        # the first expansion of a node adds failed cases as demos, the second asks the proposer,
        # the third gives every input its own nearest demos; the rest (and the fallbacks) are
        # model-free edits in a seeded order
        order = {1: ["add_demos", "rewrite"], 2: ["rewrite", "add_demos"], 3: ["knn"]}.get(node.attempts, [])
        rest = [op for op in ("format", "verbalizer", "knn", "swap_demo", "grips", "remove_demo", "shuffle_demos", "add_demos",
                                "structured")
                if op not in order]
        rng.shuffle(rest)
        for op in order + rest:
            if op == "rewrite":
                if not failures:
                    continue
                written = await edits.rewrite(search, node.cand, failures, rng)
                if written is None:
                    continue
                content, note = written
            else:
                content = edits.model_free(op, node.cand.content, search, rng, pool=pool, failed=failed,
                                           n=k.demos_per_step)
                note = f"{len(failures)} failures on the train batch" if op == "add_demos" else ""
            if content is None or search.known(content) is not None:
                continue
            child = search.candidate(content, node.cand, op, note)
            if child is not None:
                return child
        return None
