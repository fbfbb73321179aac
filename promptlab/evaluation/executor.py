"""The one interface of the two ways a run's items get answered: `PerCall` (evaluation/per_call.py,
one request per item through the gateway) and `Batch` (evaluation/batch.py, the provider's Batch
API). `evaluation/evaluate.py` gives each plan to one of them; both read plans and jobs from
evaluation/plan.py, hand items to the runner's scoring, and commit through the store."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from promptlab.evaluation.plan import RunPlan
    from promptlab.evaluation.runner import Outcome
    from promptlab.progress import Progress
    from promptlab.providers.gateway import Gateway
    from promptlab.store import Store


class Executor(Protocol):
    async def execute(self, store: Store, gateway: Gateway, plans: list[RunPlan],
                      progress: Progress) -> Outcome:
        """Answer, score and store what the runs still lack (the gateway is closed at the end)."""
        ...
